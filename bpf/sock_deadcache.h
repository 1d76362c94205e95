/* Negative cache of dead destinations, for the connect hooks.
 *
 * A redirected connect succeeds as soon as ktproxy's listener answers, so a
 * destination that refuses or never answers reaches the app as a connect
 * that worked followed by a reset; an app falling back to a name's next
 * address (happy eyeballs, Go's net.Dial, curl) then never does. When
 * ktproxy's own connect to a destination fails, it records the destination
 * here for a short while (--dead-cache); a connect to it from the cgroup in
 * that time fails at once with the errno ktproxy met, as a direct connect
 * would have, and the app moves on to the next address.
 *
 * Map ktp_dead_dst. Owner: the ktproxy process that loaded it (never
 * pinned: a restarted ktproxy starts with an empty cache). Key: destination
 * address (v4-mapped) and port, and the netns cookie of the app sockets it
 * speaks for (a container's connections leave from its own namespace, with
 * its routes: what it cannot reach, the host may). Value: expiry (CLOCK_MONOTONIC ns) and
 * errno. Written by the workers on a failed direct connect (refused, timed
 * out, unreachable). Deleting event: none; an entry is void once expired
 * (the hook compares), overwritten by the next failure, and evicted by the
 * LRU when 4096 destinations are in it. */
#ifndef KTPROXY_SOCK_DEADCACHE_H
#define KTPROXY_SOCK_DEADCACHE_H

#include "ktproxy_shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ktp_dead_key);
	__type(value, struct ktp_dead_val);
} ktp_dead_dst SEC(".maps");

/* The live entry for dst:port (v4-mapped, port network order) seen from
 * namespace netns, or 0 when none or expired. */
static __always_inline struct ktp_dead_val *ktp_dead_dst_live(const __u32 dst[4], __u32 port_net, __u64 netns)
{
	struct ktp_dead_key key = {};
	struct ktp_dead_val *v;

	key.addr[0] = dst[0];
	key.addr[1] = dst[1];
	key.addr[2] = dst[2];
	key.addr[3] = dst[3];
	key.port = (__u16)port_net;
	key.netns = netns;
	v = bpf_map_lookup_elem(&ktp_dead_dst, &key);
	if (!v || bpf_ktime_get_ns() >= v->until_ns)
		return 0;
	return v;
}

/* 1 when dst:port is known dead: the connect is to fail now, with the
 * recorded errno (bpf_set_retval, Linux >= 5.18; without it the hook's 0
 * would mean EPERM). */
static __always_inline int ktp_dead_dst_refuse(const __u32 dst[4], __u32 port_net, __u64 netns)
{
	struct ktp_dead_val *v = ktp_dead_dst_live(dst, port_net, netns);

	if (!v)
		return 0;
	bpf_set_retval(v->err < 0 ? v->err : -v->err);
	return 1;
}

#endif
