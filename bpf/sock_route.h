/* The connect hooks' routing step: LPM lookup of the destination in
 * the rules in force (ktp_routes_0/1), then first-match over the entry's rules. Shared with the test
 * program that runs it through BPF_PROG_RUN. Needs sock_maps.h. */
#ifndef KTPROXY_SOCK_ROUTE_H
#define KTPROXY_SOCK_ROUTE_H

#include "ktproxy_shared.h"
#include "sock_logic.h"

/* Which generation of the rules is in force (0: ktp_routes_0, 1:
 * ktp_routes_1), and each generation's action when no rule matches. Written
 * at run time (reload) through the skeleton's mmapped .data, hence not
 * const: user space fills the other generation, then flips ktp_route_gen
 * with one aligned store (proxy/kernel/bpf_maps.h, publish_routes). */
__u32 ktp_route_gen SEC(".data") = 0;
__u32 ktp_default_actions[2] = {KTP_ACT_PROXY, KTP_ACT_PROXY};

/* The action the rules in force give a destination (v4-mapped, port in
 * network order), and the deciding rule's index in *rule. Counts nothing. */
static __always_inline __u32 ktp_route_action(const __u32 dst[4], __u32 port_net, __u16 *rule)
{
	struct ktp_lpm_key key = {.prefixlen = 128};
	struct ktp_route_set *set;
	__u32 gen;

	key.addr[0] = dst[0];
	key.addr[1] = dst[1];
	key.addr[2] = dst[2];
	key.addr[3] = dst[3];
	/* Read once: the lookup and the default must come from one generation. */
	gen = *(volatile __u32 *)&ktp_route_gen & 1;
	if (gen)
		set = bpf_map_lookup_elem(&ktp_routes_1, &key);
	else
		set = bpf_map_lookup_elem(&ktp_routes_0, &key);
	return ktp_route_match(set, bpf_ntohs((__u16)port_net), ktp_default_actions[gen], rule);
}

/* Route a destination (v4-mapped, port in network order) through the rules.
 * Returns 1 to let the connect proceed untouched, 0 to fail it with EPERM,
 * -1 to redirect it to the proxy. */
static __always_inline int ktp_route(const __u32 dst[4], __u32 port_net)
{
	__u16 rule;
	__u32 action = ktp_route_action(dst, port_net, &rule);

	if (action == KTP_ACT_DIRECT) {
		ktp_count(KTP_CTR_BYPASSED);
		return 1;
	}
	if (action == KTP_ACT_BLOCK) {
		ktp_count(KTP_CTR_BLOCKED);
		return 0;
	}
	return -1;
}

#endif
