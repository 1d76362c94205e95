// SPDX-License-Identifier: GPL-2.0
/* Gateway mode: TC ingress on the interfaces that forwarded traffic arrives
 * on. TCP to be proxied is handed to ktproxy's sockets with bpf_sk_assign and
 * marked so that the policy route ktproxy installs delivers it locally:
 *   - a packet of a flow ktproxy already owns goes to that socket;
 *   - a SYN goes to the transparent listener;
 * `direct` traffic is forwarded untouched, `block` is dropped. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ktproxy_shared.h"
/* Routes and counters only: the connection maps belong to the socket hooks,
 * and would be two 65536-entry maps created here for nothing. */
#define KTP_NO_CONN_MAPS
#include "sock_maps.h"
#include "gw_parse.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define KTP_BPF_F_CURRENT_NETNS (-1)

/* Set by the loader through skel->rodata. */
const volatile __u32 ktp_gw_listen4 = 0;      /* transparent IPv4 listener, network order */
const volatile __u32 ktp_gw_listen6[4] = {};  /* transparent IPv6 listener */
const volatile __u16 ktp_gw_port = 0;         /* their port, network order */
const volatile __u8 ktp_gw_have6 = 0;
const volatile __u32 ktp_gw_mark = 0;         /* fwmark that the policy route delivers locally */

/* The verifier wants a constant tuple size per call site. */
static __always_inline struct bpf_sock *ktp_gw_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u16 family)
{
	if (family == KTP_AF_INET)
		return bpf_skc_lookup_tcp(skb, t, sizeof(t->ipv4), KTP_BPF_F_CURRENT_NETNS, 0);
	return bpf_skc_lookup_tcp(skb, t, sizeof(t->ipv6), KTP_BPF_F_CURRENT_NETNS, 0);
}

static __always_inline int ktp_gw_assign(struct __sk_buff *skb, struct bpf_sock *sk)
{
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (err)
		return TC_ACT_OK;
	skb->mark = ktp_gw_mark;
	ktp_count(KTP_CTR_GW_ASSIGNED);
	return TC_ACT_OK;
}

/* Is the destination one of this host's addresses? Then it is not forwarded
 * traffic and stays out of our hands. */
static __always_inline int ktp_gw_is_local(struct __sk_buff *skb, const struct ktp_gw_pkt *p)
{
	struct bpf_fib_lookup fib = {};

	fib.family = p->family;
	fib.l4_protocol = KTP_IPPROTO_TCP;
	fib.ifindex = skb->ingress_ifindex;
	if (p->family == KTP_AF_INET) {
		fib.ipv4_src = p->tuple.ipv4.saddr;
		fib.ipv4_dst = p->tuple.ipv4.daddr;
		fib.sport = p->tuple.ipv4.sport;
		fib.dport = p->tuple.ipv4.dport;
	} else {
		__builtin_memcpy(fib.ipv6_src, p->tuple.ipv6.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, p->tuple.ipv6.daddr, 16);
		fib.sport = p->tuple.ipv6.sport;
		fib.dport = p->tuple.ipv6.dport;
	}
	return bpf_fib_lookup(skb, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_NOT_FWDED;
}

SEC("tc")
int ktp_gateway(struct __sk_buff *skb)
{
	struct ktp_gw_pkt p = {};
	struct bpf_sock_tuple lt = {};
	struct bpf_sock *sk;

	if (ktp_gw_parse(skb, &p))
		return TC_ACT_OK;

	/* A flow ktproxy already accepted (or is accepting): its socket. */
	sk = ktp_gw_lookup(skb, &p.tuple, p.family);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN)
			return ktp_gw_assign(skb, sk);
		/* A wildcard listener of the host matching the port says nothing
		 * about a forwarded flow. */
		bpf_sk_release(sk);
	}
	if (!p.syn || ktp_gw_is_local(skb, &p))
		return TC_ACT_OK;

	switch (ktp_gw_classify(&p)) {
	case KTP_GW_DIRECT:
		return TC_ACT_OK;
	case KTP_GW_BLOCK:
		return TC_ACT_SHOT;
	default:
		break;
	}

	/* New connection to proxy: find the transparent listener. */
	if (p.family == KTP_AF_INET) {
		lt.ipv4.saddr = p.tuple.ipv4.saddr;
		lt.ipv4.sport = p.tuple.ipv4.sport;
		lt.ipv4.daddr = ktp_gw_listen4;
		lt.ipv4.dport = ktp_gw_port;
	} else {
		if (!ktp_gw_have6)
			return TC_ACT_OK;
		__builtin_memcpy(lt.ipv6.saddr, p.tuple.ipv6.saddr, 16);
		lt.ipv6.sport = p.tuple.ipv6.sport;
		lt.ipv6.daddr[0] = ktp_gw_listen6[0];
		lt.ipv6.daddr[1] = ktp_gw_listen6[1];
		lt.ipv6.daddr[2] = ktp_gw_listen6[2];
		lt.ipv6.daddr[3] = ktp_gw_listen6[3];
		lt.ipv6.dport = ktp_gw_port;
	}
	sk = ktp_gw_lookup(skb, &lt, p.family);
	if (!sk) {
		/* ktproxy is gone but its filter was left: forward untouched. */
		ktp_count(KTP_CTR_GW_NO_LISTENER);
		return TC_ACT_OK;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return TC_ACT_OK;
	}
	return ktp_gw_assign(skb, sk);
}

char LICENSE[] SEC("license") = "GPL";
