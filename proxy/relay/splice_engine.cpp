// Splice relay: readiness polls through io_uring, splice(2) inline.
#include "relay/splice_engine.h"

#include "base/error.h"
#include "loop/fixed_files.h"
#include "relay/driver.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace ktp {

SpliceEngine::SpliceEngine(RelayDriver& driver, uint32_t pipes, uint32_t pipe_bytes)
    : driver_(driver), pipes_(pipes, pipe_bytes, &FixedFiles::conn_fds)
{
}

bool SpliceEngine::adopt(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c)
{
    if (c.slot[0] >= 0 || c.slot[1] >= 0)
        return false;
    if (pending_c2u == 0 && pending_u2c == 0)
        return true;
    const uint32_t pending[2] = {pending_c2u, pending_u2c};
    bool ok = true;
    for (int i = 0; i < 2 && ok; ++i) {
        if (pending[i] == 0)
            continue;
        c.pipe[i] = pipes_.take();
        ok = c.pipe[i] && c.pipe[i].capacity >= pending[i];
    }
    for (int i = 0; i < 2 && ok; ++i) {
        if (pending[i] == 0)
            continue;
        // An empty pipe with room for all of it takes it in one write.
        ssize_t n = ::write(c.pipe[i].w.get(), c.setup[i], pending[i]);
        c.piped[i] = n > 0 ? static_cast<uint32_t>(n) : 0;
        ok = n == static_cast<ssize_t>(pending[i]);
    }
    if (!ok) {
        // A pipe that took part of the bytes is closed, never pooled: the
        // next connection to take it would send them on.
        for (int i = 0; i < 2; ++i) {
            if (c.pipe[i]) {
                pipes_.give(c.pipe[i], c.piped[i] == 0);
                wake_one();
            }
            c.piped[i] = 0;
        }
        return false;
    }
    for (int i = 0; i < 2; ++i)
        if (pending[i] > 0)
            driver_.release_setup_chunk(c, static_cast<Dir>(i));
    return true;
}

void SpliceEngine::recv(Conn& c, Dir d)
{
    // Wait for readability; the splice itself is a plain syscall once data
    // is there (io_uring would run it on a worker thread). POLLPRI: urgent
    // data is pending, which splice cannot pass (see recv_past_mark); the
    // completion's mask tells on_recv. At the mark it is needed: POLLIN then
    // waits for a byte beyond the urgent one.
    io_uring_sqe* s = driver_.ring().sqe();
    io_uring_prep_poll_add(s, c.src(d).fd, c.urg_quiet[idx(d)] ? POLLIN : POLLIN | POLLPRI);
    io_uring_sqe_set_data64(s, pack(&c, kRecv, d));
    ++c.inflight;
}

ssize_t SpliceEngine::recv_past_mark(int fd, Pipe& p)
{
    // splice(2) stops at TCP urgent data (a byte sent with MSG_OOB) and never
    // moves past it: it answers EAGAIN while bytes wait behind the mark,
    // with poll saying readable (a busy loop), or 0 once the peer has also
    // closed, which would pass for EOF and drop those bytes. recv(2) steps
    // over the urgent byte, as for any reader without SO_OOBINLINE (the ring
    // relay drops it the same way), so the bytes behind the mark go through
    // user space, once. Only called when the poll reported POLLPRI (urgent
    // byte not yet passed): a plain EOF or spurious wake-up costs nothing.
    // Passing the byte clears POLLPRI, so this cannot loop either.
    char buf[16384];
    ssize_t n = ::recv(fd, buf, std::min<size_t>(sizeof buf, p.capacity), MSG_DONTWAIT);
    if (n <= 0)
        return n;
    // The pipe is empty (a direction reads only once its last chunk is out).
    ssize_t w = ::write(p.w.get(), buf, static_cast<size_t>(n));
    if (w == n)
        return n;
    // The bytes are out of the socket: whatever the reason, the stream
    // cannot go on without them (never EAGAIN, which would drop them).
    errno = EIO;
    return -1;
}

void SpliceEngine::on_recv(Conn& c, Dir d, int res, uint32_t)
{
    if (c.aborting)
        return driver_.maybe_release(c);
    if (res < 0) {
        driver_.note_error(c, idx(d), res);
        return driver_.apply(c, c.relay.on_recv(d, res));
    }
    Pipe& p = c.pipe[idx(d)];
    if (!p) {
        p = pipes_.take();
        if (!p) {
            // Every pipe is carrying bytes elsewhere, or the fds are used up
            // while some are: wait for one to come back. Out of fds with no
            // pipe out, nothing would ever wake this connection.
            int err = errno;
            bool wait = err == ENOBUFS || ((err == EMFILE || err == ENFILE) && pipes_.out() > 0);
            if (!wait)
                return driver_.fail(c, End::error, fmt::format("pipe for the splice relay: {}", errno_text(err)));
            waiting_.push(c, d);
            return;
        }
    }
    ssize_t n = ::splice(c.src(d).fd, nullptr, p.w.get(), nullptr, p.capacity, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    // Past the mark with recv: when the poll saw urgent data, or said
    // readable while splice found nothing (which is the mark, once POLLPRI is
    // quiet). A plain EOF (0 without POLLPRI) costs no extra syscall.
    if ((n == 0 && (res & POLLPRI)) || (n < 0 && errno == EAGAIN))
        n = recv_past_mark(c.src(d).fd, p);
    // Urgent data the kernel took from a segment beyond a gap keeps POLLPRI
    // up while nothing is readable: polling for it again would complete at
    // once, forever. Wait for POLLIN alone until a read makes progress.
    const bool nothing = n < 0 && errno == EAGAIN;
    c.urg_quiet[idx(d)] = nothing && (res & POLLPRI);
    if (nothing) {
        // Readable a moment ago, nothing now: wait again, without the pipe.
        driver_.release(c, d);
        return recv(c, d);
    }
    int r = n >= 0 ? static_cast<int>(n) : -errno;
    if (r > 0)
        c.piped[idx(d)] = static_cast<uint32_t>(r);
    else
        driver_.release(c, d);
    driver_.received(c, d, r);
}

void SpliceEngine::send(Conn& c, const Op& op)
{
    // A direction whose bytes moved to a spill chunk sends them from there.
    if (char* spill = c.spill[idx(op.dir)])
        return driver_.send_bytes(c, op.dir, spill + op.offset, op.len, MSG_NOSIGNAL);
    send_now(c, op.dir, op.offset, op.len);
}

void SpliceEngine::on_send(Conn& c, Dir d, int res)
{
    if (!c.spill[idx(d)] && res >= 0)  // that was the POLLOUT wait: send now
        return send_now(c, d, c.splice_offset[idx(d)], c.splice_len[idx(d)]);
    driver_.sent(c, d, res);
}

void SpliceEngine::send_now(Conn& c, Dir d, uint32_t offset, uint32_t len)
{
    const int i = idx(d);
    ssize_t n = ::splice(c.pipe[i].r.get(), nullptr, c.dst(d).fd, nullptr, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n < 0 && errno == EAGAIN) {
        // The destination's send buffer is full: this direction reads
        // nothing more until these bytes are out (backpressure). They stay
        // in the pipe while few directions are stalled; past the stall cap
        // they move to a spill chunk and the pipe goes back to the pool.
        if (!driver_.may_hold(c, d)) {
            ChunkPool& spills = driver_.spills();
            char* spill = offset + len <= spills.bytes() && c.piped[i] == len ? spills.take() : nullptr;
            if (spill) {
                ssize_t got = ::read(c.pipe[i].r.get(), spill + offset, len);
                if (got != static_cast<ssize_t>(len)) {
                    // Bytes out of the pipe but not all of them: the
                    // stream cannot go on.
                    spills.give(spill);
                    return driver_.apply(c, c.relay.on_send(d, -EIO));
                }
                c.spill[i] = spill;
                c.piped[i] = 0;
                pipes_.give(c.pipe[i], true);
                wake_one();
                return send(c, Op{Op::send, d, offset, len});
            }
            driver_.hold_anyway(c, d);  // no memory for a spill chunk: wait with the pipe
        }
        c.splice_len[i] = len;
        c.splice_offset[i] = offset;
        io_uring_sqe* s = driver_.ring().sqe();
        io_uring_prep_poll_add(s, c.dst(d).fd, POLLOUT);
        io_uring_sqe_set_data64(s, pack(&c, kSend, d));
        ++c.inflight;
        return;
    }
    int r = n > 0 ? static_cast<int>(n) : n == 0 ? -EPIPE : -errno;
    if (r > 0)
        c.piped[i] -= static_cast<uint32_t>(r);
    else
        driver_.note_error(c, idx(other(d)), r);
    driver_.apply(c, c.relay.on_send(d, r));
}

void SpliceEngine::release(Conn& c, Dir d)
{
    if (!c.pipe[idx(d)])
        return;
    pipes_.give(c.pipe[idx(d)], c.piped[idx(d)] == 0);
    c.piped[idx(d)] = 0;
    wake_one();
}

void SpliceEngine::wake_one()
{
    // One pipe back: one connection waiting for one may read again.
    Conn* w;
    Dir wd;
    if (waiting_.pop(w, wd))
        recv(*w, wd);
}

}  // namespace ktp
