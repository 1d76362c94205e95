// The io_uring loop. Per-operation context is packed into user_data: the
// object pointer (32-byte aligned) in the high bits, the operation tag and
// relay direction in the low 5 bits. One dispatcher handles every completion.
#include "event_loop.h"

#include "error.h"
#include "log.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <cmath>
#include <cstring>

namespace ktp {

struct alignas(32) Conn {
    UniqueFd fd[2];  // [0] client (accepted), [1] upstream
    SockAddr client, orig, via;
    Relay relay;
    std::unique_ptr<char[]> buf;  // two buffers, one per direction
    uint32_t inflight = 0;        // submitted operations not yet completed
    bool aborting = false;        // cancel issued; reset both when drained
    bool closing = false;         // finished; release when drained
    End early_end = End::none;    // set when the relay never started
    const char* detail = "";
    std::chrono::steady_clock::time_point started;
    __kernel_timespec timeout{};
    Conn* next_free = nullptr;

    int src(Dir d) const { return fd[idx(d)].get(); }
    int dst(Dir d) const { return fd[idx(other(d))].get(); }
};

namespace {

enum Tag : uint64_t {
    kIgnore = 0,
    kAccept,
    kConnect,
    kConnectTimeout,
    kRecv,
    kSend,
    kShutdown,
    kCancel,
    kSignal,
};
constexpr uint64_t kTagMask = 0xf;
constexpr uint64_t kDirBit = 0x10;
constexpr uint64_t kLowMask = 0x1f;

uint64_t pack(const void* p, Tag tag, Dir d = Dir::ClientToUpstream)
{
    return reinterpret_cast<uint64_t>(p) | tag | (d == Dir::UpstreamToClient ? kDirBit : 0);
}

void set_nodelay(int fd)
{
    // The relay forwards whole chunks as they arrive; Nagle would only add latency.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

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

EventLoop::EventLoop(const LoopConfig& cfg, std::vector<Listener>& listeners, std::function<void()> on_usr1)
    : cfg_(cfg), listeners_(listeners), on_usr1_(std::move(on_usr1))
{
    io_uring_params p{};
    // SINGLE_ISSUER + DEFER_TASKRUN: only this thread submits, and completions
    // are processed when we wait, not by interrupting us (fewer context switches).
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    int err = io_uring_queue_init_params(4096, &ring_, &p);
    if (err == -EINVAL) {
        p = {};
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 16384;
        err = io_uring_queue_init_params(4096, &ring_, &p);
    }
    if (err < 0)
        fail("create io_uring: {} (needs Linux >= 5.19 with io_uring enabled)", errno_text(-err));

    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGHUP})
        sigaddset(&mask, s);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    signal_fd_ = UniqueFd(signalfd(-1, &mask, SFD_CLOEXEC));
    if (!signal_fd_)
        fail_errno("signalfd");

    double whole = std::floor(cfg_.connect_timeout);
    connect_timeout_.tv_sec = static_cast<long long>(whole);
    connect_timeout_.tv_nsec = static_cast<long long>((cfg_.connect_timeout - whole) * 1e9);
}

EventLoop::~EventLoop() { io_uring_queue_exit(&ring_); }

io_uring_sqe* EventLoop::sqe()
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

void EventLoop::arm_accept(Listener& l)
{
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, pack(&l, kAccept));
}

void EventLoop::arm_signal()
{
    io_uring_sqe* s = sqe();
    io_uring_prep_read(s, signal_fd_.get(), &siginfo_, sizeof(siginfo_), 0);
    io_uring_sqe_set_data64(s, pack(&signal_slot_, kSignal));
}

Conn* EventLoop::alloc_conn()
{
    // Conns are recycled through a free list: no heap traffic per connection
    // once the pool has grown to the peak concurrency.
    Conn* c = free_;
    if (c) {
        free_ = c->next_free;
        Relay fresh;
        c->relay = fresh;
        c->inflight = 0;
        c->aborting = c->closing = false;
        c->early_end = End::none;
        c->detail = "";
        c->client = c->orig = c->via = SockAddr();
    } else {
        all_.push_back(std::make_unique<Conn>());
        c = all_.back().get();
        c->buf = std::make_unique<char[]>(2 * static_cast<size_t>(cfg_.buffer_size));
    }
    c->next_free = nullptr;
    c->started = std::chrono::steady_clock::now();
    ++live_;
    return c;
}

void EventLoop::on_accept(Listener& l, int res, uint32_t flags)
{
    if (!(flags & IORING_CQE_F_MORE) && !stopping_)
        arm_accept(l);
    if (res < 0) {
        log::warn("accept on {}: {}", l.addr.to_string(), errno_text(-res));
        return;
    }
    Conn& c = *alloc_conn();
    c.fd[0] = UniqueFd(res);
    c.client = SockAddr::peer_of(res);

    sockaddr_storage ss{};
    socklen_t len = l.orig_dst_level == SOL_IPV6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (getsockopt(res, l.orig_dst_level, 80 /* SO_ORIGINAL_DST */, &ss, &len) != 0) {
        fail_early(c, End::error, "no original destination (connection not redirected by ktproxy's hooks)");
        return;
    }
    c.orig = SockAddr(reinterpret_cast<sockaddr*>(&ss), len).unmapped();
    if (c.orig.port() == l.addr.port() && c.orig.ip_string() == l.addr.ip_string()) {
        fail_early(c, End::error, "original destination is ktproxy itself");
        return;
    }

    c.fd[1] = UniqueFd(::socket(c.orig.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!c.fd[1]) {
        fail_early(c, End::error, "upstream socket() failed");
        return;
    }
    if (setsockopt(c.fd[1].get(), SOL_SOCKET, SO_MARK, &cfg_.mark, sizeof(cfg_.mark)) != 0) {
        fail_early(c, End::error, "SO_MARK on upstream socket failed");
        return;
    }
    set_nodelay(c.fd[0].get());
    set_nodelay(c.fd[1].get());

    io_uring_sqe* s = sqe();
    io_uring_prep_connect(s, c.fd[1].get(), c.orig.get(), c.orig.size());
    io_uring_sqe_set_data64(s, pack(&c, kConnect));
    s->flags |= IOSQE_IO_LINK;
    c.timeout = connect_timeout_;
    s = sqe();
    io_uring_prep_link_timeout(s, &c.timeout, 0);
    io_uring_sqe_set_data64(s, pack(&c, kConnectTimeout));
    c.inflight += 2;
}

void EventLoop::fail_early(Conn& c, End why, const char* detail)
{
    c.early_end = why;
    c.detail = detail;
    c.aborting = true;
    maybe_release(c);
}

void EventLoop::on_connect(Conn& c, int res)
{
    if (c.aborting)
        return maybe_release(c);
    if (res < 0) {
        End why = res == -ECANCELED || res == -ETIMEDOUT ? End::timeout
                  : res == -ECONNREFUSED                 ? End::refused
                                                         : End::error;
        c.detail = strerror(-res);
        // The app asked for a connection that cannot be made: tell it with a
        // reset, as the destination itself would have.
        return fail_early(c, why, c.detail);
    }
    c.via = SockAddr::local_of(c.fd[1].get());
    apply(c, c.relay.start());
}

void EventLoop::apply(Conn& c, const Ops& ops)
{
    for (const Op& op : ops) {
        char* base = c.buf.get() + static_cast<size_t>(idx(op.dir)) * cfg_.buffer_size;
        io_uring_sqe* s = nullptr;
        switch (op.kind) {
        case Op::recv:
            s = sqe();
            io_uring_prep_recv(s, c.src(op.dir), base, cfg_.buffer_size, 0);
            io_uring_sqe_set_data64(s, pack(&c, kRecv, op.dir));
            ++c.inflight;
            break;
        case Op::send:
            s = sqe();
            io_uring_prep_send(s, c.dst(op.dir), base + op.offset, op.len, MSG_NOSIGNAL);
            io_uring_sqe_set_data64(s, pack(&c, kSend, op.dir));
            ++c.inflight;
            break;
        case Op::shutdown:
            s = sqe();
            io_uring_prep_shutdown(s, c.dst(op.dir), SHUT_WR);
            io_uring_sqe_set_data64(s, pack(&c, kShutdown, op.dir));
            ++c.inflight;
            break;
        case Op::abort:
            start_abort(c);
            break;
        case Op::finish:
            c.closing = true;
            maybe_release(c);
            break;
        case Op::none:
            break;
        }
    }
}

void EventLoop::start_abort(Conn& c)
{
    if (c.aborting)
        return;
    c.aborting = true;
    for (auto& fd : c.fd) {
        if (!fd)
            continue;
        io_uring_sqe* s = sqe();
        io_uring_prep_cancel_fd(s, fd.get(), IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(s, pack(&c, kCancel));
        ++c.inflight;
    }
    maybe_release(c);
}

void EventLoop::maybe_release(Conn& c)
{
    if (c.inflight > 0 || !(c.aborting || c.closing))
        return;
    log_conn(c, c.detail);
    if (c.aborting) {
        close_with_reset(c.fd[0]);
        close_with_reset(c.fd[1]);
    } else {
        c.fd[0].reset();
        c.fd[1].reset();
    }
    c.next_free = free_;
    free_ = &c;
    --live_;
}

void EventLoop::log_conn(const Conn& c, const char* detail) const
{
    if (!log::enabled(log::Level::info))
        return;
    End end = c.early_end != End::none ? c.early_end : c.relay.end();
    if (end == End::none)
        end = End::reset;
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c.started).count();
    log::info("conn client={} orig={} via={} route=direct c2s={} s2c={} ms={:.3f} end={}{}{}", c.client.to_string(),
              c.orig.to_string(), c.via.to_string(), c.relay.bytes(Dir::ClientToUpstream),
              c.relay.bytes(Dir::UpstreamToClient), ms, end_name(end), *detail ? " reason=" : "",
              *detail ? fmt::format("\"{}\"", detail) : std::string());
}

void EventLoop::on_signal(int res)
{
    if (res != sizeof(siginfo_)) {
        arm_signal();
        return;
    }
    int signo = static_cast<int>(siginfo_.ssi_signo);
    if (signo == SIGUSR1 || signo == SIGHUP) {
        if (on_usr1_)
            on_usr1_();
        arm_signal();
        return;
    }
    stop_signal_ = signo;
}

int EventLoop::run()
{
    for (auto& l : listeners_)
        arm_accept(l);
    arm_signal();

    while (stop_signal_ == 0) {
        int ret = io_uring_submit_and_wait(&ring_, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            fail("io_uring_submit_and_wait: {}", errno_text(-ret));
        io_uring_cqe* cqe;
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&ring_, head, cqe)
        {
            ++seen;
            uint64_t ud = cqe->user_data;
            auto tag = static_cast<Tag>(ud & kTagMask);
            Dir dir = (ud & kDirBit) ? Dir::UpstreamToClient : Dir::ClientToUpstream;
            void* ptr = reinterpret_cast<void*>(ud & ~kLowMask);
            int res = cqe->res;
            switch (tag) {
            case kIgnore:
                break;
            case kAccept:
                on_accept(*static_cast<Listener*>(ptr), res, cqe->flags);
                break;
            case kSignal:
                on_signal(res);
                break;
            case kConnect: {
                Conn& c = *static_cast<Conn*>(ptr);
                --c.inflight;
                on_connect(c, res);
                break;
            }
            case kConnectTimeout:
            case kCancel: {
                Conn& c = *static_cast<Conn*>(ptr);
                --c.inflight;
                maybe_release(c);
                break;
            }
            case kRecv:
            case kSend:
            case kShutdown: {
                Conn& c = *static_cast<Conn*>(ptr);
                --c.inflight;
                if (c.aborting) {
                    maybe_release(c);
                    break;
                }
                Ops ops = tag == kRecv   ? c.relay.on_recv(dir, res)
                          : tag == kSend ? c.relay.on_send(dir, res)
                                         : c.relay.on_shutdown(dir, res);
                apply(c, ops);
                break;
            }
            }
        }
        io_uring_cq_advance(&ring_, seen);
    }
    stopping_ = true;
    return stop_signal_;
}

}  // namespace ktp
