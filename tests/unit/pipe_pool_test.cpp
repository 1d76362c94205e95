// PipePool: the bound on pipes out, reuse of empty pipes, and that a pipe
// with bytes in it is never handed to another connection.
#include "loop/pipe_pool.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

using ktp::Pipe;
using ktp::PipePool;

TEST_CASE("pipe pool: at most `limit` pipes out, then ENOBUFS until one is given back")
{
    PipePool pool(4, 65536);
    std::vector<Pipe> out;
    for (int i = 0; i < 4; ++i) {
        out.push_back(pool.take());
        REQUIRE(out.back());
        CHECK(out.back().capacity == 65536);
    }
    CHECK(pool.out() == 4);
    errno = 0;
    Pipe none = pool.take();
    CHECK_FALSE(none);
    CHECK(errno == ENOBUFS);

    pool.give(out[0], true);
    CHECK_FALSE(out[0]);
    CHECK(pool.out() == 3);
    CHECK(pool.pooled() == 1);
    Pipe again = pool.take();
    CHECK(again);
    CHECK(pool.pooled() == 0);
}

TEST_CASE("pipe pool: an empty pipe is reused, one holding bytes is closed")
{
    PipePool pool(8, 65536);
    Pipe a = pool.take();
    REQUIRE(a);
    int a_read_fd = a.r.get();
    pool.give(a, true);
    Pipe b = pool.take();
    CHECK(b.r.get() == a_read_fd);  // the same pipe came back

    REQUIRE(::write(b.w.get(), "left over", 9) == 9);
    int b_read_fd = b.r.get();
    pool.give(b, false);
    CHECK(pool.pooled() == 0);
    CHECK(pool.out() == 0);
    // Closed: the fd is no longer open (or has been reused by something else
    // that is not this pipe; nothing else opens fds in this test).
    CHECK(::fcntl(b_read_fd, F_GETFD) == -1);

    Pipe c = pool.take();
    REQUIRE(c);
    char buf[16];
    CHECK(::read(c.r.get(), buf, sizeof(buf)) == -1);  // empty (and non-blocking)
    CHECK(errno == EAGAIN);
}

TEST_CASE("pipe pool: larger relay buffers ask the kernel for larger pipes")
{
    PipePool pool(2, 256 * 1024);
    Pipe p = pool.take();
    REQUIRE(p);
    // Granted in full to root; an unprivileged user may get less, never more.
    CHECK(p.capacity <= 256 * 1024);
    CHECK(p.capacity >= 4096);
    CHECK(::fcntl(p.w.get(), F_GETPIPE_SZ) >= static_cast<int>(p.capacity));
}

TEST_CASE("pipe pool: no more than a few dozen empty pipes are kept")
{
    PipePool pool(1000, 65536);
    std::vector<Pipe> out;
    for (int i = 0; i < 100; ++i) {
        out.push_back(pool.take());
        REQUIRE(out.back());
    }
    for (auto& p : out)
        pool.give(p, true);
    CHECK(pool.out() == 0);
    CHECK(pool.pooled() <= 64);
    CHECK(pool.pooled() > 0);
}
