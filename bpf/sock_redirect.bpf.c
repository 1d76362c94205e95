// SPDX-License-Identifier: GPL-2.0
/* Socket hooks of ktproxy: connect4/6 redirect an app's TCP connect to the
 * proxy, sockops ties the established 4-tuple to the socket cookie and cleans
 * up on close, getsockopt answers SO_ORIGINAL_DST for the proxy's sockets.
 * Entry points stay thin; decisions live in sock_logic.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ktproxy_shared.h"
#include "sock_logic.h"
#include "sock_maps.h"
#include "sock_route.h"
#include "sock_deadcache.h"

#define SOL_IP 0
#define SOL_IPV6 41
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

/* Set by the loader through skel->rodata before load. */
const volatile __u32 ktp_proxy_ip4 = 0;        /* network order */
const volatile __u32 ktp_proxy_ip6[4] = {};    /* network order */
const volatile __u16 ktp_proxy_port = 0;       /* network order */
const volatile __u8 ktp_have_ip6 = 0;          /* an IPv6 listener exists */
const volatile __u32 ktp_mark = 0;             /* SO_MARK of the proxy's own sockets */
const volatile __u64 ktp_netns_cookie = 0;     /* the proxy's network namespace */

static __always_inline int ktp_should_skip(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP || !sk)
		return 1;
	if (ktp_mark && sk->mark == ktp_mark) {
		ktp_count(KTP_CTR_SKIPPED_MARK);
		return 1;
	}
	if (bpf_get_netns_cookie(ctx) != ktp_netns_cookie) {
		ktp_count(KTP_CTR_SKIPPED_NETNS);
		return 1;
	}
	return 0;
}

/* Returns 0 when the destination could be stored; on failure the connect
 * proceeds untouched (fail-open) rather than reach a proxy that cannot answer. */
static __always_inline int ktp_remember(void *ctx, const __u32 addr[4], __u32 port)
{
	struct ktp_orig_dst od = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	od.addr[0] = addr[0];
	od.addr[1] = addr[1];
	od.addr[2] = addr[2];
	od.addr[3] = addr[3];
	od.port = (__u16)port;
	od.family = ktp_wire_family(addr);
	if (bpf_map_update_elem(&ktp_orig_dst, &cookie, &od, BPF_ANY)) {
		ktp_count(KTP_CTR_MAP_FULL);
		return -1;
	}
	return 0;
}

SEC("cgroup/connect4")
int ktp_connect4(struct bpf_sock_addr *ctx)
{
	__u32 dst[4];
	int verdict;

	if (ktp_should_skip(ctx))
		return 1;
	if (ktp_is_local4(ctx->user_ip4)) {
		ktp_count(KTP_CTR_SKIPPED_LOCAL);
		return 1;
	}
	ktp_map_v4(dst, ctx->user_ip4);
	verdict = ktp_route(dst, ctx->user_port);
	if (verdict >= 0)
		return verdict;
	if (ktp_dead_dst_refuse(dst, ctx->user_port))
		return 0;
	if (ktp_remember(ctx, dst, ctx->user_port))
		return 1;
	ctx->user_ip4 = ktp_proxy_ip4;
	ctx->user_port = ktp_proxy_port;
	ktp_count(KTP_CTR_REDIRECTED);
	return 1;
}

SEC("cgroup/connect6")
int ktp_connect6(struct bpf_sock_addr *ctx)
{
	__u32 dst[4];
	int mapped, verdict;

	if (ktp_should_skip(ctx))
		return 1;
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	mapped = ktp_is_v4mapped(dst);
	if ((mapped && ktp_is_local4(dst[3])) || (!mapped && ktp_is_local6(dst))) {
		ktp_count(KTP_CTR_SKIPPED_LOCAL);
		return 1;
	}
	verdict = ktp_route(dst, ctx->user_port);
	if (verdict >= 0)
		return verdict;
	if (!mapped && !ktp_have_ip6)
		return 1;
	if (ktp_dead_dst_refuse(dst, ctx->user_port))
		return 0;
	if (ktp_remember(ctx, dst, ctx->user_port))
		return 1;
	if (mapped) {
		/* An AF_INET6 socket speaking IPv4 must be sent to the IPv4 listener. */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = ktp_proxy_ip4;
	} else {
		ctx->user_ip6[0] = ktp_proxy_ip6[0];
		ctx->user_ip6[1] = ktp_proxy_ip6[1];
		ctx->user_ip6[2] = ktp_proxy_ip6[2];
		ctx->user_ip6[3] = ktp_proxy_ip6[3];
	}
	ctx->user_port = ktp_proxy_port;
	ktp_count(KTP_CTR_REDIRECTED);
	return 1;
}

/* getpeername() on a redirected socket reports the destination the app asked
 * for, not ktproxy's listener: some apps check whom they are talking to. */
SEC("cgroup/getpeername4")
int ktp_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct ktp_orig_dst *od = bpf_map_lookup_elem(&ktp_orig_dst, &cookie);

	if (!od || od->family != KTP_AF_INET)
		return 1;
	ctx->user_ip4 = od->addr[3];
	ctx->user_port = od->port;
	return 1;
}

SEC("cgroup/getpeername6")
int ktp_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct ktp_orig_dst *od = bpf_map_lookup_elem(&ktp_orig_dst, &cookie);

	if (!od)
		return 1;
	/* An AF_INET6 socket talking IPv4 gets the v4-mapped form back, which is
	 * what od->addr already holds. */
	ctx->user_ip6[0] = od->addr[0];
	ctx->user_ip6[1] = od->addr[1];
	ctx->user_ip6[2] = od->addr[2];
	ctx->user_ip6[3] = od->addr[3];
	ctx->user_port = od->port;
	return 1;
}

/* The app's socket: local = src, remote = dst (the proxy listener). */
static __always_inline void ktp_tuple_from_sockops(struct bpf_sock_ops *skops,
						   struct ktp_tuple *t)
{
	if (skops->family == KTP_AF_INET) {
		ktp_map_v4(t->src_addr, skops->local_ip4);
		ktp_map_v4(t->dst_addr, skops->remote_ip4);
	} else {
		t->src_addr[0] = skops->local_ip6[0];
		t->src_addr[1] = skops->local_ip6[1];
		t->src_addr[2] = skops->local_ip6[2];
		t->src_addr[3] = skops->local_ip6[3];
		t->dst_addr[0] = skops->remote_ip6[0];
		t->dst_addr[1] = skops->remote_ip6[1];
		t->dst_addr[2] = skops->remote_ip6[2];
		t->dst_addr[3] = skops->remote_ip6[3];
	}
	/* local_port is host order; remote_port is the network-order port in
	 * the upper half of a network-order word. */
	t->src_port = bpf_htons((__u16)skops->local_port);
	t->dst_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
	t->family = ktp_wire_family(t->dst_addr);
}

SEC("sockops")
int ktp_sockops(struct bpf_sock_ops *skops)
{
	struct ktp_tuple t = {};
	__u64 cookie;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		cookie = bpf_get_socket_cookie(skops);
		/* Watch state from the SYN on, so that a connect that never
		 * establishes still deletes its cookie entry. */
		if (bpf_map_lookup_elem(&ktp_orig_dst, &cookie))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		if (!bpf_map_lookup_elem(&ktp_orig_dst, &cookie))
			break;
		ktp_tuple_from_sockops(skops, &t);
		bpf_map_update_elem(&ktp_tuples, &t, &cookie, BPF_ANY);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* The callback runs before tcp_set_state() releases the port, so
		 * the tuple read here is the one recorded at establishment. */
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&ktp_orig_dst, &cookie);
		if (skops->args[0] == BPF_TCP_SYN_SENT)
			break;
		ktp_tuple_from_sockops(skops, &t);
		bpf_map_delete_elem(&ktp_tuples, &t);
		break;
	}
	return 1;
}

/* Fields of the proxy's accepted socket, each read exactly once: the verifier
 * refuses pointer arithmetic on a sock pointer, so the compiler must not get a
 * chance to keep "sk + offset" in a register across loads. */
struct ktp_sk_view {
	__u32 family;
	__u32 local_port;   /* host order */
	__u16 remote_port;  /* network order */
	__u32 local[4];     /* v4-mapped for IPv4 */
	__u32 remote[4];
};

#define KTP_LOAD(dst, src)                                   \
	do {                                                 \
		dst = src;                                   \
		asm volatile("" : "+r"(dst) :: "memory");    \
	} while (0)

static __always_inline void ktp_read_sk(struct bpf_sock *sk, struct ktp_sk_view *v)
{
	__u32 a;

	KTP_LOAD(v->family, sk->family);
	KTP_LOAD(v->local_port, sk->src_port);
	KTP_LOAD(v->remote_port, sk->dst_port);
	if (v->family == KTP_AF_INET) {
		KTP_LOAD(a, sk->src_ip4);
		ktp_map_v4(v->local, a);
		KTP_LOAD(a, sk->dst_ip4);
		ktp_map_v4(v->remote, a);
		return;
	}
	KTP_LOAD(v->local[0], sk->src_ip6[0]);
	KTP_LOAD(v->local[1], sk->src_ip6[1]);
	KTP_LOAD(v->local[2], sk->src_ip6[2]);
	KTP_LOAD(v->local[3], sk->src_ip6[3]);
	KTP_LOAD(v->remote[0], sk->dst_ip6[0]);
	KTP_LOAD(v->remote[1], sk->dst_ip6[1]);
	KTP_LOAD(v->remote[2], sk->dst_ip6[2]);
	KTP_LOAD(v->remote[3], sk->dst_ip6[3]);
}

/* Is this the proxy's accepted socket? Its local end is the listener. */
static __always_inline int ktp_is_proxy_socket(const struct ktp_sk_view *v)
{
	if (v->local_port != bpf_ntohs(ktp_proxy_port))
		return 0;
	if (v->family == KTP_AF_INET)
		return v->local[3] == ktp_proxy_ip4;
	if (v->family != KTP_AF_INET6 || !ktp_have_ip6)
		return 0;
	return v->local[0] == ktp_proxy_ip6[0] && v->local[1] == ktp_proxy_ip6[1] &&
	       v->local[2] == ktp_proxy_ip6[2] && v->local[3] == ktp_proxy_ip6[3];
}

/* The proxy's accepted socket: local = the app's dst, remote = the app's src. */
static __always_inline void ktp_tuple_from_accepted(const struct ktp_sk_view *v, struct ktp_tuple *t)
{
	__builtin_memcpy(t->src_addr, v->remote, sizeof(t->src_addr));
	__builtin_memcpy(t->dst_addr, v->local, sizeof(t->dst_addr));
	t->src_port = v->remote_port;
	t->dst_port = bpf_htons((__u16)v->local_port);
	t->family = ktp_wire_family(t->dst_addr);
}

SEC("cgroup/getsockopt")
int ktp_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct ktp_orig_dst *od;
	struct ktp_tuple t = {};
	struct ktp_sk_view v = {};
	__u64 *cookie;
	void *optval = ctx->optval;
	void *optval_end = ctx->optval_end;

	if (ctx->optname != KTP_SO_ORIGINAL_DST || (ctx->level != SOL_IP && ctx->level != SOL_IPV6))
		return 1;
	if (!sk)
		return 1;
	ktp_read_sk(sk, &v);
	if (!ktp_is_proxy_socket(&v))
		return 1;
	if (bpf_get_netns_cookie(ctx) != ktp_netns_cookie)
		return 1;
	ktp_tuple_from_accepted(&v, &t);
	cookie = bpf_map_lookup_elem(&ktp_tuples, &t);
	od = cookie ? bpf_map_lookup_elem(&ktp_orig_dst, cookie) : 0;
	if (!od) {
		ktp_count(KTP_CTR_ORIG_DST_MISSED);
		return 1;
	}
	if (ctx->level == SOL_IP) {
		struct sockaddr_in *sin = optval;

		if (od->family != KTP_AF_INET || (void *)(sin + 1) > optval_end)
			return 1;
		sin->sin_family = KTP_AF_INET;
		sin->sin_port = od->port;
		sin->sin_addr.s_addr = od->addr[3];
		__builtin_memset(sin->__pad, 0, sizeof(sin->__pad));
		ctx->optlen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = optval;

		if ((void *)(sin6 + 1) > optval_end)
			return 1;
		sin6->sin6_family = KTP_AF_INET6;
		sin6->sin6_port = od->port;
		sin6->sin6_flowinfo = 0;
		sin6->sin6_addr.in6_u.u6_addr32[0] = od->addr[0];
		sin6->sin6_addr.in6_u.u6_addr32[1] = od->addr[1];
		sin6->sin6_addr.in6_u.u6_addr32[2] = od->addr[2];
		sin6->sin6_addr.in6_u.u6_addr32[3] = od->addr[3];
		sin6->sin6_scope_id = 0;
		ctx->optlen = sizeof(*sin6);
	}
	ctx->retval = 0;
	ktp_count(KTP_CTR_ORIG_DST_ANSWERED);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
