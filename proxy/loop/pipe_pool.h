// Pipes for the splice relay (--relay splice). A direction of a connection
// holds a pipe only while bytes sit in it, so idle connections cost no pipe;
// at most `limit` pipes exist per worker, which bounds the kernel memory the
// relay can pin whatever the number of connections (the splice counterpart
// of the buffer ring's --buffers).
#pragma once

#include "base/unique_fd.h"

#include <atomic>
#include <cstdint>
#include <vector>

namespace ktp {

struct Pipe {
    UniqueFd r, w;
    uint32_t capacity = 0;  // what the kernel granted, which may be less than asked
    explicit operator bool() const { return bool(r); }
};

class PipePool {
public:
    // capacity: bytes each pipe should hold (F_SETPIPE_SZ; the kernel rounds
    // up to pages, and may grant less to a user over its pipe quota).
    // fd_count, when given, is kept equal to the descriptors this pool's
    // pipes hold (two per pipe, pooled or out): the process-wide count that
    // decides when connections move to io_uring's fixed-file table.
    PipePool(uint32_t limit, uint32_t capacity, std::atomic<int64_t>* fd_count = nullptr)
        : limit_(limit), capacity_(capacity), fd_count_(fd_count) {}
    ~PipePool();
    PipePool(const PipePool&) = delete;
    PipePool& operator=(const PipePool&) = delete;

    // A pipe, or an empty one when `limit` pipes are out or the process has
    // no descriptors left (errno says which); the caller waits for give().
    Pipe take();
    // Back to the pool: the pipe must be empty. A pipe with bytes still in it
    // (a connection cut mid-chunk) is closed instead, and its bytes dropped
    // with the connection they belonged to.
    void give(Pipe& p, bool empty);

    uint32_t out() const { return out_; }
    size_t pooled() const { return free_.size(); }

private:
    void count_fds(int64_t delta);

    uint32_t limit_;
    uint32_t capacity_;
    std::atomic<int64_t>* fd_count_;
    uint32_t out_ = 0;  // pipes held by connections
    // Empty pipes kept for reuse, beyond which they are closed: each costs
    // two fds, and the fds are what limits the connections a process holds.
    static constexpr size_t kKept = 64;
    std::vector<Pipe> free_;
};

}  // namespace ktp
