// Checks made before touching the kernel, each failing with one clear line:
// privileges, and process limits raised to what a proxy needs.
#pragma once

namespace ktp {

// Throws Error unless the process can load BPF and attach to cgroups
// (CAP_SYS_ADMIN, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON).
void require_privileges();

// Raises RLIMIT_NOFILE to its hard limit: every connection costs two fds.
void raise_fd_limit();

}  // namespace ktp
