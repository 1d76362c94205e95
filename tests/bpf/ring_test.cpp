// The workers' rings are restricted on the main thread before any worker
// runs (daemon/workers.cpp): a ring that code in a worker enables itself,
// with the bare io_uring_register call, keeps those restrictions.
#include "loop/ring.h"

#include <catch2/catch.hpp>

#include <cerrno>
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

using namespace ktp;

namespace {

// Enables the ring from another thread without Ring::enable(), then submits
// a request that loop/uring_ops.h does not list; its result.
int enable_elsewhere_and_try(Ring& r)
{
    int res = 0;
    std::thread other([&] {
        if (syscall(__NR_io_uring_register, r.fd(), IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0)
            res = -errno;
        else
            res = r.try_unlisted_op();
    });
    other.join();
    return res;
}

}  // namespace

TEST_CASE("a ring restricted on one thread and enabled by another refuses unlisted requests")
{
    Ring r;
    r.restrict();
    r.restrict();  // once is enough; again is a no-op, not an error
    CHECK(enable_elsewhere_and_try(r) == -EACCES);
}

TEST_CASE("a disabled ring nobody restricted runs anything once enabled (what restrict() closes)")
{
    Ring r;
    CHECK(enable_elsewhere_and_try(r) == 0);
}
