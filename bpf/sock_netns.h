/* Which listener of ktproxy a socket's connect goes to: the host one (in
 * rodata) for sockets of ktproxy's own network namespace, else the one
 * ktproxy opened inside the socket's namespace (ktp_netns_listeners,
 * bpf/ktproxy_shared.h). Included after the rodata it reads. */
#ifndef KTPROXY_SOCK_NETNS_H
#define KTPROXY_SOCK_NETNS_H

#include "ktproxy_shared.h"

/* Set by the loader: with --fail-closed a connect from a namespace that has
 * no listener yet is refused (ECONNREFUSED) rather than passed. */
const volatile __u8 ktp_netns_refuse = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct ktp_netns_listener);
} ktp_netns_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ktp_netns_events SEC(".maps");

/* Namespaces a connect came from before ktproxy had a listener there:
 * cookie -> ktime of the first such connect. Written here; ktproxy deletes
 * a namespace's entry when it opens (or drops) its listener; LRU bounds
 * the rest (a namespace that goes away before ktproxy meets it). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} ktp_netns_pending SEC(".maps");

/* How long a namespace's connects are refused, without --fail-closed,
 * while ktproxy opens its listener (tens of ms); past it ktproxy could not
 * open one (the namespace's loopback is down...) and fail-open passes. */
#define KTP_NETNS_GRACE_NS (3ull * 1000000000ull)

/* The listener for sockets of namespace `cookie`; 0 when there is none. */
static __always_inline int ktp_listener_of(__u64 cookie, struct ktp_netns_listener *out)
{
	struct ktp_netns_listener *l;

	if (cookie == ktp_netns_cookie) {
		out->ip4 = ktp_proxy_ip4;
		out->ip6[0] = ktp_proxy_ip6[0];
		out->ip6[1] = ktp_proxy_ip6[1];
		out->ip6[2] = ktp_proxy_ip6[2];
		out->ip6[3] = ktp_proxy_ip6[3];
		out->port4 = ktp_proxy_port;
		out->port6 = ktp_proxy_port;
		out->flags = ktp_have_ip6 ? KTP_NL_IP6 : 0;
		return 1;
	}
	l = bpf_map_lookup_elem(&ktp_netns_listeners, &cookie);
	if (!l)
		return 0;
	*out = *l;
	return 1;
}

/* A connect to redirect from a namespace without a listener: tell ktproxy
 * (a full ring only loses the hint; the next connect sends another), then
 * refuse it (counted skipped_netns): the hooks are attached, so ktproxy
 * runs and is opening that namespace's listener; passing the connect
 * would let a container's first connects out past it. Without
 * --fail-closed, a namespace still without a listener after the grace
 * time is passed. Returns the program's verdict. notify: send the event
 * (0: ktproxy met the namespace already and another scan would not help). */
static __always_inline int ktp_netns_refuse_or_pass(__u64 cookie, int notify)
{
	struct ktp_netns_event *e = 0;
	__u64 now, *first;

	if (notify)
		e = bpf_ringbuf_reserve(&ktp_netns_events, sizeof(*e), 0);
	if (e) {
		e->cookie = cookie;
		e->pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
		e->_pad = 0;
		bpf_ringbuf_submit(e, 0);
	}
	ktp_count(KTP_CTR_SKIPPED_NETNS);
	if (!ktp_netns_refuse) {
		now = bpf_ktime_get_ns();
		first = bpf_map_lookup_elem(&ktp_netns_pending, &cookie);
		if (!first)
			bpf_map_update_elem(&ktp_netns_pending, &cookie, &now, BPF_NOEXIST);
		else if (now - *first >= KTP_NETNS_GRACE_NS)
			return 1;
	}
	bpf_set_retval(-111 /* ECONNREFUSED */);
	return 0;
}

static __always_inline int ktp_netns_unknown(__u64 cookie)
{
	return ktp_netns_refuse_or_pass(cookie, 1);
}

#endif
