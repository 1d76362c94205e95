/* Pure decisions of the socket hooks: address classification and tuple
 * building. No map access here, so that these can be included by test
 * programs that BPF_PROG_RUN can execute. */
#ifndef KTPROXY_SOCK_LOGIC_H
#define KTPROXY_SOCK_LOGIC_H

#include "ktproxy_shared.h"

static __always_inline int ktp_is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline void ktp_map_v4(__u32 out[4], __u32 ip4)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0xffff);
	out[3] = ip4;
}

/* 127/8 and 0.0.0.0 (which Linux connects to locally). */
static __always_inline int ktp_is_local4(__u32 ip4)
{
	__u32 h = bpf_ntohl(ip4);
	return (h >> 24) == 127 || h == 0;
}

/* ::1 and :: */
static __always_inline int ktp_is_local6(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 &&
	       (a[3] == 0 || a[3] == bpf_htonl(1));
}

/* fe80::/10. A link-local destination only means something with the
 * socket's scope (interface), which a rewrite to ktproxy's listener loses:
 * ktproxy would get fe80::x without knowing which link. */
static __always_inline int ktp_is_linklocal6(const __u32 a[4])
{
	return (bpf_ntohl(a[0]) & 0xffc00000) == 0xfe800000;
}

/* A loopback address proper (127/8, ::1, v4-mapped 127/8), not unspecified. */
static __always_inline int ktp_is_loopback(const __u32 a[4])
{
	if (ktp_is_v4mapped(a))
		return (bpf_ntohl(a[3]) >> 24) == 127;
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

/* Destinations connect6 leaves alone before any rule: loopback, unspecified
 * (both local), and link-local (a scope a rewrite cannot carry). v4-mapped
 * addresses get the IPv4 test. */
static __always_inline int ktp_skip_dst6(const __u32 a[4])
{
	if (ktp_is_v4mapped(a))
		return ktp_is_local4(a[3]);
	return ktp_is_local6(a) || ktp_is_linklocal6(a);
}

/* Wire family of a 16-byte address: v4-mapped counts as IPv4, so that an
 * AF_INET6 app socket talking to ::ffff:a.b.c.d and the proxy's AF_INET
 * accepted socket produce the same key. */
static __always_inline __u16 ktp_wire_family(const __u32 a[4])
{
	return ktp_is_v4mapped(a) ? KTP_AF_INET : KTP_AF_INET6;
}

/* First entry of a route set that matches the port decides; a domain entry
 * that matches sends the connection to the proxy to finish the decision.
 * Returns an enum ktp_action; *rule is the deciding rule's index, or
 * KTP_RULE_DEFAULT when none matched. */
static __always_inline __u32 ktp_route_match(const struct ktp_route_set *set, __u16 port,
					     __u32 default_action, __u16 *rule)
{
	*rule = KTP_RULE_DEFAULT;
	if (!set)
		return default_action;
	for (__u32 i = 0; i < KTP_ROUTE_MAX; i++) {
		const struct ktp_route_entry *e;

		if (i >= set->count)
			break;
		e = &set->entries[i];
		if (port < e->port_lo || port > e->port_hi)
			continue;
		*rule = e->rule;
		if (e->flags & KTP_ROUTE_F_DOMAIN)
			return KTP_ACT_PROXY;
		return e->action;
	}
	return default_action;
}

static __always_inline __u32 ktp_route_decide(const struct ktp_route_set *set, __u16 port,
					      __u32 default_action)
{
	__u16 rule;

	return ktp_route_match(set, port, default_action, &rule);
}

#endif
