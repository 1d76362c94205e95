// A worker ring's fixed-file table, and the process-wide count of ordinary
// fds held by connections that decides when sockets move into it.
#pragma once

#include "base/unique_fd.h"
#include "loop/ring.h"

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace ktp {

class FixedFiles {
public:
    // Registers a sparse table of min(RLIMIT_NOFILE, 65536) slots, or none
    // (with a warning) if that is under 64 or the kernel refuses.
    explicit FixedFiles(Ring& ring);
    FixedFiles(const FixedFiles&) = delete;
    FixedFiles& operator=(const FixedFiles&) = delete;

    // Ordinary fds held by connections (and the splice relay's pipes),
    // across all workers of the process: they share one RLIMIT_NOFILE.
    static std::atomic<int64_t> conn_fds;
    static void opened(int64_t n = 1) { conn_fds.fetch_add(n, std::memory_order_relaxed); }
    static void closed(int64_t n = 1) { conn_fds.fetch_sub(n, std::memory_order_relaxed); }
    // Past half of the fd limit, connections go to the table.
    bool over_budget() const { return conn_fds.load(std::memory_order_relaxed) >= budget_; }

    // Installs fd in a free slot and closes the ordinary fd (the table holds
    // its own reference). False when the table is full or refuses it: the
    // socket keeps its ordinary fd.
    bool move_in(UniqueFd& fd, int32_t& slot);
    // Drops the table's reference, which closes the socket (with an RST if
    // SO_LINGER {1,0} was set), exactly like close() on an ordinary fd.
    void clear(int32_t& slot);
    size_t in_use() const { return total_ - free_.size(); }

    // SO_LINGER {1,0} on a fixed socket through io_uring (Linux >= 6.7):
    // whether it works here, as far as we know.
    bool can_reset() const { return linger_cmd_; }
    void prep_reset(io_uring_sqe* s, int32_t slot, const linger* rst) const;
    // The kernel refused it: warns once; resets on fixed sockets then close
    // gracefully.
    void reset_failed(int err);

private:
    Ring& ring_;
    std::vector<int32_t> free_;  // slots not in use
    size_t total_ = 0;
    int64_t budget_ = 0;         // process-wide connection fds before using the table
    bool linger_cmd_ = true;     // socket setsockopt via uring_cmd works
};

}  // namespace ktp
