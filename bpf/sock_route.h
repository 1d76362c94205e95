/* The connect hooks' routing step: LPM lookup of the destination in
 * ktp_routes, then first-match over the entry's rules. Shared with the test
 * program that runs it through BPF_PROG_RUN. Needs sock_maps.h. */
#ifndef KTPROXY_SOCK_ROUTE_H
#define KTPROXY_SOCK_ROUTE_H

#include "ktproxy_shared.h"
#include "sock_logic.h"

/* Action when no rule matches. Writable at run time (reload) through the
 * skeleton's mmapped .data, hence not const. */
__u32 ktp_default_action = KTP_ACT_PROXY;

/* Route a destination (v4-mapped, port in network order) through the rules.
 * Returns 1 to let the connect proceed untouched, 0 to fail it with EPERM,
 * -1 to redirect it to the proxy. */
static __always_inline int ktp_route(const __u32 dst[4], __u32 port_net)
{
	struct ktp_lpm_key key = {.prefixlen = 128};
	struct ktp_route_set *set;
	__u32 action;

	key.addr[0] = dst[0];
	key.addr[1] = dst[1];
	key.addr[2] = dst[2];
	key.addr[3] = dst[3];
	set = bpf_map_lookup_elem(&ktp_routes, &key);
	action = ktp_route_decide(set, bpf_ntohs((__u16)port_net), ktp_default_action);
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
