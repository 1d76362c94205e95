/* UDP hooks of ktproxy, included by sock_redirect.bpf.c after its TCP
 * helpers (KTP_LOAD, the rodata, ktp_route, ktp_app_dst).
 *
 * An app's datagram to a proxied destination is rewritten to ktproxy's UDP
 * relay port on a loopback address that names the flow (ktproxy_shared.h,
 * struct ktp_udp_key): IPv4 destinations get a token address 127.t.t.t per
 * (app socket, destination), native IPv6 ones ::1 keyed by the app's port.
 * ktproxy reads the token from IP_PKTINFO (the app's port from the source),
 * finds the destination in ktp_udp_flows and answers from the token address;
 * recvmsg4/6 show the app the original destination as the reply's source.
 * A container's socket goes to the relay socket ktproxy opened in its own
 * network namespace (ktp_netns_listeners' udp_port), its flows keyed apart
 * by that namespace's cookie.
 * docs/architecture.md "UDP" has the design and its limits. */
#ifndef KTPROXY_SOCK_UDP_H
#define KTPROXY_SOCK_UDP_H

#include "ktproxy_shared.h"

#define SOCK_DGRAM 2
#define IPPROTO_UDP 17

/* ktproxy's UDP relay port (network order); 0: UDP is not intercepted. */
const volatile __u16 ktp_udp_port = 0;

/* Flows: plain hash, so that no live flow is evicted; a full map sends the
 * datagram direct (counted), as the TCP hand-off map does. Sized by the
 * loader (--max-conns). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ktp_udp_key);
	__type(value, struct ktp_udp_flow);
} ktp_udp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ktp_udp_sock);
} ktp_udp_socks SEC(".maps");

/* Connected native-IPv6 flows, by the app socket's cookie: connect6 runs
 * before the socket has the port that names an IPv6 flow, so the relay finds
 * the socket's cookie (sock_diag, by the datagram's 4-tuple) and then the
 * destination here, and files the flow under its port in ktp_udp_flows.
 * Written by connect6; deleted by cgroup/sock_release. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ktp_udp_flow);
} ktp_udp_conn6 SEC(".maps");

/* 1 = leave the socket alone: the check TCP makes first
 * (ktp_sock_exempt). A device-bound socket is looked at after the rules, as
 * TCP's is; which relay a datagram goes to (its namespace's) is asked only
 * once it is to be relayed: ktp_udp_relay_of. */
static __always_inline int ktp_udp_skip(struct bpf_sock_addr *ctx, struct bpf_sock *sk)
{
	if (!ktp_udp_port || ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return 1;
	if (ktp_sock_exempt(sk))
		return 1;
	return 0;
}

/* ktproxy's UDP relay socket in a socket's network namespace: the host
 * relay (rodata) for ktproxy's own, else the one ktproxy opened in the
 * container's namespace (ktp_netns_listeners' udp_port). */
struct ktp_udp_relay {
	__u64 ns;      /* the flows' key netns: 0 for ktproxy's own namespace */
	__u32 ip6[4];  /* its IPv6 address (::1), valid with v6 */
	__u16 port;    /* network order */
	__u16 v6;      /* it also listens on ip6 */
};

/* 1: r is the socket's relay; 0: its namespace has none. */
static __always_inline int ktp_udp_relay_here(void *ctx, struct ktp_udp_relay *r)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	struct ktp_netns_listener *l;

	if (cookie == ktp_netns_cookie) {
		r->ns = 0;
		r->ip6[0] = ktp_proxy_ip6[0];
		r->ip6[1] = ktp_proxy_ip6[1];
		r->ip6[2] = ktp_proxy_ip6[2];
		r->ip6[3] = ktp_proxy_ip6[3];
		r->port = ktp_udp_port;
		r->v6 = ktp_have_ip6;
		return 1;
	}
	l = bpf_map_lookup_elem(&ktp_netns_listeners, &cookie);
	if (!l || !l->udp_port)
		return 0;
	r->ns = cookie;
	r->ip6[0] = l->ip6[0];
	r->ip6[1] = l->ip6[1];
	r->ip6[2] = l->ip6[2];
	r->ip6[3] = l->ip6[3];
	r->port = l->udp_port;
	r->v6 = !!(l->flags & KTP_NL_UDP6);
	return 1;
}

/* The relay for a datagram to relay: 1 with r filled; else the namespace
 * has none yet (a container met before the next scan) and the datagram gets
 * the verdict a connect from there gets (ktp_netns_unknown: ktproxy is told,
 * refused during the grace time and with --fail-closed): it never goes
 * direct past the rules while ktproxy is opening that relay. A namespace
 * ktproxy met but could not open a UDP relay socket in (its listener entry
 * has no udp_port) gets the same verdict without telling ktproxy again: a
 * scan per datagram would change nothing. */
static __always_inline int ktp_udp_relay_of(struct bpf_sock_addr *ctx, struct ktp_udp_relay *r, int *verdict)
{
	__u64 cookie;

	if (ktp_udp_relay_here(ctx, r))
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	*verdict = ktp_netns_refuse_or_pass(cookie, !bpf_map_lookup_elem(&ktp_netns_listeners, &cookie));
	return 0;
}

/* No relay socket of ktproxy's on the relay port (it died, --fail-closed
 * kept the hooks): the datagram or connect fails as a dead peer's would. */
static __always_inline int ktp_udp_no_relay(void)
{
	ktp_count(KTP_CTR_UDP_NO_RELAY);
	bpf_set_retval(-KTP_ECONNREFUSED);
	return 0;
}

/* Is the socket a datagram to the relay would reach ktproxy's? It carries
 * --mark, which only CAP_NET_ADMIN/CAP_NET_RAW can set: with --fail-closed
 * the hooks outlive ktproxy, and a local user who binds the port must not
 * receive the cgroup's datagrams. */
static __always_inline int ktp_udp_relay_is_ours(struct bpf_sock_addr *ctx, const struct ktp_udp_relay *r, int v6,
						 __u32 token)
{
	struct bpf_sock_tuple tup = {};
	struct bpf_sock *sk;
	__u32 mark;

	if (v6) {
		tup.ipv6.daddr[0] = r->ip6[0];
		tup.ipv6.daddr[1] = r->ip6[1];
		tup.ipv6.daddr[2] = r->ip6[2];
		tup.ipv6.daddr[3] = r->ip6[3];
		tup.ipv6.dport = r->port;
		sk = bpf_sk_lookup_udp(ctx, &tup, sizeof(tup.ipv6), KTP_CURRENT_NETNS, 0);
	} else {
		tup.ipv4.daddr = token;
		tup.ipv4.dport = r->port;
		sk = bpf_sk_lookup_udp(ctx, &tup, sizeof(tup.ipv4), KTP_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	KTP_LOAD(mark, sk->mark);
	bpf_sk_release(sk);
	return mark == ktp_mark;
}

static __always_inline void ktp_udp_fill(struct ktp_udp_flow *f, const __u32 dst[4], __u32 port,
					 __u64 cookie, __u64 ns, __u32 flags)
{
	__u64 id = bpf_get_current_pid_tgid();

	f->od.addr[0] = dst[0];
	f->od.addr[1] = dst[1];
	f->od.addr[2] = dst[2];
	f->od.addr[3] = dst[3];
	f->od.port = (__u16)port;
	f->od.family = ktp_wire_family(dst);
	f->od.pid = (__u32)(id >> 32);
	f->od.tid = (__u32)id;
	f->od.uid = (__u32)bpf_get_current_uid_gid();
	if (bpf_get_current_comm(f->od.comm, sizeof(f->od.comm)))
		__builtin_memset(f->od.comm, 0, sizeof(f->od.comm));
	f->cookie = cookie;
	f->last_ns = bpf_ktime_get_ns();
	f->flags = flags;
	f->netns = ns;
}

/* Remembers that the socket made this key, so that its release deletes it. */
static __always_inline void ktp_udp_note_key(__u64 cookie, const struct ktp_udp_key *key)
{
	struct ktp_udp_sock fresh = {}, *s;

	s = bpf_map_lookup_elem(&ktp_udp_socks, &cookie);
	if (!s) {
		/* Full: the flow still works; the idle sweep deletes it. */
		bpf_map_update_elem(&ktp_udp_socks, &cookie, &fresh, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&ktp_udp_socks, &cookie);
		if (!s)
			return;
	}
	s->keys[s->next & (KTP_UDP_SOCK_KEYS - 1)].addr = key->addr;
	s->keys[s->next & (KTP_UDP_SOCK_KEYS - 1)].app_port = key->app_port;
	s->keys[s->next & (KTP_UDP_SOCK_KEYS - 1)].family = key->family;
	s->netns = key->netns;
	s->next++;
}

static __always_inline int ktp_udp_same_dst(const struct ktp_udp_flow *f, const __u32 dst[4], __u32 port)
{
	return f->od.addr[0] == dst[0] && f->od.addr[1] == dst[1] && f->od.addr[2] == dst[2] &&
	       f->od.addr[3] == dst[3] && f->od.port == (__u16)port;
}

/* The token address (network order) of (socket, destination): a hash into
 * 127.0.0.2-127.255.255.254, probed a few times past slots that another
 * socket or destination holds. 0: no slot (map full, or four collisions). */
static __always_inline __u32 ktp_udp_token(__u64 cookie, __u64 ns, const __u32 dst[4], __u32 port, __u32 flags)
{
	struct ktp_udp_flow fresh = {};
	struct ktp_udp_key key = {.family = KTP_AF_INET, .netns = ns};
	struct ktp_udp_flow *f;
	__u64 h;
	__u32 t;

	h = cookie * 0x9e3779b97f4a7c15ull;
	h ^= ((__u64)(dst[0] ^ dst[1] ^ dst[2]) << 32) | dst[3];
	h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull;
	h ^= port;
	h = (h ^ (h >> 32)) * 0x94d049bb133111ebull;
	t = (__u32)(h ^ (h >> 31)) % 0xfffffd;
	for (int i = 0; i < 4; i++) {
		__u32 tok = 2 + (t + i) % 0xfffffd;

		key.addr = bpf_htonl(0x7f000000 | tok);
		f = bpf_map_lookup_elem(&ktp_udp_flows, &key);
		if (f) {
			if (f->cookie != cookie || !ktp_udp_same_dst(f, dst, port))
				continue;
			f->last_ns = bpf_ktime_get_ns();
			f->flags |= flags;
			return key.addr;
		}
		ktp_udp_fill(&fresh, dst, port, cookie, ns, flags);
		if (bpf_map_update_elem(&ktp_udp_flows, &key, &fresh, BPF_NOEXIST))
			continue;
		ktp_udp_note_key(cookie, &key);
		return key.addr;
	}
	return 0;
}

/* Native IPv6: the flow is the app's port on ::1; the last destination the
 * socket sent to owns it. 1: recorded. */
static __always_inline int ktp_udp_port_flow(__u64 cookie, __u64 ns, __u16 app_port, const __u32 dst[4],
					     __u32 port, __u32 flags)
{
	struct ktp_udp_key key = {.app_port = app_port, .family = KTP_AF_INET6, .netns = ns};
	struct ktp_udp_flow fresh = {};
	struct ktp_udp_flow *f;

	f = bpf_map_lookup_elem(&ktp_udp_flows, &key);
	if (f && f->cookie == cookie && ktp_udp_same_dst(f, dst, port)) {
		f->last_ns = bpf_ktime_get_ns();
		f->flags |= flags;
		return 1;
	}
	ktp_udp_fill(&fresh, dst, port, cookie, ns, flags);
	if (bpf_map_update_elem(&ktp_udp_flows, &key, &fresh, BPF_ANY))
		return 0;
	ktp_udp_note_key(cookie, &key);
	return 1;
}

/* Routing of a destination (v4-mapped or IPv6, port network order), UDP or
 * TCP: 1 = leave it, 0 = fail it with EPERM (block), -1 = to ktproxy. With
 * --udp, DNS (port 53, over UDP or TCP) goes to ktproxy's forwarder even
 * where the address rules say direct: the forwarder routes each query by the
 * name asked and remembers the answer for domain rules (docs/dns.md). */
static __always_inline int ktp_route_dns(const __u32 dst[4], __u32 port)
{
	__u16 rule;

	if (!ktp_udp_port || port != bpf_htons(53))
		return ktp_route(dst, port);
	if (ktp_route_action(dst, port, &rule) == KTP_ACT_BLOCK) {
		ktp_count(KTP_CTR_BLOCKED);
		return 0;
	}
	return -1;
}

/* DNS to a resolver on loopback (systemd-resolved's 127.0.0.53) from
 * ktproxy's own namespace, UDP or TCP: that resolver asks its own servers
 * from outside the cgroup, so the query goes to the forwarder like any other
 * (docs/dns.md). In a container, over UDP only (udp): Docker's embedded
 * resolver (127.0.0.11) is dockerd, outside the cgroup, so the query goes
 * to the forwarder, whose direct exchange is made inside the container's
 * namespace (its loopback); a container's DNS over TCP to its loopback is
 * left alone, as all its loopback connects are. */
static __always_inline int ktp_loopback_dns(void *ctx, const __u32 dst[4], __u32 port, int udp)
{
	return ktp_udp_port && port == bpf_htons(53) && ktp_is_loopback(dst) &&
	       (udp || bpf_get_netns_cookie(ctx) == ktp_netns_cookie);
}

/* An IPv4 destination (also v4-mapped from an AF_INET6 socket) to the relay.
 * Returns the token address to rewrite to, 1 to leave it, 0 to fail it. The
 * token is never 0 or 1, so the three cannot be confused. */
static __always_inline __u32 ktp_udp_to_relay4(struct bpf_sock_addr *ctx, const struct ktp_udp_relay *rl,
					       const __u32 dst[4], __u32 port, __u32 flags)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 tok;

	if (!ktp_udp_relay_is_ours(ctx, rl, 0, bpf_htonl(0x7f000001)))
		return ktp_udp_no_relay();
	tok = ktp_udp_token(cookie, rl->ns, dst, port, flags);
	if (!tok) {
		ktp_count(KTP_CTR_UDP_MAP_FULL);
		return 1;
	}
	ktp_count(KTP_CTR_UDP_REDIRECTED);
	return tok;
}

/* For getpeername of a connected UDP socket: the same record TCP keeps. */
static __always_inline void ktp_udp_keep_peer(struct bpf_sock *sk, const __u32 dst[4], __u32 port)
{
	struct ktp_orig_dst *od = bpf_sk_storage_get(&ktp_app_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!od)
		return;
	od->addr[0] = dst[0];
	od->addr[1] = dst[1];
	od->addr[2] = dst[2];
	od->addr[3] = dst[3];
	od->port = (__u16)port;
	od->family = ktp_wire_family(dst);
	od->flags = 0;
}

/* sendmsg and connect of a UDP socket, either family (v6: from an
 * AF_INET6 socket): the destination checked, routed, recorded and rewritten
 * to the relay. connected: connect4/6, which also keep the peer for
 * getpeername. IPv4 (and v4-mapped) destinations get a token address; native
 * IPv6 ones are named by the app's port, which a connect has not chosen yet:
 * kept by the socket's cookie in ktp_udp_conn6 until the relay files it. */
static __always_inline int ktp_udp_hook(struct bpf_sock_addr *ctx, struct bpf_sock *sk, int v6, int connected)
{
	const __u32 flags = connected ? KTP_UDP_F_CONNECTED : 0;
	struct ktp_udp_relay rl = {};
	__u32 dst[4], port, r, lport;
	int verdict, v4;

	if (ktp_udp_skip(ctx, sk))
		return 1;
	/* A dry run rewrites and fails nothing: UDP goes out as it would
	 * without ktproxy (and is not reported: one event per datagram would
	 * flood the ring). A socket connected before it began stays so. */
	if (ktp_dry_run_on())
		return 1;
	port = ctx->user_port;
	if (v6) {
		if (ktp_dst6_left_alone(ctx, dst, 1))
			return 1;
	} else {
		ktp_map_v4(dst, ctx->user_ip4);
		if (ktp_is_local4(ctx->user_ip4) && !ktp_loopback_dns(ctx, dst, port, 1)) {
			ktp_count(KTP_CTR_SKIPPED_LOCAL);
			return 1;
		}
	}
	verdict = ktp_route_dns(dst, port);
	if (verdict >= 0)
		return verdict;
	if (!ktp_udp_relay_of(ctx, &rl, &verdict))
		return verdict;
	/* (sendmsg6 never sees a v4-mapped destination: the kernel sends it
	 * through udp_sendmsg, whose sendmsg4 hook handles it.) */
	v4 = !v6 || ktp_is_v4mapped(dst);
	if (!v4 && !rl.v6)
		return 1;
	verdict = ktp_sock_bound(sk);
	if (verdict >= 0)
		return verdict;
	if (ktp_cgroup_unscanned())
		return 0;
	if (v4) {
		r = ktp_udp_to_relay4(ctx, &rl, dst, port, flags);
		if (r <= 1)
			return r;
		if (connected)
			ktp_udp_keep_peer(sk, dst, port);
		if (v6) {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = bpf_htonl(0xffff);
			ctx->user_ip6[3] = r;
		} else {
			ctx->user_ip4 = r;
		}
		ctx->user_port = rl.port;
		return 1;
	}
	if (!ktp_udp_relay_is_ours(ctx, &rl, 1, 0))
		return ktp_udp_no_relay();
	if (connected) {
		struct ktp_udp_flow fresh = {};
		__u64 cookie = bpf_get_socket_cookie(ctx);

		ktp_udp_fill(&fresh, dst, port, cookie, rl.ns, flags);
		r = !bpf_map_update_elem(&ktp_udp_conn6, &cookie, &fresh, BPF_ANY);
	} else {
		/* sendmsg has bound the socket (autobind) before this hook runs. */
		KTP_LOAD(lport, sk->src_port);
		r = ktp_udp_port_flow(bpf_get_socket_cookie(ctx), rl.ns, bpf_htons((__u16)lport), dst, port, flags);
	}
	if (!r) {
		ktp_count(KTP_CTR_UDP_MAP_FULL);
		return 1;
	}
	ktp_count(KTP_CTR_UDP_REDIRECTED);
	if (connected)
		ktp_udp_keep_peer(sk, dst, port);
	ctx->user_ip6[0] = rl.ip6[0];
	ctx->user_ip6[1] = rl.ip6[1];
	ctx->user_ip6[2] = rl.ip6[2];
	ctx->user_ip6[3] = rl.ip6[3];
	ctx->user_port = rl.port;
	return 1;
}

SEC("cgroup/sendmsg4")
int ktp_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk;

	KTP_LOAD(sk, ctx->sk);
	return ktp_udp_hook(ctx, sk, 0, 0);
}

SEC("cgroup/sendmsg6")
int ktp_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk;

	KTP_LOAD(sk, ctx->sk);
	return ktp_udp_hook(ctx, sk, 1, 0);
}

/* connect4/6 of a UDP socket (called from ktp_connect4/6). */
static __always_inline int ktp_udp_connect4(struct bpf_sock_addr *ctx, struct bpf_sock *sk)
{
	return ktp_udp_hook(ctx, sk, 0, 1);
}

static __always_inline int ktp_udp_connect6(struct bpf_sock_addr *ctx, struct bpf_sock *sk)
{
	return ktp_udp_hook(ctx, sk, 1, 1);
}

/* The flow a reply from the relay belongs to, if it is this socket's. */
static __always_inline struct ktp_udp_flow *ktp_udp_reply_flow(struct bpf_sock_addr *ctx,
							       const struct ktp_udp_key *key)
{
	struct ktp_udp_flow *f = bpf_map_lookup_elem(&ktp_udp_flows, key);

	if (!f || f->cookie != bpf_get_socket_cookie(ctx))
		return 0;
	return f;
}

static __always_inline int ktp_is_token4(__u32 ip4)
{
	return (bpf_ntohl(ip4) >> 24) == 127;
}

/* A reply from the relay shows the app the destination it sent to as its
 * source: strict resolvers drop answers from anyone else (RFC 5452). */
SEC("cgroup/recvmsg4")
int ktp_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct ktp_udp_key key = {.family = KTP_AF_INET};
	struct ktp_udp_relay rl = {};
	struct ktp_udp_flow *f;

	if (!ktp_udp_port || !ktp_is_token4(ctx->user_ip4) || !ktp_udp_relay_here(ctx, &rl) ||
	    ctx->user_port != rl.port)
		return 1;
	key.addr = ctx->user_ip4;
	key.netns = rl.ns;
	f = ktp_udp_reply_flow(ctx, &key);
	if (!f || f->od.family != KTP_AF_INET)
		return 1;
	ctx->user_ip4 = f->od.addr[3];
	ctx->user_port = f->od.port;
	return 1;
}

SEC("cgroup/recvmsg6")
int ktp_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct ktp_udp_key key = {};
	struct ktp_udp_relay rl = {};
	struct ktp_udp_flow *f;
	struct bpf_sock *sk;
	__u32 a[4], lport;

	if (!ktp_udp_port || !ktp_udp_relay_here(ctx, &rl) || ctx->user_port != rl.port)
		return 1;
	key.netns = rl.ns;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	if (ktp_is_v4mapped(a)) {
		if (!ktp_is_token4(a[3]))
			return 1;
		key.addr = a[3];
		key.family = KTP_AF_INET;
	} else {
		if (!rl.v6 || a[0] != rl.ip6[0] || a[1] != rl.ip6[1] || a[2] != rl.ip6[2] || a[3] != rl.ip6[3])
			return 1;
		KTP_LOAD(sk, ctx->sk);
		if (!sk)
			return 1;
		KTP_LOAD(lport, sk->src_port);
		key.app_port = bpf_htons((__u16)lport);
		key.family = KTP_AF_INET6;
	}
	f = ktp_udp_reply_flow(ctx, &key);
	if (!f)
		return 1;
	/* od.addr is v4-mapped for IPv4: what an AF_INET6 socket shows. */
	ctx->user_ip6[0] = f->od.addr[0];
	ctx->user_ip6[1] = f->od.addr[1];
	ctx->user_ip6[2] = f->od.addr[2];
	ctx->user_ip6[3] = f->od.addr[3];
	ctx->user_port = f->od.port;
	return 1;
}

/* The app's socket is released: its flows go with it. */
SEC("cgroup/sock_release")
int ktp_udp_release(struct bpf_sock *sk)
{
	struct ktp_udp_flow *c6;
	struct ktp_udp_sock *s;
	__u64 cookie;
	__u32 proto;

	KTP_LOAD(proto, sk->protocol);
	if (proto != IPPROTO_UDP)
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	c6 = bpf_map_lookup_elem(&ktp_udp_conn6, &cookie);
	if (c6) {
		/* A connected IPv6 flow, filed by the relay under its port (this
		 * program may not read the socket's port: only post_bind may). */
		struct ktp_udp_key key6 = {.app_port = (__u16)c6->filed_port, .family = KTP_AF_INET6,
					   .netns = c6->netns};
		struct ktp_udp_flow *f6;

		f6 = key6.app_port ? bpf_map_lookup_elem(&ktp_udp_flows, &key6) : 0;
		if (f6 && f6->cookie == cookie)
			bpf_map_delete_elem(&ktp_udp_flows, &key6);
		bpf_map_delete_elem(&ktp_udp_conn6, &cookie);
	}
	s = bpf_map_lookup_elem(&ktp_udp_socks, &cookie);
	if (!s)
		return 1;
	for (int i = 0; i < KTP_UDP_SOCK_KEYS; i++) {
		struct ktp_udp_key key = {.addr = s->keys[i].addr, .app_port = s->keys[i].app_port,
					  .family = s->keys[i].family, .netns = s->netns};
		struct ktp_udp_flow *f;

		if (!key.family)
			continue;
		f = bpf_map_lookup_elem(&ktp_udp_flows, &key);
		if (f && f->cookie == cookie)
			bpf_map_delete_elem(&ktp_udp_flows, &key);
	}
	bpf_map_delete_elem(&ktp_udp_socks, &cookie);
	return 1;
}

#endif
