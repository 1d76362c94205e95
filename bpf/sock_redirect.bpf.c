// SPDX-License-Identifier: GPL-2.0
/* Socket hooks of ktproxy: connect4/6 redirect an app's TCP connect to the
 * proxy and keep its destination on the app's socket, sockops hands it over
 * to ktproxy's accepted socket through the connection's 4-tuple, getsockopt
 * answers SO_ORIGINAL_DST from there.
 * Entry points stay thin; decisions live in sock_logic.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ktproxy_shared.h"
#include "sock_logic.h"
#include "sock_maps.h"
#include "sock_route.h"
#include "sock_deadcache.h"
#include "sock_events.h"

#define SOL_IP 0
#define SOL_IPV6 41
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define KTP_ECONNREFUSED 111
#define KTP_EPERM 1
#define KTP_CURRENT_NETNS ((__u64)-1)  /* BPF_F_CURRENT_NETNS */

/* A context or socket field, read exactly once: the verifier refuses
 * pointer arithmetic on ctx and sock pointers, so the compiler must not get
 * a chance to keep "ptr + offset" in a register across loads. */
#define KTP_LOAD(dst, src)                                   \
	do {                                                 \
		dst = src;                                   \
		asm volatile("" : "+r"(dst) :: "memory");    \
	} while (0)

/* Set by the loader through skel->rodata before load. */
const volatile __u32 ktp_proxy_ip4 = 0;        /* network order */
const volatile __u32 ktp_proxy_ip6[4] = {};    /* network order */
const volatile __u16 ktp_proxy_port = 0;       /* network order */
const volatile __u8 ktp_have_ip6 = 0;          /* an IPv6 listener exists */
const volatile __u32 ktp_mark = 0;             /* SO_MARK of the proxy's sockets and listeners */
const volatile __u64 ktp_netns_cookie = 0;     /* the proxy's network namespace */
const volatile __u64 ktp_own_cgroup = 0;       /* ktproxy's own cgroup (id): where its marked sockets come from */
const volatile __u8 ktp_bound_refuse = 0;      /* --fail-closed: refuse a device-bound socket's proxied connect */
const volatile __u32 ktp_relay_tgid = 0;       /* the dropped relay's pid (0: it keeps root, or a pid namespace hides it) */

#include "sock_netns.h"
#include "sock_cgmatch.h"

/* May this socket be intercepted at all, TCP or UDP? 1 = leave it: no
 * socket, one of ktproxy's own (--mark: its upstream connections and relay
 * sockets, so nothing loops), or a process of a cgroup --cgroup-match
 * leaves out. The mark alone does not make a socket ktproxy's: any process
 * with CAP_NET_RAW in its network namespace may set it (a container's root
 * in Docker's default set), so it counts only from a thread of ktproxy's
 * own cgroup (relay, io-wq, DNS threads, the helper: none of them moves).
 * The hook runs in the thread that connects or sends, so "current" is it. */
static __always_inline int ktp_sock_exempt(struct bpf_sock *sk)
{
	__u32 mark;

	if (!sk)
		return 1;
	KTP_LOAD(mark, sk->mark);
	if (ktp_mark && mark == ktp_mark) {
		if (bpf_get_current_cgroup_id() == ktp_own_cgroup) {
			ktp_count(KTP_CTR_SKIPPED_MARK);
			return 1;
		}
		/* Someone else's socket wearing the mark: the rules decide. */
		ktp_count(KTP_CTR_FOREIGN_MARK);
	}
	return ktp_cgroup_unmatched();
}

/* A device-bound socket (SO_BINDTODEVICE, a VRF; since Linux 5.7 any user
 * may bind an unbound socket) cannot reach ktproxy on loopback: a connect
 * would hang or fail, a datagram go nowhere. Called once the rules said
 * proxy. Returns -1 (not bound: go on), 1 (let it out directly, counted
 * skipped_bound) or 0 with --fail-closed (refused with EPERM, as a block
 * rule or a local firewall would: passing it would leak exactly what the
 * user asked to keep behind the proxy). */
static __always_inline int ktp_sock_bound(struct bpf_sock *sk)
{
	__u32 dev;

	KTP_LOAD(dev, sk->bound_dev_if);
	if (!dev)
		return -1;
	if (ktp_bound_refuse) {
		ktp_count(KTP_CTR_REFUSED_BOUND);
		bpf_set_retval(-KTP_EPERM);
		return 0;
	}
	ktp_count(KTP_CTR_SKIPPED_BOUND);
	return 1;
}

static __always_inline int ktp_should_skip(struct bpf_sock_addr *ctx, struct bpf_sock *sk)
{
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return 1;
	return ktp_sock_exempt(sk);
}

/* Whatever a connect becomes, an earlier redirected connect of the same
 * socket (one that failed, say) must no longer speak for it in getpeername. */
static __always_inline void ktp_forget(struct bpf_sock *sk)
{
	if (sk)
		bpf_sk_storage_delete(&ktp_app_dst, sk);
}

/* Is the socket that would take a connect to ktproxy's listener address
 * ktproxy's own? Its listeners carry --mark, which only CAP_NET_ADMIN or
 * CAP_NET_RAW can set: after ktproxy died (--fail-closed keeps these hooks),
 * a local user who binds the port must not receive the cgroup's connections.
 * The lookup is the kernel's own listener lookup (most specific bind wins),
 * so it finds what the connect would reach, in the socket's namespace.
 * v6: the IPv6 listener. */
static __always_inline int ktp_listener_is_ours(struct bpf_sock_addr *ctx,
						const struct ktp_netns_listener *l, int v6)
{
	struct bpf_sock_tuple tup = {};
	struct bpf_sock *sk;
	__u32 state, mark;

	if (v6) {
		tup.ipv6.daddr[0] = l->ip6[0];
		tup.ipv6.daddr[1] = l->ip6[1];
		tup.ipv6.daddr[2] = l->ip6[2];
		tup.ipv6.daddr[3] = l->ip6[3];
		tup.ipv6.dport = l->port6;
		sk = bpf_sk_lookup_tcp(ctx, &tup, sizeof(tup.ipv6), KTP_CURRENT_NETNS, 0);
	} else {
		tup.ipv4.daddr = l->ip4;
		tup.ipv4.dport = l->port4;
		sk = bpf_sk_lookup_tcp(ctx, &tup, sizeof(tup.ipv4), KTP_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	KTP_LOAD(state, sk->state);
	KTP_LOAD(mark, sk->mark);
	bpf_sk_release(sk);
	return state == BPF_TCP_LISTEN && mark == ktp_mark;
}

/* The proxy verdict: remember the destination on the app's socket. Returns
 * -1 when the caller must rewrite the connect to ktproxy's listener, 1 to
 * let it go out untouched, 0 to fail it (refused: no listener of ktproxy's
 * is there). l: the listener of the socket's namespace, filled here. */
static __always_inline int ktp_redirect(struct bpf_sock_addr *ctx, struct bpf_sock *sk,
					const __u32 dst[4], __u32 port, int v6_listener,
					struct ktp_netns_listener *l)
{
	__u64 cookie;
	struct ktp_orig_dst *od;
	int bound;
	__u64 id;

	bound = ktp_sock_bound(sk);
	if (bound >= 0)
		return bound;
	if (ktp_cgroup_unscanned())
		return 0;
	/* 127.0.0.1 in a container is the container's own loopback: the
	 * connect goes to ktproxy's listener in that namespace. */
	cookie = bpf_get_netns_cookie(ctx);
	if (!ktp_listener_of(cookie, l))
		return ktp_netns_unknown(cookie);
	if (v6_listener && !(l->flags & KTP_NL_IP6))
		return 1;
	if (!ktp_listener_is_ours(ctx, l, v6_listener)) {
		/* What the app would see of a dead proxy: connection refused. */
		ktp_count(KTP_CTR_NO_LISTENER);
		bpf_set_retval(-KTP_ECONNREFUSED);
		return 0;
	}
	od = bpf_sk_storage_get(&ktp_app_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!od) {
		/* No memory for it: fail open rather than reach a proxy that
		 * could not answer for this connection. */
		ktp_count(KTP_CTR_MAP_FULL);
		return 1;
	}
	od->addr[0] = dst[0];
	od->addr[1] = dst[1];
	od->addr[2] = dst[2];
	od->addr[3] = dst[3];
	od->port = (__u16)port;
	od->family = ktp_wire_family(dst);
	/* Who connected, for ktproxy's log and status: the hook runs in the
	 * connecting thread, so "current" is that process. */
	id = bpf_get_current_pid_tgid();
	od->pid = (__u32)(id >> 32);
	od->tid = (__u32)id;
	od->uid = (__u32)bpf_get_current_uid_gid();
	if (bpf_get_current_comm(od->comm, sizeof(od->comm)))
		__builtin_memset(od->comm, 0, sizeof(od->comm));
	od->flags = 0;
	return -1;
}

static __always_inline int ktp_loopback_dns(void *ctx, const __u32 dst[4], __u32 port, int udp);

/* The IPv6 destination the app asked for, into dst; 1 = a destination
 * ktproxy leaves alone (loopback and the like, but DNS to a loopback
 * resolver: ktp_loopback_dns), counted. TCP and UDP (udp) alike. */
static __always_inline int ktp_dst6_left_alone(struct bpf_sock_addr *ctx, __u32 dst[4], int udp)
{
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	if (ktp_skip_dst6(dst) && (ktp_dry_run_on() || !ktp_loopback_dns(ctx, dst, ctx->user_port, udp))) {
		ktp_count(KTP_CTR_SKIPPED_LOCAL);
		return 1;
	}
	return 0;
}

#include "sock_udp.h"

SEC("cgroup/connect4")
int ktp_connect4(struct bpf_sock_addr *ctx)
{
	struct ktp_netns_listener l = {};
	struct bpf_sock *sk;
	__u32 dst[4];
	int verdict;

	KTP_LOAD(sk, ctx->sk);
	ktp_forget(sk);
	if (ctx->type == SOCK_DGRAM)
		return ktp_udp_connect4(ctx, sk);
	if (ktp_should_skip(ctx, sk))
		return 1;
	ktp_map_v4(dst, ctx->user_ip4);
	if (ktp_is_local4(ctx->user_ip4) && (ktp_dry_run_on() || !ktp_loopback_dns(ctx, dst, ctx->user_port, 0))) {
		ktp_count(KTP_CTR_SKIPPED_LOCAL);
		return 1;
	}
	if (ktp_dry_run_on())
		return ktp_dry_run(ctx, sk, dst, 1);
	verdict = ktp_route_dns(dst, ctx->user_port);
	if (verdict >= 0)
		return verdict;
	if (ktp_dead_dst_refuse(dst, ctx->user_port, bpf_get_netns_cookie(ctx)))
		return 0;
	verdict = ktp_redirect(ctx, sk, dst, ctx->user_port, 0, &l);
	if (verdict >= 0)
		return verdict;
	ctx->user_ip4 = l.ip4;
	ctx->user_port = l.port4;
	ktp_count(KTP_CTR_REDIRECTED);
	return 1;
}

SEC("cgroup/connect6")
int ktp_connect6(struct bpf_sock_addr *ctx)
{
	struct ktp_netns_listener l = {};
	struct bpf_sock *sk;
	__u32 dst[4];
	int mapped, verdict;

	KTP_LOAD(sk, ctx->sk);
	ktp_forget(sk);
	if (ctx->type == SOCK_DGRAM)
		return ktp_udp_connect6(ctx, sk);
	if (ktp_should_skip(ctx, sk) || ktp_dst6_left_alone(ctx, dst, 0))
		return 1;
	mapped = ktp_is_v4mapped(dst);
	if (ktp_dry_run_on())
		return ktp_dry_run(ctx, sk, dst, mapped || ktp_have_ip6);
	verdict = ktp_route_dns(dst, ctx->user_port);
	if (verdict >= 0)
		return verdict;
	if (!mapped && !ktp_have_ip6)
		return 1;
	if (ktp_dead_dst_refuse(dst, ctx->user_port, bpf_get_netns_cookie(ctx)))
		return 0;
	verdict = ktp_redirect(ctx, sk, dst, ctx->user_port, !mapped, &l);
	if (verdict >= 0)
		return verdict;
	if (mapped) {
		/* An AF_INET6 socket speaking IPv4 must be sent to the IPv4 listener. */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = l.ip4;
		ctx->user_port = l.port4;
	} else {
		ctx->user_ip6[0] = l.ip6[0];
		ctx->user_ip6[1] = l.ip6[1];
		ctx->user_ip6[2] = l.ip6[2];
		ctx->user_ip6[3] = l.ip6[3];
		ctx->user_port = l.port6;
	}
	ktp_count(KTP_CTR_REDIRECTED);
	return 1;
}

/* The destination a redirected app socket asked for, or 0. */
static __always_inline struct ktp_orig_dst *ktp_app_dst_of(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk;

	KTP_LOAD(sk, ctx->sk);
	if (!sk)
		return 0;
	return bpf_sk_storage_get(&ktp_app_dst, sk, 0, 0);
}

/* getpeername() on a redirected socket reports the destination the app asked
 * for, not ktproxy's listener: some apps check whom they are talking to. */
SEC("cgroup/getpeername4")
int ktp_getpeername4(struct bpf_sock_addr *ctx)
{
	struct ktp_orig_dst *od = ktp_app_dst_of(ctx);

	if (!od || od->family != KTP_AF_INET)
		return 1;
	ctx->user_ip4 = od->addr[3];
	ctx->user_port = od->port;
	return 1;
}

SEC("cgroup/getpeername6")
int ktp_getpeername6(struct bpf_sock_addr *ctx)
{
	struct ktp_orig_dst *od = ktp_app_dst_of(ctx);

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

/* The connection's tuple from a sockops socket. The app's socket (mirror 0):
 * local = src, remote = dst (the proxy listener). ktproxy's accepted socket
 * (mirror 1): local = the listener = dst, remote = the app = src. */
static __always_inline void ktp_tuple_from_sockops(struct bpf_sock_ops *skops,
						   struct ktp_tuple *t, int mirror)
{
	__u32 local[4], remote[4], family, a, lp, rp;
	__u16 lport, rport;

	KTP_LOAD(family, skops->family);
	if (family == KTP_AF_INET) {
		KTP_LOAD(a, skops->local_ip4);
		ktp_map_v4(local, a);
		KTP_LOAD(a, skops->remote_ip4);
		ktp_map_v4(remote, a);
	} else {
		KTP_LOAD(local[0], skops->local_ip6[0]);
		KTP_LOAD(local[1], skops->local_ip6[1]);
		KTP_LOAD(local[2], skops->local_ip6[2]);
		KTP_LOAD(local[3], skops->local_ip6[3]);
		KTP_LOAD(remote[0], skops->remote_ip6[0]);
		KTP_LOAD(remote[1], skops->remote_ip6[1]);
		KTP_LOAD(remote[2], skops->remote_ip6[2]);
		KTP_LOAD(remote[3], skops->remote_ip6[3]);
	}
	/* local_port is host order; remote_port is the network-order port in
	 * the upper half of a network-order word. */
	KTP_LOAD(lp, skops->local_port);
	KTP_LOAD(rp, skops->remote_port);
	lport = bpf_htons((__u16)lp);
	rport = bpf_htons((__u16)bpf_ntohl(rp));
	if (mirror) {
		__builtin_memcpy(t->src_addr, remote, sizeof(t->src_addr));
		__builtin_memcpy(t->dst_addr, local, sizeof(t->dst_addr));
		t->src_port = rport;
		t->dst_port = lport;
	} else {
		__builtin_memcpy(t->src_addr, local, sizeof(t->src_addr));
		__builtin_memcpy(t->dst_addr, remote, sizeof(t->dst_addr));
		t->src_port = lport;
		t->dst_port = rport;
	}
	t->family = ktp_wire_family(t->dst_addr);
}

/* Is this address and port the listener l (addr v4-mapped for IPv4)? */
static __always_inline int ktp_is_listener_addr(const struct ktp_netns_listener *l,
						const __u32 a[4], __u16 port_net)
{
	if (ktp_is_v4mapped(a))
		return port_net == l->port4 && a[3] == l->ip4;
	return (l->flags & KTP_NL_IP6) && port_net == l->port6 && a[0] == l->ip6[0] &&
	       a[1] == l->ip6[1] && a[2] == l->ip6[2] && a[3] == l->ip6[3];
}

/* Moves a connection's hand-off entry into the storage of ktproxy's side of
 * it, so that the destination lives as long as ktproxy's socket and no
 * longer depends on the app's. Returns the stored destination, or the
 * hand-off entry itself when the storage cannot be made (it then stays in
 * the hand-off map until the app's socket closes), or 0. */
static __always_inline struct ktp_orig_dst *ktp_adopt(struct bpf_sock *sk, const struct ktp_tuple *t)
{
	struct ktp_orig_dst *from, *to;

	from = bpf_map_lookup_elem(&ktp_handoff, t);
	if (!from)
		return 0;
	to = bpf_sk_storage_get(&ktp_conn_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!to)
		return from;
	*to = *from;
	bpf_map_delete_elem(&ktp_handoff, t);
	return to;
}

SEC("sockops")
int ktp_sockops(struct bpf_sock_ops *skops)
{
	struct ktp_netns_listener l = {};
	struct ktp_tuple t = {};
	struct ktp_orig_dst *od;
	struct bpf_sock *sk;
	__u32 mark;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		/* The app's socket, in the app cgroup. */
		sk = skops->sk;
		if (!sk)
			break;
		od = bpf_sk_storage_get(&ktp_app_dst, sk, 0, 0);
		if (!od)
			break;
		ktp_tuple_from_sockops(skops, &t, 0);
		/* BPF_ANY: this program may run twice for one socket, once per
		 * cgroup it is attached to (ktproxy's own cgroup above the app's). */
		if (bpf_map_update_elem(&ktp_handoff, &t, od, BPF_ANY)) {
			/* One count per connection, however many times this runs. */
			if (!(od->flags & KTP_OD_FULL_COUNTED)) {
				od->flags |= KTP_OD_FULL_COUNTED;
				ktp_count(KTP_CTR_MAP_FULL);
			}
			break;
		}
		/* Its close deletes an entry nobody took (ktproxy gone). */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* ktproxy's accepted socket, in ktproxy's cgroup (a child socket
		 * inherits its listener's). It gets here when the app's ACK
		 * arrives, before any data or FIN of the app's, so before the
		 * app's socket can reach TCP_CLOSE after a graceful close. */
		sk = skops->sk;
		if (!sk)
			break;
		ktp_tuple_from_sockops(skops, &t, 1);
		/* In the root cgroup this program sees every host's socket:
		 * the same address and port in another netns is not ours, unless
		 * it is ktproxy's listener of that namespace. */
		if (!ktp_listener_of(bpf_get_netns_cookie(skops), &l))
			break;
		if (!ktp_is_listener_addr(&l, t.dst_addr, t.dst_port))
			break;
		KTP_LOAD(mark, sk->mark);
		if (mark != ktp_mark)
			break;
		ktp_adopt(sk, &t);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* The callback runs before tcp_set_state() releases the port, so
		 * the tuple read here is the one recorded at establishment. */
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		ktp_tuple_from_sockops(skops, &t, 0);
		bpf_map_delete_elem(&ktp_handoff, &t);
		break;
	}
	return 1;
}

/* Fields of the proxy's accepted socket, each read exactly once: the verifier
 * refuses pointer arithmetic on a sock pointer, so the compiler must not get a
 * chance to keep "sk + offset" in a register across loads. */
struct ktp_sk_view {
	__u32 family;
	__u32 mark;
	__u32 local_port;   /* host order */
	__u16 remote_port;  /* network order */
	__u32 local[4];     /* v4-mapped for IPv4 */
	__u32 remote[4];
};

static __always_inline void ktp_read_sk(struct bpf_sock *sk, struct ktp_sk_view *v)
{
	__u32 a;

	KTP_LOAD(v->family, sk->family);
	KTP_LOAD(v->mark, sk->mark);
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

/* Is this ktproxy's accepted socket? Its local end is the listener l of its
 * namespace, and it carries the listener's mark (a child socket inherits it). */
static __always_inline int ktp_is_proxy_socket(const struct ktp_sk_view *v,
					       const struct ktp_netns_listener *l)
{
	if (v->mark != ktp_mark)
		return 0;
	if (v->family != KTP_AF_INET && v->family != KTP_AF_INET6)
		return 0;
	return ktp_is_listener_addr(l, v->local, bpf_htons((__u16)v->local_port));
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
	struct ktp_netns_listener l = {};
	struct ktp_orig_dst *od;
	struct ktp_tuple t = {};
	struct ktp_sk_view v = {};
	void *optval = ctx->optval;
	void *optval_end = ctx->optval_end;

	if (ctx->optname == KTP_SO_CONN_INFO) {
		if (ctx->level != SOL_IP)
			return 1;
	} else if (ctx->optname != KTP_SO_ORIGINAL_DST || (ctx->level != SOL_IP && ctx->level != SOL_IPV6)) {
		return 1;
	}
	if (!sk)
		return 1;
	ktp_read_sk(sk, &v);
	if (!ktp_listener_of(bpf_get_netns_cookie(ctx), &l))
		return 1;
	if (!ktp_is_proxy_socket(&v, &l))
		return 1;
	od = bpf_sk_storage_get(&ktp_conn_dst, sk, 0, 0);
	if (!od) {
		/* sockops did not see this socket established (not attached to
		 * ktproxy's cgroup when it was): take the entry over now. */
		ktp_tuple_from_accepted(&v, &t);
		od = ktp_adopt(sk, &t);
	}
	if (!od) {
		ktp_count(KTP_CTR_ORIG_DST_MISSED);
		return 1;
	}
	if (ctx->optname == KTP_SO_CONN_INFO) {
		struct ktp_conn_info *out = optval;

		if ((void *)(out + 1) > optval_end)
			return 1;
		out->od = *od;
		__builtin_memcpy(out->peer_addr, v.remote, sizeof(out->peer_addr));
		out->peer_port = v.remote_port;
		out->peer_family = v.family;
		out->_pad = 0;
		ctx->optlen = sizeof(*out);
	} else if (ctx->level == SOL_IP) {
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

#define SOL_SOCKET 1
#define SO_MARK 36
#define IP_TRANSPARENT 19
#define IPV6_TRANSPARENT 75

/* On ktproxy's own cgroup. The dropped relay keeps CAP_NET_RAW for one
 * thing, SO_MARK = --mark on its sockets; the same capability would let a
 * relay taken over send from any address (IP(V6)_TRANSPARENT) or wear any
 * mark (past the host's fwmark routing and firewall). seccomp cannot refuse
 * these (the value sits behind a pointer; the rings issue setsockopt as
 * IORING_OP_URING_CMD, unseen by seccomp): this hook sees both paths.
 * Everyone else in the cgroup, the helper included, passes untouched. */
SEC("cgroup/setsockopt")
int ktp_relay_guard(struct bpf_sockopt *ctx)
{
	__u32 *val = ctx->optval;

	if (ktp_relay_tgid && (__u32)(bpf_get_current_pid_tgid() >> 32) == ktp_relay_tgid) {
		if ((ctx->level == SOL_IP && ctx->optname == IP_TRANSPARENT) ||
		    (ctx->level == SOL_IPV6 && ctx->optname == IPV6_TRANSPARENT))
			return 0;
		if (ctx->level == SOL_SOCKET && ctx->optname == SO_MARK &&
		    ((void *)(val + 1) > ctx->optval_end || *val != ktp_mark))
			return 0;
	}
	/* Past a page the program sees only the first one: 0 hands the kernel
	 * the caller's own buffer, untouched. */
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
