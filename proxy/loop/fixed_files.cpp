// The fixed-file table: slots, the fd budget, resets through uring_cmd.
#include "loop/fixed_files.h"

#include "base/error.h"
#include "base/log.h"
#include "loop/sock_cmd.h"

#include <sys/resource.h>

#include <algorithm>

namespace ktp {

std::atomic<int64_t> FixedFiles::conn_fds{0};

FixedFiles::FixedFiles(Ring& ring) : ring_(ring)
{
    // The fixed-file table may be as large as RLIMIT_NOFILE, per ring.
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    unsigned slots = static_cast<unsigned>(std::min<rlim_t>(rl.rlim_cur, 1u << 16));
    if (slots >= 64 && io_uring_register_files_sparse(&ring_.raw(), slots) == 0) {
        free_.reserve(slots);
        for (unsigned i = slots; i > 0; --i)
            free_.push_back(static_cast<int32_t>(i - 1));
        total_ = slots;
        // Past half of the fd limit, relayed connections go to the table.
        budget_ = static_cast<int64_t>(rl.rlim_cur / 2);
    } else {
        log::warn("io_uring fixed files unavailable: relayed connections use ordinary fds");
    }
}

bool FixedFiles::move_in(UniqueFd& fd, int32_t& slot)
{
    if (slot >= 0 || !fd || free_.empty())
        return false;
    int32_t s = free_.back();
    int raw = fd.get();
    if (io_uring_register_files_update(&ring_.raw(), static_cast<unsigned>(s), &raw, 1) != 1)
        return false;
    free_.pop_back();
    slot = s;
    fd.reset();
    closed();
    return true;
}

void FixedFiles::clear(int32_t& slot)
{
    if (slot < 0)
        return;
    int none = -1;
    io_uring_register_files_update(&ring_.raw(), static_cast<unsigned>(slot), &none, 1);
    free_.push_back(slot);
    slot = -1;
}

void FixedFiles::prep_reset(io_uring_sqe* s, int32_t slot, const linger* rst) const
{
    prep_setsockopt(s, slot, true, SOL_SOCKET, SO_LINGER, rst, sizeof(*rst));
}

void FixedFiles::reset_failed(int err)
{
    if (!linger_cmd_)
        return;
    // Kernel without socket uring_cmd: closes stay graceful.
    linger_cmd_ = false;
    log::warn("io_uring socket setsockopt unavailable ({}): resets are passed on as EOF", errno_text(err));
}

}  // namespace ktp
