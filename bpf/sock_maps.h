/* Maps of the socket hooks. Owner: the ktproxy process that loaded them
 * (they die with it unless pinned). See docs/architecture.md for the lifecycle. */
#ifndef KTPROXY_SOCK_MAPS_H
#define KTPROXY_SOCK_MAPS_H

#include "ktproxy_shared.h"

#ifndef KTP_NO_CONN_MAPS
/* The app socket's original destination, for getpeername: socket storage
 * lives exactly as long as the socket, so nothing evicts it and nothing
 * bounds it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ktp_orig_dst);
} ktp_app_dst SEC(".maps");

/* The same, on ktproxy's accepted socket, for SO_ORIGINAL_DST: it lives as
 * long as ktproxy holds the connection, whether or not the app has already
 * closed its end. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ktp_orig_dst);
} ktp_conn_dst SEC(".maps");

/* Hand-off from the app's socket to ktproxy's accepted one, keyed by the
 * tuple both see. An entry lives from the app's handshake to ktproxy's end
 * of it (or the app socket's close): a plain hash, not LRU, so that no live
 * entry is ever evicted; an update on a full map fails and is counted.
 * Sized by the loader (--max-conns) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ktp_tuple);
	__type(value, struct ktp_orig_dst);
} ktp_handoff SEC(".maps");
#endif /* KTP_NO_CONN_MAPS: the gateway's TC program keeps no per-socket state */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KTP_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ktp_counters SEC(".maps");

/* Routing rules, in two generations: the hooks read the one that
 * ktp_route_gen (sock_route.h) names, and a reload fills the other before
 * switching, so that a connect sees the old rules or the new ones, never a
 * mix or an empty set. Empty means "the default action for everything". */
struct ktp_routes_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ktp_lpm_key);
	__type(value, struct ktp_route_set);
};
struct ktp_routes_map ktp_routes_0 SEC(".maps");
struct ktp_routes_map ktp_routes_1 SEC(".maps");

static __always_inline void ktp_count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&ktp_counters, &which);
	if (v)
		*v += 1;
}

#endif
