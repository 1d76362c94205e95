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

namespace {
bool has_cap(const __user_cap_data_struct (&d)[2], int cap)
{
    return (d[cap / 32].effective >> (cap % 32)) & 1u;
}
}  // namespace

void require_privileges()
{
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (syscall(SYS_capget, &hdr, data) != 0)
        fail_errno("read process capabilities");
    bool ok = has_cap(data, CAP_SYS_ADMIN) ||
              (has_cap(data, CAP_BPF) && has_cap(data, CAP_NET_ADMIN) && has_cap(data, CAP_PERFMON));
    if (!ok)
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
