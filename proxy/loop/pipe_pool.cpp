#include "loop/pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ktp {

Pipe PipePool::take()
{
    if (!free_.empty()) {
        Pipe p = std::move(free_.back());
        free_.pop_back();
        ++out_;
        return p;
    }
    if (out_ >= limit_) {
        errno = ENOBUFS;
        return {};
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return {};
    Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1])};
    count_fds(2);
    // The default (16 pages) already fits a 64 KiB chunk; larger relay
    // buffers ask for more. A refusal (over /proc/sys/fs/pipe-max-size, or
    // a user over its pipe quota) only means smaller chunks through this pipe.
    if (capacity_ > 65536)
        ::fcntl(p.w.get(), F_SETPIPE_SZ, static_cast<int>(capacity_));
    int got = ::fcntl(p.w.get(), F_GETPIPE_SZ);
    p.capacity = got > 0 ? std::min(static_cast<uint32_t>(got), capacity_) : 4096;
    ++out_;
    return p;
}

void PipePool::give(Pipe& p, bool empty)
{
    if (!p)
        return;
    --out_;
    if (empty && free_.size() < kKept)
        free_.push_back(std::move(p));
    else
        count_fds(-2);
    p = Pipe{};
}

PipePool::~PipePool()
{
    count_fds(-2 * static_cast<int64_t>(free_.size()));
}

void PipePool::count_fds(int64_t delta)
{
    if (fd_count_)
        fd_count_->fetch_add(delta, std::memory_order_relaxed);
}

}  // namespace ktp
