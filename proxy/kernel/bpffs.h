// The BPF filesystem that --fail-closed pins its hooks and maps in.
#pragma once

namespace ktp {

// Makes sure `dir` is a bpffs mount, mounting one there if it is not: a
// minimal or container host (and a fresh CI machine) boots without
// systemd's /sys/fs/bpf mount, and pinning would fail with a bare ENOENT.
// private_sysfs: this process found /sys without any cgroup mount and
// mounted the hierarchy itself (cgroup2_mounted_here()), i.e. /sys belongs
// to a mount namespace that dies with ktproxy, and so would a bpffs mounted
// in it: refused. Throws Error naming the directory and the reason.
void ensure_bpffs(const char* dir, bool private_sysfs);

}  // namespace ktp
