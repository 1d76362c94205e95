/* Structs and constants shared by the BPF programs and the C++ daemon.
 * One definition only: the C++ side static_asserts sizes and offsets
 * (proxy/kernel/bpf_abi.h), so a change here that breaks the layout fails the build. */
#ifndef KTPROXY_SHARED_H
#define KTPROXY_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST (SOL_IPV6) share one value. */
#define KTP_SO_ORIGINAL_DST 80
/* ktproxy's own getsockopt(SOL_IP) option, answered by the cgroup/getsockopt
 * program on ktproxy's accepted socket: struct ktp_conn_info (destination,
 * the process that connected, and who the peer is) in one call. No kernel
 * option has this number, and SO_ORIGINAL_DST keeps its size for others. */
#define KTP_SO_CONN_INFO 0x4b5450

#define KTP_AF_INET 2
#define KTP_AF_INET6 10

/* Per-CPU counters, indexes into the ktp_counters array map. */
enum ktp_counter {
	KTP_CTR_REDIRECTED = 0,     /* connect rewritten to the proxy */
	KTP_CTR_SKIPPED_MARK,       /* ktproxy's own socket: its SO_MARK, from ktproxy's cgroup */
	KTP_CTR_SKIPPED_NETNS,      /* socket in another network namespace that has no listener (yet) */
	KTP_CTR_SKIPPED_LOCAL,      /* loopback / unspecified destination */
	KTP_CTR_ORIG_DST_ANSWERED,  /* getsockopt(SO_ORIGINAL_DST) answered */
	KTP_CTR_ORIG_DST_MISSED,    /* asked on the proxy's socket, no entry */
	KTP_CTR_MAP_FULL,           /* could not store the original destination */
	KTP_CTR_BYPASSED,           /* a `direct` rule left the connect untouched */
	KTP_CTR_BLOCKED,            /* a `block` rule failed the connect (EPERM) */
	KTP_CTR_GW_ASSIGNED,        /* gateway: a packet handed to one of ktproxy's sockets */
	KTP_CTR_GW_NO_LISTENER,     /* gateway: a SYN to proxy, but no transparent listener */
	KTP_CTR_NO_LISTENER,        /* connect to proxy refused: the listener is not ktproxy's (or none) */
	KTP_CTR_SKIPPED_BOUND,      /* socket bound to a device (SO_BINDTODEVICE, VRF): left alone (fail-open) */
	/* Dry run (ktp_switches.dry_run): what connects would have become,
	 * one count each; nothing was rewritten. See struct ktp_dry_event. */
	KTP_CTR_DRY_REDIRECT,       /* would have been redirected to ktproxy */
	KTP_CTR_DRY_BLOCK,          /* would have failed with EPERM (a `block` rule) */
	KTP_CTR_DRY_PASS,           /* would have gone out untouched (`direct`, a bound socket, no IPv6 listener) */
	KTP_CTR_DRY_REFUSE,         /* would have failed at once: destination in the dead cache */
	KTP_CTR_DRY_EVENTS_LOST,    /* the event ring buffer was full: counted, not reported */
	KTP_CTR_UDP_REDIRECTED,     /* UDP sendmsg/connect rewritten to ktproxy's UDP relay */
	KTP_CTR_UDP_NO_RELAY,       /* UDP to proxy refused: the relay socket is not ktproxy's (or none) */
	KTP_CTR_UDP_MAP_FULL,       /* UDP: no room for the flow's entry, sent direct */
	KTP_CTR_FOREIGN_MARK,       /* socket carries the proxy's SO_MARK but the caller is not ktproxy: intercepted */
	KTP_CTR_REFUSED_BOUND,      /* --fail-closed: a device-bound socket's connect/datagram to proxy refused (EPERM) */
	KTP_CTR_REFUSED_UNSCANNED,  /* --fail-closed --cgroup-match: to proxy from a cgroup no scan classified yet: refused */
	KTP_CTR_MAX,
};

/* Original destination of a redirected connection, and the process that
 * made it (as connect4/6 saw it: pid = thread group id, tid = the thread,
 * both in the initial pid namespace; pid 0: unknown). Value of three maps:
 * ktp_app_dst (socket storage of the app's socket: connect4/6 write it,
 * getpeername reads it, it dies with the socket), ktp_handoff (below) and
 * ktp_conn_dst (socket storage of ktproxy's accepted socket, read by
 * getsockopt(SO_ORIGINAL_DST)). docs/architecture.md has their lifecycles. */
struct ktp_orig_dst {
	__u32 addr[4];  /* IPv6, or IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d); network order */
	__u16 port;     /* network byte order */
	__u16 family;   /* KTP_AF_INET or KTP_AF_INET6: the family on the wire */
	__u32 pid;      /* tgid of the connecting process */
	__u32 tid;      /* its thread */
	__u32 uid;      /* its uid, in the initial user namespace */
	char comm[16];  /* its thread's comm (TASK_COMM_LEN), NUL-terminated */
	__u32 flags;    /* KTP_OD_*; only the app's copy (ktp_app_dst) uses them */
	__u32 _pad;
};

/* KTP_SO_CONN_INFO's answer: the connection's ktp_orig_dst and the accepted
 * socket's peer (the app's address), so that one getsockopt replaces
 * getsockopt + getpeername at accept (issue 19). */
struct ktp_conn_info {
	struct ktp_orig_dst od;
	__u32 peer_addr[4];  /* v4-mapped for IPv4; network order */
	__u16 peer_port;     /* network byte order */
	__u16 peer_family;   /* KTP_AF_INET or KTP_AF_INET6 */
	__u32 _pad;
};

/* The app socket's overflow of ktp_handoff is already counted in map_full:
 * sockops runs once per cgroup it is attached to, so twice for an app whose
 * cgroup is below ktproxy's own (ktproxy in the root cgroup, `ktproxy run`),
 * and both runs find the map full. */
#define KTP_OD_FULL_COUNTED 1u

/* 4-tuple of a redirected connection as seen from the app's side: src is the
 * app's socket, dst is the proxy listener. Map ktp_handoff: key = this struct,
 * value = struct ktp_orig_dst. Written by sockops when the app's socket is
 * established; moved into ktp_conn_dst when ktproxy's side of the connection
 * is established (the same tuple mirrored: its local = dst, its peer = src);
 * deleted by the app socket's TCP_CLOSE if nobody took it. */
struct ktp_tuple {
	__u32 src_addr[4]; /* v4-mapped for IPv4 */
	__u32 dst_addr[4];
	__u16 src_port;    /* network byte order */
	__u16 dst_port;    /* network byte order */
	__u16 family;      /* KTP_AF_INET or KTP_AF_INET6 (wire family) */
	__u16 _pad;
};

/* ktproxy's listener inside another network namespace (a container's):
 * connects from sockets of that namespace are rewritten to it, since
 * ktproxy's own listener is out of their reach. Map ktp_netns_listeners
 * (bpf/sock_netns.h): key = the namespace's cookie (__u64,
 * SO_NETNS_COOKIE), value = this struct. Owner: ktproxy's netns registry
 * (proxy/netns/netns_listeners.cpp) writes an entry once the listener
 * exists and deletes it when no process of the cgroup is left in that
 * namespace. Ports are unique across the namespaces of one instance (and
 * differ from the host listener's), so a hand-off tuple names one
 * namespace. */
struct ktp_netns_listener {
	__u32 ip4;      /* network order */
	__u32 ip6[4];   /* network order; valid with KTP_NL_IP6 */
	__u16 port4;    /* network order; 0: no listener */
	__u16 port6;    /* network order */
	__u32 flags;    /* KTP_NL_* */
	__u16 udp_port; /* network order: ktproxy's UDP relay socket there (127/8,
			 * and ::1 with KTP_NL_UDP6); 0: none yet (the namespace's
			 * datagrams are treated as its connects are before its
			 * listener exists: ktp_netns_unknown) */
	__u16 _pad;
};
#define KTP_NL_IP6 1u
#define KTP_NL_UDP6 2u  /* the UDP relay socket also listens on ip6 */

/* Ring buffer ktp_netns_events: a connect from a namespace that has no
 * listener yet, so that ktproxy opens one at once (the connect itself is
 * passed, or refused with --fail-closed). */
struct ktp_netns_event {
	__u64 cookie;  /* the socket's netns cookie */
	__u32 pid;     /* tgid of the connecting process */
	__u32 _pad;
};

/* Routing rules compiled for the connect hooks (proxy/kernel/route_compiler.cpp).
 * Maps ktp_routes_0 and ktp_routes_1 (LPM tries, two generations of the same
 * rules; .data's ktp_route_gen names the one in force): key = prefix in the
 * v4-mapped IPv6 space, value = the ordered list of every rule whose prefix
 * contains that key's prefix, so that the longest-prefix hit alone decides
 * first-match order. Owner: the loader; the generation not in force is
 * rewritten whole on reload (SIGHUP) and then switched in; never written by
 * the kernel. */
enum ktp_action {
	KTP_ACT_DIRECT = 0,  /* leave the connect alone: the proxy never sees it */
	KTP_ACT_BLOCK = 1,   /* fail the connect with EPERM */
	KTP_ACT_PROXY = 2,   /* redirect to ktproxy */
};

/* The rule also names a domain: only the proxy can finish the decision, so
 * a connection matching its address/port is redirected for sniffing. */
#define KTP_ROUTE_F_DOMAIN 0x1

#define KTP_ROUTE_MAX 32

/* What the gateway's TC program decided for a packet (tests read it back). */
enum ktp_gw_verdict {
	KTP_GW_PASS = 0,    /* not for us: non-TCP, malformed, fragment, local destination */
	KTP_GW_DIRECT = 1,  /* a `direct` rule: forwarded by the kernel untouched */
	KTP_GW_BLOCK = 2,   /* a `block` rule: dropped */
	KTP_GW_PROXY = 3,   /* to ktproxy's transparent listener (SYN) or flow socket */
};

struct ktp_lpm_key {
	__u32 prefixlen;  /* 0..128 over addr */
	__u32 addr[4];    /* network order, IPv4 as v4-mapped */
};

struct ktp_route_entry {
	__u16 port_lo;  /* host order, inclusive; 0-65535 when the rule has no port */
	__u16 port_hi;
	__u8 action;    /* enum ktp_action */
	__u8 flags;     /* KTP_ROUTE_F_* */
	__u16 rule;     /* index of the rule, for logs and tests */
};

struct ktp_route_set {
	__u32 count;
	__u32 _pad;
	struct ktp_route_entry entries[KTP_ROUTE_MAX];
};

/* Negative cache of destinations ktproxy could not reach (bpf/sock_deadcache.h,
 * map ktp_dead_dst): key and value, written by ktproxy's workers, read by the
 * connect hooks. A destination is dead from one network namespace: a
 * container's routes are not the host's. */
struct ktp_dead_key {
	__u32 addr[4];  /* network order, IPv4 as v4-mapped */
	__u16 port;     /* network order */
	__u16 _pad;
	__u32 _pad2;
	__u64 netns;    /* cookie of the app socket's namespace (SO_NETNS_COOKIE) */
};

struct ktp_dead_val {
	__u64 until_ns;  /* CLOCK_MONOTONIC (bpf_ktime_get_ns) after which the entry is void */
	__s32 err;       /* errno the app's connect fails with: ECONNREFUSED, ETIMEDOUT, ... */
	__u32 _pad;
};

/* Run-time switches of the connect hooks. Map ktp_switches (bpf/sock_events.h):
 * an array of one entry, key KTP_SWITCHES_KEY, value this struct. Owner: the
 * ktproxy process that loaded the hooks (never pinned: a restarted instance
 * starts from its flags); written by it at start, by `ktproxy ctl` and on
 * SIGHUP; read by connect4/6. Deleting event: none (an array entry lives as
 * long as the map). */
#define KTP_SWITCHES_KEY 0
struct ktp_switches {
	__u32 dry_run;  /* nonzero: decide and report every connect, rewrite and fail none */
	__u32 _pad;
};

/* What a connect would have become, had dry run been off. */
enum ktp_would {
	KTP_WOULD_PASS = 0,      /* out untouched */
	KTP_WOULD_BLOCK = 1,     /* EPERM */
	KTP_WOULD_REDIRECT = 2,  /* to ktproxy's listener */
	KTP_WOULD_REFUSE = 3,    /* the dead cache's errno */
};

/* ktp_dry_event.rule when no rule matched (the default action decided). */
#define KTP_RULE_DEFAULT 0xffff

/* One dry-run decision, sent by connect4/6 through the ring buffer
 * ktp_events to ktproxy, which logs it (rate-limited). */
struct ktp_dry_event {
	__u64 cgroup_id;  /* cgroup of the connecting process (its cgroup2 inode) */
	__u32 pid;        /* tgid, initial pid namespace */
	__u32 tid;        /* the thread */
	__u32 uid;        /* initial user namespace */
	__u32 addr[4];    /* destination, v4-mapped for IPv4; network order */
	__u16 port;       /* network order */
	__u16 family;     /* KTP_AF_INET or KTP_AF_INET6 (wire family) */
	__u16 rule;       /* index of the rule that matched, KTP_RULE_DEFAULT if none */
	__u8 action;      /* enum ktp_action the rule (or the default) says */
	__u8 would;       /* enum ktp_would */
	char comm[16];    /* the thread's comm, NUL-terminated */
};

/* UDP (bpf/sock_udp.h, docs/architecture.md "UDP"). The hooks rewrite an
 * app's datagram (sendmsg4/6) or connect (connect4/6) to ktproxy's UDP relay
 * port on a loopback address that names the flow:
 *  - IPv4 destinations (also v4-mapped ones of dual-stack sockets): a token
 *    address 127.t.t.t, one per (app socket, original destination); ktproxy
 *    reads it with IP_PKTINFO and answers from it, and recvmsg4/6 turn it
 *    back into the original destination for the app.
 *  - native IPv6 destinations: ::1 has no room for tokens, so the flow is
 *    named by the app socket's port (one destination at a time per socket).
 * Map ktp_udp_flows: key = struct ktp_udp_key, value = struct ktp_udp_flow.
 * Owner: the loader. Written by sendmsg4/6 and connect4/6; deleted by
 * cgroup/sock_release of the app socket (through ktp_udp_socks) or by
 * ktproxy's sweep once an unconnected flow was idle for --udp-timeout. */
struct ktp_udp_key {
	__u32 addr;      /* IPv4: the token 127.t.t.t (network order); IPv6: 0 */
	__u16 app_port;  /* IPv6: the app socket's port (network order); IPv4: 0 */
	__u16 family;    /* KTP_AF_INET (token) or KTP_AF_INET6 (port) */
	__u64 netns;     /* the app socket's netns cookie; 0 for ktproxy's own
			  * namespace. A container's relay socket is its own, and
			  * its app ports (and tokens) are its own too: the same
			  * port on ::1 in two namespaces is two flows. */
};

struct ktp_udp_flow {
	struct ktp_orig_dst od;  /* the destination the app sent to, and who */
	__u64 cookie;            /* the app socket's cookie: only it owns the key */
	__u64 last_ns;           /* bpf_ktime_get_ns of the last sendmsg through the hook */
	__u32 flags;             /* KTP_UDP_F_* */
	__u32 filed_port;        /* ktp_udp_conn6 only: the app port (network order) the relay
				  * filed the flow under in ktp_udp_flows; 0 until then */
	__u64 netns;             /* the key's netns (struct ktp_udp_key): for the release
				  * hook's way from ktp_udp_conn6 to the filed key */
};

/* The flow came from connect(): the socket sends without sendmsg hooks, so
 * only its release may delete the entry (never the idle sweep). */
#define KTP_UDP_F_CONNECTED 1u

/* Map ktp_udp_socks: key = app socket cookie, value = the keys of
 * ktp_udp_flows it made (the last KTP_UDP_SOCK_KEYS; older ones fall to the
 * idle sweep), so that its release deletes them. Written with the flows,
 * deleted by cgroup/sock_release. */
#define KTP_UDP_SOCK_KEYS 8
struct ktp_udp_sock_key {
	__u32 addr;      /* struct ktp_udp_key's, but its netns: one per socket, below */
	__u16 app_port;
	__u16 family;
};
struct ktp_udp_sock {
	struct ktp_udp_sock_key keys[KTP_UDP_SOCK_KEYS];
	__u64 netns;  /* the keys' netns (a socket never changes namespace) */
	__u32 next;   /* slot the next new key goes to (mod KTP_UDP_SOCK_KEYS) */
	__u32 _pad;
};

#endif
