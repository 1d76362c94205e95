// The relay's shared part: engine choice, applying ops, stalled directions,
// aborts, release and the watch after EOF.
#include "relay/driver.h"

#include "base/error.h"
#include "relay/buffer_engine.h"
#include "relay/splice_engine.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>

namespace ktp {

namespace {

uint32_t pipe_bytes(const LoopConfig& cfg)
{
    return std::max<uint32_t>(cfg.buffer_size, 65536);
}

// A spill chunk holds what a pool unit can: a ring buffer, or a pipe (the
// kernel rounds a pipe's size up to a power of two pages).
uint32_t spill_bytes(const LoopConfig& cfg)
{
    if (!cfg.splice)
        return cfg.buffer_size;
    const uint32_t page = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
    return std::max(cfg.buffer_size, std::bit_ceil((pipe_bytes(cfg) + page - 1) / page) * page);
}

// Free spill chunks kept per worker: about a megabyte, for the next stalls.
constexpr size_t kFreeSpillBytesKept = 1024 * 1024;

void close_with_reset(UniqueFd& fd)
{
    if (!fd)
        return;
    // Linger 0 turns close() into an RST, which is how a reset on one side
    // is passed on to the other.
    linger lg{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    fd.reset();
}

}  // namespace

void WaitQueue::push(Conn& c, Dir d)
{
    q_.push_back(Waiter{&c, d, c.gen});
}

bool WaitQueue::pop(Conn*& c, Dir& d)
{
    while (!q_.empty()) {
        Waiter w = q_.front();
        q_.pop_front();
        if (w.c->gen == w.gen && !w.c->aborting && w.c->relaying) {
            c = w.c;
            d = w.d;
            return true;
        }
    }
    return false;
}

RelayDriver::RelayDriver(const LoopConfig& cfg, Ring& ring, FixedFiles& fixed, ConnPool& pool, SetupChunks& chunks,
                         ConnObserver& observer, const std::chrono::steady_clock::time_point& now)
    : ring_(ring), fixed_(fixed), pool_(pool), chunks_(chunks), observer_(observer), now_(now),
      // A quarter of the pool (at least one unit) is never held by a stalled
      // direction.
      stall_cap_(cfg.buffers - std::max<uint32_t>(1, cfg.buffers / 4)), splice_after_(cfg.splice_after),
      spills_(spill_bytes(cfg), kFreeSpillBytesKept / spill_bytes(cfg) + 1)
{
    buffers_ = std::make_unique<BufferEngine>(*this, cfg);
    if (cfg.splice)
        splice_ = std::make_unique<SpliceEngine>(*this, cfg.buffers, pipe_bytes(cfg));
}

RelayDriver::~RelayDriver() = default;

const PipePool* RelayDriver::pipes() const
{
    return splice_ ? &splice_->pipes() : nullptr;
}

void RelayDriver::drop_buffer_ring()
{
    buffers_->drop_buffer_ring();
}

void RelayDriver::start(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c)
{
    c.relaying = true;
    learn_addresses(c);
    to_fixed(c);
    // splice(2) is a plain syscall and needs ordinary fds: a connection moved
    // to the fixed-file table (the process's fds are running short) relays
    // through ring buffers instead, and so does one for whose bytes to
    // replay no pipe is to be had (SpliceEngine::adopt): never a reason to
    // fail it, since the buffers engine replays straight from the setup chunk.
    // Under --relay splice a connection starts on the ring buffers all the
    // same (splice_after_, loop_config.h) and each direction moves to splice
    // once it has carried enough (pick_engine).
    RelayEngine* e = nullptr;
    if (splice_ && splice_after_ == 0 && splice_->adopt(c, pending_c2u, pending_u2c))
        e = splice_.get();
    else if (buffers_->adopt(c, pending_c2u, pending_u2c))
        e = buffers_.get();
    c.engine[0] = c.engine[1] = e;
    // A direction with nothing to replay gives its setup chunk back now.
    if (pending_c2u == 0)
        chunks_.give(c.setup[idx(Dir::ClientToUpstream)], Dir::ClientToUpstream);
    if (pending_u2c == 0)
        chunks_.give(c.setup[idx(Dir::UpstreamToClient)], Dir::UpstreamToClient);
    apply(c, c.relay.start(pending_c2u, pending_u2c));
}

void RelayDriver::to_fixed(Conn& c)
{
    // Ordinary fds are cheaper to work with (shutdown is a plain syscall;
    // through io_uring it is always handed to a worker thread), so a
    // connection moves to the fixed table only when the process's fds run
    // short. A client socket already moved at accept (TcpSetup) rules out
    // splice: the upstream's goes too, whatever the count is by now.
    if (c.slot[0] < 0 && !fixed_.over_budget())
        return;
    fixed_.move_in(c.fd[0], c.slot[0]);
    fixed_.move_in(c.fd[1], c.slot[1]);
}

void RelayDriver::on_completion(const Completion& cq)
{
    Conn& c = *static_cast<Conn*>(cq.obj);
    const Dir dir = cq.dir;
    const int res = cq.res;
    if (cq.tag == kWatch && (cq.flags & IORING_CQE_F_MORE)) {
        // An interim report of the multishot watch: it stays armed.
        if (res > 0 && (res & POLLERR) && !c.aborting && !c.closing)
            fail(c, End::reset, "peer reset after its EOF");
        return;
    }
    --c.inflight;
    c.last_active = now_;
    switch (cq.tag) {
    case kRecv:
        c.engine[idx(dir)]->on_recv(c, dir, res, cq.flags);
        break;
    case kSend:
        if (c.aborting)
            return maybe_release(c);
        c.engine[idx(dir)]->on_send(c, dir, res);
        break;
    case kShutdown:
        if (c.aborting)
            return maybe_release(c);
        if (res < 0 && res != -EAGAIN)
            note_error(c, idx(other(dir)), res);
        apply(c, c.relay.on_shutdown(dir, res));
        break;
    case kWatch:  // the watch's last report
        c.watching[idx(dir)] = false;
        if (!c.aborting && !c.closing && res > 0 && (res & POLLERR))
            fail(c, End::reset, "peer reset after its EOF");
        else
            maybe_release(c);
        break;
    case kLinger:
        if (res < 0)
            fixed_.reset_failed(-res);
        maybe_release(c);
        break;
    default:  // cancels only hold a reference
        maybe_release(c);
        break;
    }
}

void RelayDriver::received(Conn& c, Dir d, int res)
{
    if (res < 0)
        note_error(c, idx(d), res);
    const uint32_t gen = c.gen;
    apply(c, c.relay.on_recv(d, res));
    if (res == 0 && c.gen == gen && !c.closing && !c.aborting)
        watch_after_eof(c, d);
}

void RelayDriver::sent(Conn& c, Dir d, int res)
{
    if (res < 0 && res != -EAGAIN)
        note_error(c, idx(other(d)), res);
    apply(c, c.relay.on_send(d, res));
}

void RelayDriver::send_bytes(Conn& c, Dir d, const char* p, uint32_t len, int flags, bool link)
{
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_send(s, c.dst(d).fd, p, len, flags);
    on(s, c.dst(d));
    if (link)
        s->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(s, pack(&c, kSend, d));
    ++c.inflight;
}

void RelayDriver::apply(Conn& c, const Ops& ops)
{
    for (const Op& op : ops) {
        // A reset met while carrying out an earlier op (the splice relay
        // sends inline) has already cancelled this connection's requests:
        // nothing new may be queued behind the cancel.
        if (c.aborting)
            return;
        io_uring_sqe* s = nullptr;
        switch (op.kind) {
        case Op::recv:
            // The previous chunk of this direction is fully sent.
            release(c, op.dir);
            pick_engine(c, op.dir);
            // Already in flight: queued linked behind the send just done
            // (BufferEngine::send).
            if (!c.prearmed[idx(op.dir)])
                c.engine[idx(op.dir)]->recv(c, op.dir);
            break;
        case Op::send:
            c.engine[idx(op.dir)]->send(c, op);
            break;
        case Op::shutdown:
            if (c.relay.state(other(op.dir)) == Relay::State::done) {
                // The last half-close: both sockets close right after it,
                // and a close sends this FIN anyway (the destination sent
                // its own and nothing is left unread), so it costs nothing.
                apply(c, c.relay.on_shutdown(op.dir, 0));
                break;
            }
            if (!c.dst(op.dir).fixed) {
                // shutdown() on a socket never blocks; io_uring would punt it
                // to a worker thread, costing a thread hop per half-close.
                int rc = ::shutdown(c.dst(op.dir).fd, SHUT_WR) == 0 ? 0 : -errno;
                apply(c, c.relay.on_shutdown(op.dir, rc));
                break;
            }
            s = ring_.sqe();
            io_uring_prep_shutdown(s, c.dst(op.dir).fd, SHUT_WR);
            on(s, c.dst(op.dir));
            io_uring_sqe_set_data64(s, pack(&c, kShutdown, op.dir));
            ++c.inflight;
            break;
        case Op::abort:
            abort(c);
            break;
        case Op::finish:
            c.closing = true;
            for (Dir w : {Dir::ClientToUpstream, Dir::UpstreamToClient}) {
                if (!c.watching[idx(w)])
                    continue;
                // Exactly one completion comes of this inside the submitting
                // enter: the watch's -ECANCELED, or (the watch already gone)
                // the cancel's own failure; success of the cancel posts
                // nothing. So that enter may go on to sleep for a real event
                // (Ring::note_quiet) instead of returning for this alone: one
                // io_uring_enter fewer per connection from one client.
                s = ring_.sqe();
                io_uring_prep_cancel64(s, pack(&c, kWatch, w), 0);
                s->flags |= IOSQE_CQE_SKIP_SUCCESS;
                io_uring_sqe_set_data64(s, kIgnore);
                ring_.note_quiet();
            }
            // The watch's last report arrives with the next real event: the
            // connection ends now (log line, sockets closed behind the
            // cancel in the same submission) and only its slot waits.
            if (c.inflight > 0 && c.slot[0] < 0 && c.slot[1] < 0 &&
                c.inflight == static_cast<uint32_t>(c.watching[0]) + c.watching[1])
                end(c);
            maybe_release(c);
            break;
        case Op::none:
            break;
        }
    }
}

void RelayDriver::release(Conn& c, Dir d)
{
    chunks_.give(c.setup[idx(d)], d);
    spills_.give(c.spill[idx(d)]);
    c.tries[idx(d)] = 0;
    if (c.stalled[idx(d)]) {
        c.stalled[idx(d)] = false;
        c.engine[idx(d)]->count_stall(-1);
    }
    if (c.engine[idx(d)])
        c.engine[idx(d)]->release(c, d);
}

bool RelayDriver::stays_on_buffers(const Conn& c, Dir d, uint32_t len) const
{
    return !splice_ || c.relay.bytes(d) + len < splice_after_;
}

void RelayDriver::pick_engine(Conn& c, Dir d)
{
    RelayEngine*& e = c.engine[idx(d)];
    if (!splice_ || e == splice_.get() || c.relay.bytes(d) < splice_after_)
        return;
    // Fixed-file sockets cannot splice (SpliceEngine::adopt): they stay.
    if (splice_->adopt(c, 0, 0))
        e = splice_.get();
}

// Stalled directions. A direction whose destination does not take its
// chunk at once (a client that does not read, a slow link) would hold a pool
// buffer or pipe until the destination drains; enough of them hold the whole
// pool and every other connection of the worker waits for a buffer that
// never comes back. So: a direction keeps its pool unit while stalled only
// while fewer than stall_cap_ (three quarters of the pool) are held that way;
// past that, the bytes left move to a private spill chunk (at most one chunk
// per direction, as a per-connection-buffer proxy holds) and the pool unit
// goes back at once. The rest of the pool therefore always turns over, and a
// read for any connection soon gets a unit. The engines decide when a
// direction is stalled (BufferEngine::send, SpliceEngine::send_now).
bool RelayDriver::may_hold(Conn& c, Dir d)
{
    if (c.stalled[idx(d)])
        return true;
    // Splice: every stall is seen (the splice is inline), so stalled
    // directions are counted. Ring: a send waiting in the kernel is not seen
    // (see BufferEngine::send), so the buffers in use are what is bounded;
    // every holder was admitted while they were fewer than the cap, so
    // holders of either kind stay below it.
    if (c.engine[idx(d)]->held_by_stalls() >= stall_cap_)
        return false;
    hold_anyway(c, d);
    return true;
}

void RelayDriver::hold_anyway(Conn& c, Dir d)
{
    if (c.stalled[idx(d)])
        return;
    c.stalled[idx(d)] = true;
    c.engine[idx(d)]->count_stall(+1);
}

void RelayDriver::note_error(Conn& c, int sock_index, int res)
{
    // A peer that stopped answering (keepalive probes or TCP_USER_TIMEOUT
    // ran out, or the network says it is gone) ends the connection as
    // `dead`, with the reason in the connection's log line; the app gets a
    // reset either way.
    if (res != -ETIMEDOUT && res != -EHOSTUNREACH && res != -ENETUNREACH)
        return;
    const char* who = sock_index == 0 ? "client"
                      : c.upstream && c.upstream->url.kind != UpstreamUrl::Kind::direct ? "upstream proxy"
                                                                                        : "destination";
    if (c.early_end == End::none)
        c.early_end = End::dead;
    if (c.detail.empty())
        c.detail = fmt::format("{} stopped answering: {}", who,
                               res == -ETIMEDOUT ? "keepalive or user timeout expired" : errno_text(-res));
}

void RelayDriver::watch_after_eof(Conn& c, Dir d)
{
    // Nothing reads this socket any more, so a reset that follows its FIN
    // (the peer closed, then got data it did not want) would go unseen while
    // the other direction still runs. A poll for errors catches it and the
    // reset is passed on, as it would reach the client of a direct connection.
    // Multishot: a plain poll would complete at once, since a socket past
    // FIN always reports RDHUP; this one reports each wakeup, the reset's too.
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_poll_multishot(s, c.src(d).fd, POLLERR);
    on(s, c.src(d));
    io_uring_sqe_set_data64(s, pack(&c, kWatch, d));
    c.watching[idx(d)] = true;
    ++c.inflight;
}

void RelayDriver::fail(Conn& c, End why, std::string detail)
{
    if (c.early_end == End::none)
        c.early_end = why;
    if (c.detail.empty())
        c.detail = std::move(detail);
    abort(c);
}

void RelayDriver::abort(Conn& c)
{
    if (c.aborting)
        return;
    c.aborting = true;
    for (int i = 0; i < 2; ++i) {
        Conn::Sock k = c.sock(i);
        if (k.fd < 0)
            continue;
        io_uring_sqe* s = ring_.sqe();
        io_uring_prep_cancel_fd(s, k.fd, IORING_ASYNC_CANCEL_ALL | (k.fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
        io_uring_sqe_set_data64(s, pack(&c, kCancel));
        ++c.inflight;
    }
    maybe_release(c);
}

void RelayDriver::end(Conn& c)
{
    c.ended = true;
    observer_.ended(c);
    FixedFiles::closed(static_cast<int64_t>(bool(c.fd[0])) + bool(c.fd[1]));
    if (c.aborting) {
        close_with_reset(c.fd[0]);
        close_with_reset(c.fd[1]);
        return;
    }
    // Graceful closes as io_uring requests that post nothing when they
    // succeed: they go to the kernel with the loop's next enter, two syscalls
    // fewer per connection (issue 19). The fd numbers stay taken until then,
    // so nothing can reuse them in between.
    for (UniqueFd& fd : c.fd) {
        if (!fd)
            continue;
        io_uring_sqe* s = ring_.sqe();
        io_uring_prep_close(s, fd.release());
        s->flags |= IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(s, kIgnore);
    }
}

void RelayDriver::maybe_release(Conn& c)
{
    if (c.inflight > 0 || !(c.aborting || c.closing))
        return;
    if (c.aborting && !c.lingered && fixed_.can_reset() && (c.slot[0] >= 0 || c.slot[1] >= 0)) {
        // A reset is passed on as a reset: SO_LINGER {1,0} on the fixed
        // sockets first, then the close below sends RST.
        c.lingered = true;
        for (int i = 0; i < 2; ++i) {
            if (c.slot[i] < 0)
                continue;
            io_uring_sqe* s = ring_.sqe();
            fixed_.prep_reset(s, c.slot[i], &c.linger_rst);
            io_uring_sqe_set_data64(s, pack(&c, kLinger));
            ++c.inflight;
        }
        return;
    }
    if (!c.ended)
        end(c);
    fixed_.clear(c.slot[0]);
    fixed_.clear(c.slot[1]);
    c.lingered = false;
    c.relaying = false;
    ++c.gen;
    release(c, Dir::ClientToUpstream);
    release(c, Dir::UpstreamToClient);
    pool_.release(c);
}

}  // namespace ktp
