/* --cgroup-match: the connect hooks sit on a parent cgroup, and only the
 * cgroups below it that match a pattern are intercepted. Map ktp_cgroups:
 * key = cgroup id (__u64, the cgroup2 directory's inode), value = __u8 1.
 * Owner: the daemon (CgroupMatch::sync(), proxy/daemon/cgroup_match.cpp)
 * adds a matching cgroup (and each one below it) when its scan of the tree
 * sees it, and deletes the entry when the directory is gone. */
#ifndef KTPROXY_SOCK_CGMATCH_H
#define KTPROXY_SOCK_CGMATCH_H

const volatile __u8 ktp_cgroup_filter = 0;  /* 1 with --cgroup-match */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} ktp_cgroups SEC(".maps");

/* Is the connecting process's cgroup left out by --cgroup-match? */
static __always_inline int ktp_cgroup_unmatched(void)
{
	__u64 id;

	if (!ktp_cgroup_filter)
		return 0;
	id = bpf_get_current_cgroup_id();
	return !bpf_map_lookup_elem(&ktp_cgroups, &id);
}

#endif
