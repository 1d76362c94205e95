// The worker's io_uring: setup flags, the disabled-then-enabled dance,
// submission and the wake/timer requests.
#include "loop/ring.h"

#include "base/error.h"
#include "loop/uring_ops.h"

#include <sys/eventfd.h>
#include <cerrno>
#include <cmath>
#include <utility>
#include <vector>
#include <sys/syscall.h>
#include <unistd.h>

namespace ktp {

__kernel_timespec to_timespec(double seconds)
{
    double whole = std::floor(seconds);
    __kernel_timespec ts{};
    ts.tv_sec = static_cast<long long>(whole);
    ts.tv_nsec = static_cast<long long>((seconds - whole) * 1e9);
    return ts;
}

Ring::Ring()
{
    io_uring_params p{};
    // SINGLE_ISSUER + DEFER_TASKRUN: only this thread submits, and completions
    // are processed when we wait, not by interrupting us (fewer context switches).
    // CQSIZE: room for a burst of completions from thousands of connections.
    // R_DISABLED: the ring is built here, on the main thread, so that setup
    // errors surface before "ready"; the worker thread enables it in run()
    // and so becomes its single issuer.
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
    p.cq_entries = 16384;
    int err = io_uring_queue_init_params(4096, &ring_, &p);
    if (err == -EINVAL) {
        p = {};
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
        p.cq_entries = 16384;
        err = io_uring_queue_init_params(4096, &ring_, &p);
    }
    if (err < 0)
        fail("create io_uring: {} (needs Linux >= 5.19 with io_uring enabled)", errno_text(-err));
    live_ = true;
    wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC));
    if (!wake_fd_) {
        int err = errno;
        exit();
        errno = err;
        fail_errno("eventfd");
    }
}

Ring::~Ring()
{
    exit();
}

void Ring::exit()
{
    if (std::exchange(live_, false))
        io_uring_queue_exit(&ring_);
}

void Ring::restrict()
{
    if (!(ring_.flags & IORING_SETUP_R_DISABLED) || restricted_)
        return;
    // Only the opcodes and register operations of loop/uring_ops.h, and
    // any SQE flag (the restriction is on what a request does).
    std::vector<io_uring_restriction> r;
    for (uint8_t op : kRingOpcodes) {
        io_uring_restriction x{};
        x.opcode = IORING_RESTRICTION_SQE_OP;
        x.sqe_op = op;
        r.push_back(x);
    }
    for (uint8_t op : kRingRegisterOps) {
        io_uring_restriction x{};
        x.opcode = IORING_RESTRICTION_REGISTER_OP;
        x.register_op = op;
        r.push_back(x);
    }
    io_uring_restriction flags{};
    flags.opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    flags.sqe_flags = IOSQE_FIXED_FILE | IOSQE_IO_DRAIN | IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_ASYNC |
                      IOSQE_BUFFER_SELECT | IOSQE_CQE_SKIP_SUCCESS;
    r.push_back(flags);
    // liburing 2.3 has no wrapper for this one.
    if (syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_RESTRICTIONS, r.data(), r.size()) != 0)
        fail_errno("restrict io_uring to its opcodes");
    restricted_ = true;
}

void Ring::enable()
{
    if (ring_.flags & IORING_SETUP_R_DISABLED) {
        restrict();
        if (syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0)
            fail_errno("enable io_uring");
    }
}

int Ring::try_unlisted_op()
{
    io_uring_sqe* s = sqe();
    io_uring_prep_nop(s);
    io_uring_sqe_set_data64(s, 0);
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit(&ring_) < 0 || io_uring_wait_cqe(&ring_, &cqe) != 0)
        return -EIO;
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return res;
}

io_uring_sqe* Ring::sqe()
{
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    if (!s) {
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    if (!s)
        fail("io_uring submission queue full");
    return s;
}

void Ring::reserve(unsigned n)
{
    if (io_uring_sq_space_left(&ring_) < n)
        io_uring_submit(&ring_);
}

void Ring::link_timeout(const __kernel_timespec& ts)
{
    io_uring_sqe* s = sqe();
    io_uring_prep_link_timeout(s, const_cast<__kernel_timespec*>(&ts), 0);
    // Its own completion says nothing the linked request's does not (that
    // one ends with -ECANCELED when the time runs out), and posted after
    // the request's it woke the loop for nothing: one io_uring_enter per
    // connection from one client (issue 19). Kernels that post it anyway
    // reach no one (kIgnore).
    s->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(s, kIgnore);
}

void Ring::submit_and_wait()
{
    int ret = io_uring_submit_and_wait(&ring_, std::exchange(quiet_, false) ? 2 : 1);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
        fail("io_uring_submit_and_wait: {}", errno_text(-ret));
}

void Ring::wake()
{
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
}

void Ring::arm_wake()
{
    io_uring_sqe* s = sqe();
    io_uring_prep_read(s, wake_fd_.get(), &wake_value_, sizeof(wake_value_), 0);
    io_uring_sqe_set_data64(s, pack(&wake_slot_, kWake));
}

void Ring::arm_timer(const __kernel_timespec& every)
{
    io_uring_sqe* s = sqe();
    io_uring_prep_timeout(s, const_cast<__kernel_timespec*>(&every), 0, 0);
    io_uring_sqe_set_data64(s, pack(&timer_slot_, kSweep));
}

}  // namespace ktp
