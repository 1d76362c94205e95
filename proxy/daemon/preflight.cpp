// Privilege and limit checks.
#include "daemon/preflight.h"

#include "base/error.h"
#include "base/log.h"

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#ifndef CAP_BPF
#define CAP_BPF 39
#endif
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif

namespace ktp {

Caps read_caps()
{
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2]{};
    Caps c;
    if (syscall(SYS_capget, &hdr, d) != 0)
        return c;
    auto has = [&](int cap) { return ((d[cap / 32].effective >> (cap % 32)) & 1u) != 0; };
    c.sys_admin = has(CAP_SYS_ADMIN);
    c.net_admin = has(CAP_NET_ADMIN);
    c.bpf = has(CAP_BPF);
    c.perfmon = has(CAP_PERFMON);
    c.sys_resource = has(CAP_SYS_RESOURCE);
    return c;
}

void require_privileges()
{
    if (!read_caps().can_load())
        fail("needs root (CAP_SYS_ADMIN, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON) to load BPF hooks; run with sudo");
}

void raise_fd_limit()
{
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    // As root the hard limit itself can go up to fs.nr_open; aim for 1M fds
    // (two per connection), and settle for the hard limit otherwise.
    rlim_t want = 1u << 20;
    if (std::ifstream f("/proc/sys/fs/nr_open"); f) {
        rlim_t nr_open = 0;
        if (f >> nr_open && nr_open > 0)
            want = std::min(want, nr_open);
    }
    if (rl.rlim_cur >= want)
        return;
    rlimit up{want, std::max(want, rl.rlim_max)};
    if (setrlimit(RLIMIT_NOFILE, &up) == 0)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log::warn("raise RLIMIT_NOFILE to {}: {}", rl.rlim_max, errno_text(errno));
}

}  // namespace ktp
