/* --cgroup-match: the connect hooks sit on a parent cgroup, and only the
 * cgroups below it that match a pattern are intercepted. Map ktp_cgroups:
 * key = cgroup id (__u64, the cgroup2 directory's inode), value = __u8 1
 * (intercepted: a match or below one) or 0 (not). Owner: the daemon
 * (CgroupMatch::sync(), proxy/daemon/cgroup_match.cpp) writes every cgroup
 * of the tree when its scan sees it, and deletes the entry when the
 * directory is gone. A cgroup born since the last scan has no entry yet. */
#ifndef KTPROXY_SOCK_CGMATCH_H
#define KTPROXY_SOCK_CGMATCH_H

const volatile __u8 ktp_cgroup_filter = 0;  /* 1 with --cgroup-match */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} ktp_cgroups SEC(".maps");

/* Is the connecting process's cgroup left out by --cgroup-match? One with
 * no entry yet (created since the last scan: a container starting) is left
 * out without --fail-closed; with it (ktp_netns_refuse) the rules apply and
 * what they would send to ktproxy is refused (ktp_cgroup_unscanned): nothing
 * may leave past the rules in that mode, nor may a relay that stopped
 * asking for scans be handed every new cgroup's traffic. The scan that
 * follows within milliseconds says which it is. */
static __always_inline int ktp_cgroup_unmatched(void)
{
	__u8 *in;
	__u64 id;

	if (!ktp_cgroup_filter)
		return 0;
	id = bpf_get_current_cgroup_id();
	in = bpf_map_lookup_elem(&ktp_cgroups, &id);
	if (!in)
		return !ktp_netns_refuse;
	return !*in;
}

/* A connect or datagram about to go to ktproxy from a cgroup no scan has
 * classified (--fail-closed only: else it never gets this far): refused as
 * a dead proxy's would be (ECONNREFUSED), counted. 1 = refused. */
static __always_inline int ktp_cgroup_unscanned(void)
{
	__u64 id;

	if (!ktp_cgroup_filter || !ktp_netns_refuse)
		return 0;
	id = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&ktp_cgroups, &id))
		return 0;
	ktp_count(KTP_CTR_REFUSED_UNSCANNED);
	bpf_set_retval(-KTP_ECONNREFUSED);
	return 1;
}

#endif
