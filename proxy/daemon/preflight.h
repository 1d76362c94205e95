// Checks made before touching the kernel, each failing with one clear line:
// privileges, and process limits raised to what a proxy needs.
#pragma once

namespace ktp {

// The effective capabilities ktproxy cares about (all false if unreadable).
struct Caps {
    bool sys_admin = false, net_admin = false, bpf = false, perfmon = false, sys_resource = false;
    // Enough to load BPF programs and attach them to cgroups.
    bool can_load() const { return sys_admin || (bpf && net_admin && perfmon); }
};
Caps read_caps();

// Throws Error unless the process can load BPF and attach to cgroups
// (CAP_SYS_ADMIN, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON).
void require_privileges();

// Raises RLIMIT_NOFILE to its hard limit: every connection costs two fds.
void raise_fd_limit();

}  // namespace ktp
