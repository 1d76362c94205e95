// Ring-buffer relay: buffer-select recv, send from the held buffer (or a
// spill chunk, or the setup chunk being replayed).
#include "relay/buffer_engine.h"

#include "relay/driver.h"

#include <sys/socket.h>

#include <cstring>

namespace ktp {

namespace {
constexpr uint16_t kBufGroup = 1;
}

BufferEngine::BufferEngine(RelayDriver& driver, const LoopConfig& cfg)
    : driver_(driver), buffers_(cfg.buffers), buffer_size_(cfg.buffer_size),
      bufs_(std::make_unique<BufRing>(driver.ring().raw(), kBufGroup, cfg.buffers, cfg.buffer_size))
{
}

bool BufferEngine::adopt(Conn&, uint32_t, uint32_t)
{
    // Bytes to replay are sent straight from their setup chunks.
    return true;
}

uint32_t BufferEngine::held_by_stalls() const
{
    return bufs_->in_use();
}

void BufferEngine::recv(Conn& c, Dir d)
{
    // No buffer is named: the kernel picks one from the ring when data is
    // there, so a connection waiting for data holds no memory.
    io_uring_sqe* s = driver_.ring().sqe();
    Conn::Sock from = c.src(d);
    io_uring_prep_recv(s, from.fd, nullptr, buffer_size_, 0);
    on(s, from);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kBufGroup;
    io_uring_sqe_set_data64(s, pack(&c, kRecv, d));
    ++c.inflight;
}

void BufferEngine::on_recv(Conn& c, Dir d, int res, uint32_t flags)
{
    // A linked recv cancelled because its send stopped short (or failed)
    // reaches the Relay as a recv it is not waiting for, and is dropped
    // there: the rest of the chunk goes first, then an ordinary recv.
    c.prearmed[idx(d)] = false;
    if (flags & IORING_CQE_F_BUFFER) {
        c.held[idx(d)] = static_cast<int32_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        bufs_->taken();
    }
    if (c.aborting)
        return driver_.maybe_release(c);
    if (res == -ENOBUFS) {
        // Every buffer is in flight elsewhere: wait for one to come back
        // instead of failing (bounded memory, not dropped connections).
        waiting_.push(c, d);
        return;
    }
    driver_.received(c, d, res);
}

void BufferEngine::send(Conn& c, const Op& op)
{
    const int i = idx(op.dir);
    int flags = MSG_NOSIGNAL;
    // The first try of a chunk from a ring buffer, or of the client bytes
    // read during setup (TcpSetup::peek) replayed from their setup chunk.
    const bool from_setup = c.held[i] < 0 && !c.spill[i] && c.setup[i];
    const bool first_try = c.tries[i] == 0 && (c.held[i] >= 0 || from_setup);
    if (from_setup)
        c.tries[i] = 1;
    if (c.held[i] >= 0) {
        char* ring = bufs_->addr(static_cast<uint16_t>(c.held[i]));
        if (c.tries[i] == 0) {
            // First try. A send that finds its destination full waits in
            // the kernel, holding the buffer, without a word to us: allowed
            // while fewer than half the ring's buffers are in use, so such
            // silent waiters are always fewer than half of it, and bulk
            // transfers on a ring with room run exactly as they always did.
            // Past that, the send must not wait (MSG_DONTWAIT): a full
            // destination answers at once (-EAGAIN, or fewer bytes), and
            // the next try decides whether to hold or spill.
            c.tries[i] = 1;
            if (bufs_->in_use() >= buffers_ / 2)
                flags |= MSG_DONTWAIT;
        } else if (!driver_.may_hold(c, op.dir)) {
            ChunkPool& spills = driver_.spills();
            char* spill = op.offset + op.len <= spills.bytes() ? spills.take() : nullptr;
            if (spill) {
                std::memcpy(spill + op.offset, ring + op.offset, op.len);
                c.spill[i] = spill;
                release(c, op.dir);
            } else {
                driver_.hold_anyway(c, op.dir);
            }
        }
    }
    char* base = c.spill[i]          ? c.spill[i]
                 : c.held[i] >= 0    ? bufs_->addr(static_cast<uint16_t>(c.held[i]))
                                     : c.setup[i];
    // A chunk shorter than a buffer is a message, and the direction's next
    // read (the reply's turn, or the EOF) waits behind it: on its first
    // try from a ring buffer, that recv goes in now, linked after the send,
    // and the submitting io_uring_enter waits for two completions
    // (Ring::note_quiet): with one connection at a time, the send's own
    // completion would otherwise wake the loop only to enter again and
    // sleep (docs/performance.md, issue 19). The send never waits in the
    // kernel (MSG_DONTWAIT): it completes inside that enter whatever the
    // destination does, so the wait for two is a wait for one real
    // completion and holds none back. It must send all (MSG_WAITALL):
    // fewer bytes or -EAGAIN cancel the recv, and the rest goes again as an
    // ordinary send (tries is 1 now: the rules above decide). Not for full
    // buffers (bulk), not where the direction moves to splice before its
    // next read, and not while a linked recv's completion is still to come
    // (at most one in flight, so its completion is never taken for
    // another's).
    const bool link = first_try && !c.prearmed[i] && op.len < buffer_size_ &&
                      driver_.stays_on_buffers(c, op.dir, op.len);
    if (!link)
        return driver_.send_bytes(c, op.dir, base + op.offset, op.len, flags);
    driver_.ring().reserve(2);  // the pair in one submission
    driver_.send_bytes(c, op.dir, base + op.offset, op.len, flags | MSG_DONTWAIT | MSG_WAITALL, true);
    driver_.ring().note_quiet();
    recv(c, op.dir);
    c.prearmed[i] = true;
}

void BufferEngine::on_send(Conn& c, Dir d, int res)
{
    driver_.sent(c, d, res);
}

void BufferEngine::release(Conn& c, Dir d)
{
    if (c.held[idx(d)] < 0)
        return;
    bufs_->recycle(static_cast<uint16_t>(c.held[idx(d)]));
    c.held[idx(d)] = -1;
    // One buffer back: one connection waiting for one may read again.
    Conn* w;
    Dir wd;
    if (waiting_.pop(w, wd))
        recv(*w, wd);
}

}  // namespace ktp
