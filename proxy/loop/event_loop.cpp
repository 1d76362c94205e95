// The io_uring loop. Per-operation context is packed into user_data: the
// object pointer (32-byte aligned) in the high bits, the operation tag and
// relay direction in the low 5 bits. One dispatcher handles every completion.
//
// A connection goes through phases, each driven by completions:
//   sniff (only when a domain rule needs the client's first bytes)
//   -> connect (original destination or upstream proxy, linked timeout)
//   -> handshake (SOCKS5 / HTTP CONNECT state machine, bytes in, bytes out)
//   -> relay (Relay state machine; sniffed bytes are replayed first).
// Sniff and handshake bytes sit in a per-connection setup chunk; relay data
// in buffers picked from the ring by the kernel when data arrives.
#include "loop/event_loop.h"

#include "base/error.h"
#include "upstream/handshake.h"
#include "upstream/http_connect.h"
#include "base/json.h"
#include "base/log.h"
#include "route/sniff.h"
#include "upstream/socks5.h"
#include "loop/tcp_progress.h"

#include "kernel/bpf_abi.h"

#include <bpf/bpf.h>
#include <arpa/inet.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>

namespace ktp {

// Setup chunk size: enough for a ClientHello or an HTTP request head, and for
// any upstream handshake reply.
constexpr uint32_t kChunk = 16 * 1024;
// Upstream handshake replies are small (SOCKS5 at most 262 bytes, HTTP CONNECT
// a status line and a few headers): a smaller chunk keeps a burst of
// handshakes from growing the pool by 16 KiB each.
constexpr uint32_t kHsChunk = 4 * 1024;
// Free setup chunks kept for the next connections, per worker: about 256 KiB
// of each kind, enough for the handshakes of a busy steady state; a burst
// beyond that maps and unmaps, so that it leaves nothing resident behind.
constexpr size_t kFreeChunkBytesKept = 256 * 1024;
constexpr uint32_t chunk_size(ktp::Dir d) { return d == ktp::Dir::ClientToUpstream ? kChunk : kHsChunk; }
void unmap_chunk(char* chunk, ktp::Dir d)
{
    if (chunk)
        ::munmap(chunk, chunk_size(d));
}
constexpr uint16_t kBufGroup = 1;

struct alignas(32) Conn {
    UniqueFd fd[2];  // [0] client (accepted), [1] upstream
    SockAddr client, orig, via;
    Relay relay;
    uint32_t inflight = 0;      // submitted operations not yet completed
    uint32_t gen = 0;           // bumped on release: stale waiters recognise themselves
    bool aborting = false;      // cancel issued; reset both when drained
    bool closing = false;       // finished; release when drained
    bool relaying = false;
    End early_end = End::none;  // set when the relay never started or was cut
    std::string detail;
    std::chrono::steady_clock::time_point started, last_active;
    __kernel_timespec timeout{};
    Conn* next_free = nullptr;
    Conn* live_prev = nullptr;
    Conn* live_next = nullptr;

    // Relay buffers: a ring buffer id being sent, or the setup chunk whose
    // bytes (sniffed / after the handshake) are replayed first.
    int32_t held[2] = {-1, -1};
    char* setup[2] = {nullptr, nullptr};

    // Splice relay: a direction holds a pipe only while bytes sit in it.
    Pipe pipe[2];
    uint32_t piped[2] = {0, 0};      // bytes in pipe[d]
    uint32_t splice_len[2] = {0, 0}; // the send waiting for POLLOUT
    uint32_t splice_offset[2] = {0, 0};
    bool spliced = false;            // this connection relays with splice(2)
    // POLLPRI left out of this direction's readiness poll: it reported urgent
    // data that cannot be read yet (a gap before the urgent byte).
    bool urg_quiet[2] = {false, false};

    // Stalled directions (see "Stalled directions" below): a chunk whose
    // destination could not take it at once either keeps its pool unit
    // (stalled, counted in EventLoop::stalled_) or moves to a private spill
    // chunk, and the pool unit goes back at once.
    char* spill[2] = {nullptr, nullptr};
    bool stalled[2] = {false, false};
    uint8_t tries[2] = {0, 0};  // 1 once the current ring-buffer chunk's first send went

    // Idle sweep: the kernel's byte counters of both sockets when last
    // asked, and when; bytes moving there count as traffic even while no
    // operation of ours completes (a send draining to a slow reader).
    uint64_t moved = 0;
    std::chrono::steady_clock::time_point moved_at{};

    // Routing.
    std::shared_ptr<const Router> router;
    const Upstream* upstream = nullptr;
    std::string route_name = "none";  // until routed
    std::string domain;
    bool sniffed = false;
    uint32_t sniff_len = 0;  // client bytes at the start of setup[c2u]

    // Upstream handshake.
    std::unique_ptr<Handshake> hs;
    std::string hs_out;
    uint32_t hs_out_sent = 0;
    uint32_t hs_in = 0;  // unconsumed upstream bytes at the start of setup[u2c]

    // Once relaying, both sockets usually live only in the ring's fixed-file
    // table (slot >= 0) and their ordinary fds are closed: a relayed
    // connection then costs no entry in the process's fd table, which is what
    // lets one process hold more connections than RLIMIT_NOFILE / 2.
    int32_t slot[2] = {-1, -1};
    bool lingered = false;         // SO_LINGER {1,0} set on the slots before an abortive close
    bool watching[2] = {false, false};  // a POLLERR watch on the source of a direction past EOF
    linger linger_rst{1, 0};

    struct Sock {
        int fd;
        bool fixed;
    };
    Sock sock(int i) const { return slot[i] >= 0 ? Sock{slot[i], true} : Sock{fd[i].get(), false}; }
    Sock src(Dir d) const { return sock(idx(d)); }
    Sock dst(Dir d) const { return sock(idx(other(d))); }
};

namespace {

enum Tag : uint64_t {
    kIgnore = 0,
    kAccept,
    kConnect,
    kLinkTimeout,
    kRecv,
    kSend,
    kShutdown,
    kCancel,
    kWake,
    kSniffRecv,
    kHsSend,
    kHsRecv,
    kSweep,
    kLinger,
    kWatch,
};
constexpr uint64_t kTagMask = 0xf;
constexpr uint64_t kDirBit = 0x10;
constexpr uint64_t kLowMask = 0x1f;

// Ordinary fds held by connections, across all workers of the process: they
// share one RLIMIT_NOFILE.
std::atomic<int64_t> g_conn_fds{0};

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

void on(io_uring_sqe* s, Conn::Sock k)
{
    if (k.fixed)
        s->flags |= IOSQE_FIXED_FILE;
}

// io_uring's SOCKET_URING_OP_SETSOCKOPT (Linux >= 6.7), prepared by hand:
// liburing 2.3 predates it. Field placement per the kernel's io_uring_sqe.
constexpr uint32_t kSocketUringOpSetsockopt = 3;
void prep_setsockopt(io_uring_sqe* s, int fixed_slot, int level, int optname, const void* optval, uint32_t optlen)
{
    io_uring_prep_rw(IORING_OP_URING_CMD, s, fixed_slot, nullptr, 0, 0);
    s->flags |= IOSQE_FIXED_FILE;
    s->cmd_op = kSocketUringOpSetsockopt;
    s->addr = static_cast<uint64_t>(static_cast<uint32_t>(level)) |
              (static_cast<uint64_t>(static_cast<uint32_t>(optname)) << 32);
    s->file_index = optlen;  // optlen shares this word
    s->addr3 = reinterpret_cast<uint64_t>(optval);
}

__kernel_timespec to_timespec(double seconds)
{
    double whole = std::floor(seconds);
    __kernel_timespec ts{};
    ts.tv_sec = static_cast<long long>(whole);
    ts.tv_nsec = static_cast<long long>((seconds - whole) * 1e9);
    return ts;
}

}  // namespace

EventLoop::EventLoop(const LoopConfig& cfg, std::vector<Listener> listeners, const RouterSlot& router)
    : cfg_(cfg), listeners_(std::move(listeners)), router_(router)
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
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 16384;
        err = io_uring_queue_init_params(4096, &ring_, &p);
    }
    if (err < 0)
        fail("create io_uring: {} (needs Linux >= 5.19 with io_uring enabled)", errno_text(-err));
    bufs_ = std::make_unique<BufRing>(ring_, kBufGroup, cfg_.buffers, cfg_.buffer_size);
    // A quarter of the pool (at least one unit) is never held by a stalled
    // direction; a spill chunk holds what a pool unit can.
    stall_cap_ = cfg_.buffers - std::max<uint32_t>(1, cfg_.buffers / 4);
    spill_bytes_ = cfg_.buffer_size;
    if (cfg_.splice) {
        const uint32_t pipe_bytes = std::max<uint32_t>(cfg_.buffer_size, 65536);
        pipes_ = std::make_unique<PipePool>(cfg_.buffers, pipe_bytes, &g_conn_fds);
        // The kernel rounds a pipe's size up to a power of two pages.
        const uint32_t page = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
        spill_bytes_ = std::max(spill_bytes_, std::bit_ceil((pipe_bytes + page - 1) / page) * page);
    }
    free_spills_.reserve(kFreeChunkBytesKept * 4 / spill_bytes_ + 1);

    // The fixed-file table may be as large as RLIMIT_NOFILE, per ring.
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    unsigned slots = static_cast<unsigned>(std::min<rlim_t>(rl.rlim_cur, 1u << 16));
    if (slots >= 64 && io_uring_register_files_sparse(&ring_, slots) == 0) {
        free_slots_.reserve(slots);
        for (unsigned i = slots; i > 0; --i)
            free_slots_.push_back(static_cast<int32_t>(i - 1));
        slots_total_ = slots;
        // Past half of the fd limit, relayed connections go to the table.
        fd_budget_ = static_cast<int64_t>(rl.rlim_cur / 2);
    } else {
        log::warn("io_uring fixed files unavailable: relayed connections use ordinary fds");
    }

    wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC));
    if (!wake_fd_)
        fail_errno("eventfd");
    connect_timeout_ = to_timespec(cfg_.connect_timeout);
    sniff_timeout_ = to_timespec(cfg_.sniff_timeout);
    sweep_every_ = to_timespec(std::clamp(cfg_.idle_timeout / 4, 0.25, 5.0));
}

EventLoop::~EventLoop()
{
    // Ring first, so no request of ours is pending when buffers and
    // connections go away.
    bufs_.reset();
    io_uring_queue_exit(&ring_);
    for (auto& c : all_)
        for (Dir d : {Dir::ClientToUpstream, Dir::UpstreamToClient}) {
            unmap_chunk(std::exchange(c->setup[idx(d)], nullptr), d);
            if (c->spill[idx(d)])
                ::munmap(std::exchange(c->spill[idx(d)], nullptr), spill_bytes_);
        }
    for (char* chunk : free_spills_)
        ::munmap(chunk, spill_bytes_);
    all_.clear();
    for (Dir d : {Dir::ClientToUpstream, Dir::UpstreamToClient})
        for (char* chunk : free_chunks_[idx(d)])
            unmap_chunk(chunk, d);
}

std::future<WorkerSnapshot> EventLoop::snapshot(bool with_conns)
{
    std::future<WorkerSnapshot> f;
    {
        std::lock_guard lock(requests_mu_);
        requests_.push_back(SnapshotRequest{with_conns, {}});
        f = requests_.back().reply.get_future();
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    return f;
}

void EventLoop::answer_snapshots()
{
    std::vector<SnapshotRequest> reqs;
    {
        std::lock_guard lock(requests_mu_);
        reqs.swap(requests_);
    }
    if (reqs.empty())
        return;
    WorkerSnapshot base = stats_;
    base.fixed_files_in_use = slots_total_ - free_slots_.size();
    if (pipes_) {
        base.pipes_in_use = pipes_->out();
        base.pipes_pooled = pipes_->pooled();
    }
    for (Conn* c = live_head_; c; c = c->live_next) {
        auto& r = base.routes[c->route_name];
        r.bytes_c2s += c->relay.bytes(Dir::ClientToUpstream);
        r.bytes_s2c += c->relay.bytes(Dir::UpstreamToClient);
    }
    for (auto& req : reqs) {
        WorkerSnapshot snap = base;
        if (req.with_conns)
            for (Conn* c = live_head_; c; c = c->live_next)
                snap.conns.push_back(ConnInfo{c->client.to_string(), c->orig.to_string(), c->route_name, c->domain,
                                              c->relay.bytes(Dir::ClientToUpstream),
                                              c->relay.bytes(Dir::UpstreamToClient),
                                              std::chrono::duration<double>(now_ - c->started).count()});
        req.reply.set_value(std::move(snap));
    }
}

void EventLoop::account_route(Conn& c)
{
    auto& r = stats_.routes[c.route_name];
    ++r.total;
    ++r.active;
}

void EventLoop::stop()
{
    stop_.store(true);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
}

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

void EventLoop::reserve(unsigned n)
{
    // A linked pair must go to the kernel in one submission, or the link is
    // cut and the operation would run without its timeout.
    if (io_uring_sq_space_left(&ring_) < n)
        io_uring_submit(&ring_);
}

void EventLoop::link_timeout(Conn& c, const __kernel_timespec& ts)
{
    // The previous SQE carries IOSQE_IO_LINK; this one bounds it.
    c.timeout = ts;
    io_uring_sqe* s = sqe();
    io_uring_prep_link_timeout(s, &c.timeout, 0);
    io_uring_sqe_set_data64(s, pack(&c, kLinkTimeout));
    ++c.inflight;
}

void EventLoop::arm_accept(Listener& l)
{
    io_uring_sqe* s = sqe();
    // Non-blocking from the start: splice(2) waits on a blocking socket
    // whatever its flags say, and the loop must never wait there. io_uring's
    // own operations behave the same on either kind.
    io_uring_prep_multishot_accept(s, l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    io_uring_sqe_set_data64(s, pack(&l, kAccept));
}

void EventLoop::arm_wake()
{
    io_uring_sqe* s = sqe();
    io_uring_prep_read(s, wake_fd_.get(), &wake_value_, sizeof(wake_value_), 0);
    io_uring_sqe_set_data64(s, pack(&wake_slot_, kWake));
}

void EventLoop::arm_sweep()
{
    io_uring_sqe* s = sqe();
    io_uring_prep_timeout(s, &sweep_every_, 0, 0);
    io_uring_sqe_set_data64(s, pack(&sweep_slot_, kSweep));
}

char* EventLoop::take_chunk(Dir d)
{
    // c2u chunks hold sniffed client bytes, u2c chunks upstream handshakes.
    // Each is its own mapping, not heap memory: the heap would keep the pages
    // of a burst of thousands of handshakes resident for good, since live
    // objects allocated in between pin them; munmap gives them back.
    auto& free = free_chunks_[idx(d)];
    if (free.empty()) {
        void* p = ::mmap(nullptr, chunk_size(d), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
    char* c = free.back();
    free.pop_back();
    return c;
}

void EventLoop::give_chunk(char*& chunk, Dir d)
{
    if (!chunk)
        return;
    // Keep a few for the next connections; a burst of thousands of
    // handshakes must not stay resident once it is over.
    auto& free = free_chunks_[idx(d)];
    if (free.size() < kFreeChunkBytesKept / chunk_size(d))
        free.push_back(chunk);
    else
        unmap_chunk(chunk, d);
    chunk = nullptr;
}

Conn* EventLoop::alloc_conn()
{
    // Conns are recycled through a free list: no heap traffic per connection
    // once the pool has grown to the peak concurrency.
    Conn* c = free_;
    if (c) {
        free_ = c->next_free;
        c->relay = Relay();
        c->inflight = 0;
        c->aborting = c->closing = c->relaying = false;
        c->early_end = End::none;
        c->detail.clear();
        c->client = c->orig = c->via = SockAddr();
        c->held[0] = c->held[1] = -1;
        c->piped[0] = c->piped[1] = 0;
        c->spliced = false;
        c->urg_quiet[0] = c->urg_quiet[1] = false;
        c->tries[0] = c->tries[1] = 0;
        c->moved = 0;
        c->moved_at = {};
        c->watching[0] = c->watching[1] = false;
        c->upstream = nullptr;
        c->route_name = "none";
        c->domain.clear();
        c->sniffed = false;
        c->sniff_len = 0;
        c->hs.reset();
        c->hs_out.clear();
        c->hs_out_sent = 0;
        c->hs_in = 0;
    } else {
        all_.push_back(std::make_unique<Conn>());
        c = all_.back().get();
    }
    c->next_free = nullptr;
    c->router = router_.load(std::memory_order_acquire);
    c->started = c->last_active = now_;
    c->live_prev = nullptr;
    c->live_next = live_head_;
    if (live_head_)
        live_head_->live_prev = c;
    live_head_ = c;
    live_.fetch_add(1, std::memory_order_relaxed);
    return c;
}

void EventLoop::on_accept(Listener& l, int res, uint32_t flags)
{
    if (!(flags & IORING_CQE_F_MORE) && !stop_.load())
        arm_accept(l);
    if (res < 0) {
        log::warn("accept on {}: {}", l.addr.to_string(), errno_text(-res));
        return;
    }
    Conn& c = *alloc_conn();
    c.fd[0] = UniqueFd(res);
    g_conn_fds.fetch_add(1, std::memory_order_relaxed);
    c.client = SockAddr::peer_of(res);

    if (l.transparent) {
        // Gateway: the TC program handed the SYN to this listener; the
        // connection's local address is where the client was going.
        c.orig = SockAddr::local_of(res).unmapped();
    } else {
        sockaddr_storage ss{};
        socklen_t len = l.orig_dst_level == SOL_IPV6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
        if (getsockopt(res, l.orig_dst_level, 80 /* SO_ORIGINAL_DST */, &ss, &len) != 0)
            return fail_early(c, End::error, "no original destination (connection not redirected by ktproxy's hooks)");
        c.orig = SockAddr(reinterpret_cast<sockaddr*>(&ss), len).unmapped();
    }
    if (c.orig.port() == l.addr.port() && c.orig.ip_string() == l.addr.ip_string())
        return fail_early(c, End::error, "original destination is ktproxy itself");
    // Past half of the fd limit the client's socket goes into the fixed
    // table now, not when relaying starts: in a burst, connections still in
    // setup hold two ordinary fds each (the client's and the upstream's) and
    // could use up the other half, failing socket() for the next upstream.
    // Not where a fixed socket cannot be reset (SO_LINGER through io_uring
    // needs Linux 6.7: see linger_cmd_): a failed setup must still reset the
    // client, as the destination's refusal would have.
    if (linger_cmd_ && g_conn_fds.load(std::memory_order_relaxed) >= fd_budget_)
        move_to_fixed(c, 0);

    if (c.router->has_domain_rules() && c.router->decide(c.orig, nullptr).kind == Decision::need_sniff) {
        c.setup[idx(Dir::ClientToUpstream)] = take_chunk(Dir::ClientToUpstream);
        if (!c.setup[idx(Dir::ClientToUpstream)])
            return fail_early(c, End::error, fmt::format("sniff buffer: {}", errno_text(errno)));
        return sniff_more(c);
    }
    route(c, nullptr);
}

void EventLoop::sniff_more(Conn& c)
{
    // Server-speaks-first protocols never send: the timeout routes them
    // without a name instead of hanging.
    char* base = c.setup[idx(Dir::ClientToUpstream)];
    recv_with_timeout(c, 0, base + c.sniff_len, kChunk - c.sniff_len, kSniffRecv, sniff_timeout_);
}

void EventLoop::recv_with_timeout(Conn& c, int i, char* buf, uint32_t len, uint64_t tag,
                                  const __kernel_timespec& ts)
{
    reserve(2);
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, c.sock(i).fd, buf, len, 0);
    on(s, c.sock(i));
    io_uring_sqe_set_data64(s, pack(&c, static_cast<Tag>(tag)));
    s->flags |= IOSQE_IO_LINK;
    ++c.inflight;
    link_timeout(c, ts);
}

void EventLoop::on_sniff(Conn& c, int res)
{
    if (c.aborting)
        return maybe_release(c);
    if (res < 0 && res != -ECANCELED)
        return fail_early(c, End::reset, fmt::format("client: {}", errno_text(-res)));
    if (res > 0) {
        c.sniff_len += static_cast<uint32_t>(res);
        SniffResult r = sniff_domain(std::string_view(c.setup[idx(Dir::ClientToUpstream)], c.sniff_len));
        if (r.status == SniffResult::need_more && c.sniff_len < kChunk)
            return sniff_more(c);
        if (r.status == SniffResult::found)
            c.domain = r.domain;
    }
    // Timeout (-ECANCELED), EOF (0: the relay's recv sees it again), or
    // enough bytes: decide with what we know.
    c.sniffed = true;
    route(c, &c.domain);
}

void EventLoop::route(Conn& c, const std::string* domain)
{
    Decision d = c.router->decide(c.orig, domain ? domain : &c.domain);
    if (d.action.kind == ActionKind::block) {
        c.route_name = "block";
        account_route(c);
        return fail_early(c, End::blocked, d.rule >= 0 ? fmt::format("rule {}", d.rule + 1) : "default");
    }
    c.upstream = d.action.kind == ActionKind::proxy ? d.upstream : c.router->upstream("direct");
    c.route_name = c.upstream ? c.upstream->name : "direct";
    account_route(c);

    const SockAddr* target = &c.orig;
    if (c.upstream && c.upstream->url.kind != UpstreamUrl::Kind::direct) {
        target = &c.upstream->addr;
        Target t{c.domain, c.orig};
        if (c.upstream->url.kind == UpstreamUrl::Kind::socks5)
            c.hs = std::make_unique<Socks5Handshake>(c.upstream->url.user, c.upstream->url.password, t);
        else
            c.hs = std::make_unique<HttpConnectHandshake>(c.upstream->url.user, c.upstream->url.password, t);
        c.setup[idx(Dir::UpstreamToClient)] = take_chunk(Dir::UpstreamToClient);
        if (!c.setup[idx(Dir::UpstreamToClient)])
            return fail_early(c, End::error, fmt::format("handshake buffer: {}", errno_text(errno)));
    }

    c.fd[1] = UniqueFd(::socket(target->family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (c.fd[1])
        g_conn_fds.fetch_add(1, std::memory_order_relaxed);
    if (!c.fd[1])
        return fail_early(c, End::error, fmt::format("upstream socket(): {}", errno_text(errno)));
    if (setsockopt(c.fd[1].get(), SOL_SOCKET, SO_MARK, &cfg_.mark, sizeof(cfg_.mark)) != 0)
        return fail_early(c, End::error, fmt::format("SO_MARK on upstream socket: {}", errno_text(errno)));
    set_nodelay(c.fd[1].get());
    if (!set_upstream_options(c))
        return;

    reserve(2);
    io_uring_sqe* s = sqe();
    io_uring_prep_connect(s, c.fd[1].get(), target->get(), target->size());
    io_uring_sqe_set_data64(s, pack(&c, kConnect));
    s->flags |= IOSQE_IO_LINK;
    ++c.inflight;
    link_timeout(c, connect_timeout_);
}

bool EventLoop::set_upstream_options(Conn& c)
{
    // The app's own keepalive stops at ktproxy, which answers it: without
    // probes of ktproxy's own, a destination (or upstream proxy) that dies
    // silently would leave app and relay waiting forever. Keepalive catches
    // it while the connection is quiet, TCP_USER_TIMEOUT while sent data
    // goes unacknowledged; either makes the socket fail with ETIMEDOUT,
    // which the relay passes on to the app as a reset (End::dead).
    const int fd = c.fd[1].get();
    auto opt = [&](int level, int name, uint32_t value, const char* what) {
        int v = static_cast<int>(value);
        if (setsockopt(fd, level, name, &v, sizeof(v)) == 0)
            return true;
        fail_early(c, End::error, fmt::format("{} on upstream socket: {}", what, errno_text(errno)));
        return false;
    };
    if (cfg_.keepalive_idle > 0 &&
        !(opt(SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE") &&
          opt(IPPROTO_TCP, TCP_KEEPIDLE, cfg_.keepalive_idle, "TCP_KEEPIDLE") &&
          opt(IPPROTO_TCP, TCP_KEEPINTVL, cfg_.keepalive_intvl, "TCP_KEEPINTVL") &&
          opt(IPPROTO_TCP, TCP_KEEPCNT, cfg_.keepalive_cnt, "TCP_KEEPCNT")))
        return false;
    if (cfg_.user_timeout_ms > 0 && !opt(IPPROTO_TCP, TCP_USER_TIMEOUT, cfg_.user_timeout_ms, "TCP_USER_TIMEOUT"))
        return false;
    return true;
}

void EventLoop::remember_dead(const Conn& c, int err)
{
    // This app's connect already succeeded (to ktproxy's listener), so it
    // gets the reset; the cgroup's next connects to this destination fail
    // at once with err instead, for --dead-cache seconds, as a direct
    // connect would, and an app that tries a name's next address moves on.
    // A failed update only loses the hint.
    if (cfg_.dead_dst_fd < 0 || cfg_.dead_cache <= 0)
        return;
    ktp_dead_key key{};
    c.orig.to_mapped(key.addr);
    key.port = htons(c.orig.port());
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    ktp_dead_val v{};
    v.until_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(now.tv_nsec) +
                 static_cast<uint64_t>(cfg_.dead_cache * 1e9);
    v.err = err;
    bpf_map_update_elem(cfg_.dead_dst_fd, &key, &v, BPF_ANY);
}

void EventLoop::fail_early(Conn& c, End why, std::string detail)
{
    if (c.early_end == End::none)
        c.early_end = why;
    if (c.detail.empty())
        c.detail = std::move(detail);
    start_abort(c);
}

void EventLoop::on_connect(Conn& c, int res)
{
    if (c.aborting)
        return maybe_release(c);
    if (res < 0) {
        End why = res == -ECANCELED || res == -ETIMEDOUT ? End::timeout
                  : res == -ECONNREFUSED                 ? End::refused
                                                         : End::error;
        const char* what = c.hs ? "upstream proxy" : "destination";
        if (!c.hs && (why == End::refused || why == End::timeout || res == -EHOSTUNREACH || res == -ENETUNREACH))
            remember_dead(c, res == -ECANCELED ? ETIMEDOUT : -res);
        // The app asked for a connection that cannot be made: tell it with a
        // reset, as the destination itself would have.
        return fail_early(c, why,
                          fmt::format("{}: {}", what, res == -ECANCELED ? "connect timed out" : errno_text(-res)));
    }
    if (c.hs)
        return hs_step(c, c.hs->start());
    start_relay(c, c.sniff_len, 0);
}

void EventLoop::hs_step(Conn& c, HandshakeStep step)
{
    // Drop what the handshake consumed; the rest stays for the next step or,
    // once done, for the tunnel.
    uint32_t used = static_cast<uint32_t>(std::min<size_t>(step.consumed, c.hs_in));
    char* in = c.setup[idx(Dir::UpstreamToClient)];
    std::memmove(in, in + used, c.hs_in - used);
    c.hs_in -= used;

    switch (step.kind) {
    case HandshakeStep::send: {
        c.hs_out = std::move(step.out);
        c.hs_out_sent = 0;
        io_uring_sqe* s = sqe();
        io_uring_prep_send(s, c.fd[1].get(), c.hs_out.data(), c.hs_out.size(), MSG_NOSIGNAL);
        io_uring_sqe_set_data64(s, pack(&c, kHsSend));
        ++c.inflight;
        return;
    }
    case HandshakeStep::need_more: {
        if (c.hs_in >= kHsChunk)
            return fail_early(c, End::upstream, "upstream handshake reply too large");
        recv_with_timeout(c, 1, in + c.hs_in, kHsChunk - c.hs_in, kHsRecv, connect_timeout_);
        return;
    }
    case HandshakeStep::done:
        c.hs.reset();
        std::string().swap(c.hs_out);  // a held connection keeps no handshake memory
        return start_relay(c, c.sniff_len, c.hs_in);
    case HandshakeStep::failed:
        return fail_early(c, End::upstream, step.error);
    }
}

void EventLoop::on_hs_send(Conn& c, int res)
{
    if (c.aborting)
        return maybe_release(c);
    if (res <= 0)
        return fail_early(c, End::upstream,
                          fmt::format("upstream proxy: send: {}", res == 0 ? "closed" : errno_text(-res)));
    c.hs_out_sent += static_cast<uint32_t>(res);
    if (c.hs_out_sent < c.hs_out.size()) {
        io_uring_sqe* s = sqe();
        io_uring_prep_send(s, c.fd[1].get(), c.hs_out.data() + c.hs_out_sent, c.hs_out.size() - c.hs_out_sent,
                           MSG_NOSIGNAL);
        io_uring_sqe_set_data64(s, pack(&c, kHsSend));
        ++c.inflight;
        return;
    }
    if (c.hs_in > 0)
        return hs_step(c, c.hs->feed(std::string_view(c.setup[idx(Dir::UpstreamToClient)], c.hs_in)));
    hs_step(c, HandshakeStep{});  // wait for the reply
}

void EventLoop::on_hs_recv(Conn& c, int res)
{
    if (c.aborting)
        return maybe_release(c);
    if (res == -ECANCELED)
        return fail_early(c, End::timeout, "upstream proxy: handshake timed out");
    if (res < 0)
        return fail_early(c, End::upstream, fmt::format("upstream proxy: {}", errno_text(-res)));
    if (res == 0)
        return fail_early(c, End::upstream, "upstream proxy closed the connection during the handshake");
    c.hs_in += static_cast<uint32_t>(res);
    hs_step(c, c.hs->feed(std::string_view(c.setup[idx(Dir::UpstreamToClient)], c.hs_in)));
}

void EventLoop::to_fixed(Conn& c)
{
    // Ordinary fds are cheaper to work with (shutdown is a plain syscall;
    // through io_uring it is always handed to a worker thread), so a
    // connection moves to the fixed table only when the process's fds run
    // short. A client socket already moved at accept (on_accept) rules out
    // splice: the upstream's goes too, whatever the count is by now.
    if (c.slot[0] < 0 && g_conn_fds.load(std::memory_order_relaxed) < fd_budget_)
        return;
    move_to_fixed(c, 0);
    move_to_fixed(c, 1);
}

void EventLoop::move_to_fixed(Conn& c, int i)
{
    if (c.slot[i] >= 0 || !c.fd[i] || free_slots_.empty())
        return;  // table full: this socket keeps its ordinary fd
    int32_t slot = free_slots_.back();
    int fd = c.fd[i].get();
    if (io_uring_register_files_update(&ring_, static_cast<unsigned>(slot), &fd, 1) != 1)
        return;
    free_slots_.pop_back();
    c.slot[i] = slot;
    // The table holds its own reference: the ordinary fd can go.
    c.fd[i].reset();
    g_conn_fds.fetch_sub(1, std::memory_order_relaxed);
}

void EventLoop::clear_slots(Conn& c)
{
    for (int i = 0; i < 2; ++i) {
        if (c.slot[i] < 0)
            continue;
        // Dropping the table's reference closes the socket (with an RST if
        // SO_LINGER {1,0} was set), exactly like close() on an ordinary fd.
        int none = -1;
        io_uring_register_files_update(&ring_, static_cast<unsigned>(c.slot[i]), &none, 1);
        free_slots_.push_back(c.slot[i]);
        c.slot[i] = -1;
    }
}

void EventLoop::start_relay(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c)
{
    c.via = SockAddr::local_of(c.fd[1].get());
    c.relaying = true;
    to_fixed(c);
    // splice(2) is a plain syscall and needs ordinary fds: a connection moved
    // to the fixed-file table (the process's fds are running short) relays
    // through ring buffers instead.
    c.spliced = pipes_ && c.slot[0] < 0 && c.slot[1] < 0;
    // Sniffed or handshake bytes go into the pipe first, so every send of
    // the splice relay comes from a pipe. With no pipe to be had for them
    // (all out, or no fds) this one connection relays through ring buffers,
    // which replay straight from the setup chunk: never a reason to fail it.
    if (c.spliced && (pending_c2u > 0 || pending_u2c > 0))
        c.spliced = prefill_pipes(c, pending_c2u, pending_u2c);
    // A direction with nothing to replay gives its setup chunk back now.
    if (pending_c2u == 0)
        give_chunk(c.setup[idx(Dir::ClientToUpstream)], Dir::ClientToUpstream);
    if (pending_u2c == 0)
        give_chunk(c.setup[idx(Dir::UpstreamToClient)], Dir::UpstreamToClient);
    apply(c, c.relay.start(pending_c2u, pending_u2c));
}

void EventLoop::release_buffer(Conn& c, Dir d)
{
    give_chunk(c.setup[idx(d)], d);
    give_spill(c.spill[idx(d)]);
    c.tries[idx(d)] = 0;
    if (c.stalled[idx(d)]) {
        c.stalled[idx(d)] = false;
        if (c.spliced)
            --stalled_;
    }
    if (c.held[idx(d)] >= 0) {
        bufs_->recycle(static_cast<uint16_t>(c.held[idx(d)]));
        c.held[idx(d)] = -1;
        wake_waiter(waiting_[kWaitBuffer]);
    } else if (c.pipe[idx(d)]) {
        pipes_->give(c.pipe[idx(d)], c.piped[idx(d)] == 0);
        c.piped[idx(d)] = 0;
        wake_waiter(waiting_[kWaitPipe]);
    }
}

void EventLoop::wake_waiter(std::deque<Waiter>& queue)
{
    // One buffer (or pipe) back: one connection waiting for that kind may
    // read again.
    while (!queue.empty()) {
        Waiter w = queue.front();
        queue.pop_front();
        if (w.c->gen == w.gen && !w.c->aborting && w.c->relaying) {
            submit_recv(*w.c, w.d);
            break;
        }
    }
}

void EventLoop::submit_recv(Conn& c, Dir d)
{
    io_uring_sqe* s = sqe();
    if (c.spliced) {
        // Splice relay: wait for readability; the splice itself is a plain
        // syscall once data is there (io_uring would run it on a worker thread).
        // POLLPRI: urgent data is pending, which splice cannot pass (see
        // recv_past_mark); the completion's mask tells on_splice_ready. At
        // the mark it is needed: POLLIN then waits for a byte beyond the
        // urgent one.
        io_uring_prep_poll_add(s, c.src(d).fd, c.urg_quiet[idx(d)] ? POLLIN : POLLIN | POLLPRI);
        io_uring_sqe_set_data64(s, pack(&c, kRecv, d));
        ++c.inflight;
        return;
    }
    // No buffer is named: the kernel picks one from the ring when data is
    // there, so a connection waiting for data holds no memory.
    Conn::Sock from = c.src(d);
    io_uring_prep_recv(s, from.fd, nullptr, cfg_.buffer_size, 0);
    on(s, from);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kBufGroup;
    io_uring_sqe_set_data64(s, pack(&c, kRecv, d));
    ++c.inflight;
}

void EventLoop::on_relay_recv(Conn& c, Dir d, int res, uint32_t flags)
{
    if (c.spliced)
        return on_splice_ready(c, d, res);
    if (flags & IORING_CQE_F_BUFFER) {
        c.held[idx(d)] = static_cast<int32_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        bufs_->taken();
    }
    if (c.aborting)
        return maybe_release(c);
    if (res == -ENOBUFS) {
        // Every buffer is in flight elsewhere: wait for one to come back
        // instead of failing (bounded memory, not dropped connections).
        waiting_[kWaitBuffer].push_back(Waiter{&c, d, c.gen});
        return;
    }
    if (res < 0)
        note_relay_error(c, idx(d), res);
    const uint32_t gen = c.gen;
    apply(c, c.relay.on_recv(d, res));
    if (res == 0 && c.gen == gen && !c.closing && !c.aborting)
        watch_after_eof(c, d);
}

bool EventLoop::prefill_pipes(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c)
{
    const uint32_t pending[2] = {pending_c2u, pending_u2c};
    bool ok = true;
    for (int i = 0; i < 2 && ok; ++i) {
        if (pending[i] == 0)
            continue;
        c.pipe[i] = pipes_->take();
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
                pipes_->give(c.pipe[i], c.piped[i] == 0);
                wake_waiter(waiting_[kWaitPipe]);
            }
            c.piped[i] = 0;
        }
        return false;
    }
    for (int i = 0; i < 2; ++i)
        if (pending[i] > 0)
            give_chunk(c.setup[i], static_cast<Dir>(i));
    return true;
}

ssize_t EventLoop::recv_past_mark(int fd, Pipe& p)
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

void EventLoop::on_splice_ready(Conn& c, Dir d, int res)
{
    if (c.aborting)
        return maybe_release(c);
    if (res < 0) {
        note_relay_error(c, idx(d), res);
        return apply(c, c.relay.on_recv(d, res));
    }
    Pipe& p = c.pipe[idx(d)];
    if (!p) {
        p = pipes_->take();
        if (!p) {
            // Every pipe is carrying bytes elsewhere, or the fds are used up
            // while some are: wait for one to come back. Out of fds with no
            // pipe out, nothing would ever wake this connection.
            int err = errno;
            bool wait = err == ENOBUFS || ((err == EMFILE || err == ENFILE) && pipes_->out() > 0);
            if (!wait)
                return fail_early(c, End::error, fmt::format("pipe for the splice relay: {}", errno_text(err)));
            waiting_[kWaitPipe].push_back(Waiter{&c, d, c.gen});
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
        release_buffer(c, d);
        return submit_recv(c, d);
    }
    int r = n >= 0 ? static_cast<int>(n) : -errno;
    if (r > 0)
        c.piped[idx(d)] = static_cast<uint32_t>(r);
    else
        release_buffer(c, d);
    if (r < 0)
        note_relay_error(c, idx(d), r);
    const uint32_t gen = c.gen;
    apply(c, c.relay.on_recv(d, r));
    if (r == 0 && c.gen == gen && !c.closing && !c.aborting)
        watch_after_eof(c, d);
}

void EventLoop::splice_send(Conn& c, Dir d, uint32_t offset, uint32_t len)
{
    const int i = idx(d);
    ssize_t n = ::splice(c.pipe[i].r.get(), nullptr, c.dst(d).fd, nullptr, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n < 0 && errno == EAGAIN) {
        // The destination's send buffer is full: this direction reads
        // nothing more until these bytes are out (backpressure). They stay
        // in the pipe while few directions are stalled; past stall_cap_
        // they move to a spill chunk and the pipe goes back to the pool.
        if (!may_hold(c, d)) {
            char* spill = offset + len <= spill_bytes_ && c.piped[i] == len ? take_spill() : nullptr;
            if (spill) {
                ssize_t got = ::read(c.pipe[i].r.get(), spill + offset, len);
                if (got != static_cast<ssize_t>(len)) {
                    // Bytes out of the pipe but not all of them: the
                    // stream cannot go on.
                    give_spill(spill);
                    return apply(c, c.relay.on_send(d, -EIO));
                }
                c.spill[i] = spill;
                c.piped[i] = 0;
                pipes_->give(c.pipe[i], true);
                wake_waiter(waiting_[kWaitPipe]);
                return send_chunk(c, Op{Op::send, d, offset, len});
            }
            hold_anyway(c, d);  // no memory for a spill chunk: wait with the pipe
        }
        c.splice_len[i] = len;
        c.splice_offset[i] = offset;
        io_uring_sqe* s = sqe();
        io_uring_prep_poll_add(s, c.dst(d).fd, POLLOUT);
        io_uring_sqe_set_data64(s, pack(&c, kSend, d));
        ++c.inflight;
        return;
    }
    int r = n > 0 ? static_cast<int>(n) : n == 0 ? -EPIPE : -errno;
    if (r > 0)
        c.piped[i] -= static_cast<uint32_t>(r);
    else
        note_relay_error(c, idx(other(d)), r);
    apply(c, c.relay.on_send(d, r));
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
// read for any connection soon gets a unit.
void EventLoop::send_chunk(Conn& c, const Op& op)
{
    const int i = idx(op.dir);
    if (c.spliced && !c.spill[i])
        return splice_send(c, op.dir, op.offset, op.len);
    int flags = MSG_NOSIGNAL;
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
            if (bufs_->in_use() >= cfg_.buffers / 2)
                flags |= MSG_DONTWAIT;
        } else if (!may_hold(c, op.dir)) {
            char* spill = op.offset + op.len <= spill_bytes_ ? take_spill() : nullptr;
            if (spill) {
                std::memcpy(spill + op.offset, ring + op.offset, op.len);
                c.spill[i] = spill;
                bufs_->recycle(static_cast<uint16_t>(c.held[i]));
                c.held[i] = -1;
                wake_waiter(waiting_[kWaitBuffer]);
            } else {
                hold_anyway(c, op.dir);
            }
        }
    }
    char* base = c.spill[i]          ? c.spill[i]
                 : c.held[i] >= 0    ? bufs_->addr(static_cast<uint16_t>(c.held[i]))
                                     : c.setup[i];
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c.dst(op.dir).fd, base + op.offset, op.len, flags);
    on(s, c.dst(op.dir));
    io_uring_sqe_set_data64(s, pack(&c, kSend, op.dir));
    ++c.inflight;
}

bool EventLoop::may_hold(Conn& c, Dir d)
{
    if (c.stalled[idx(d)])
        return true;
    // Splice: every stall is seen (the splice is inline), so stalled
    // directions are counted. Ring: a send waiting in the kernel is not seen
    // (see send_chunk), so the buffers in use are what is bounded; every
    // holder was admitted while they were fewer than the cap, so holders of
    // either kind stay below it.
    if (c.spliced ? stalled_ >= stall_cap_ : bufs_->in_use() >= stall_cap_)
        return false;
    hold_anyway(c, d);
    return true;
}

void EventLoop::hold_anyway(Conn& c, Dir d)
{
    if (c.stalled[idx(d)])
        return;
    c.stalled[idx(d)] = true;
    if (c.spliced)
        ++stalled_;
}

char* EventLoop::take_spill()
{
    // mmap, not the heap, for the reasons take_chunk gives.
    if (free_spills_.empty()) {
        void* p = ::mmap(nullptr, spill_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
    char* chunk = free_spills_.back();
    free_spills_.pop_back();
    return chunk;
}

void EventLoop::give_spill(char*& chunk)
{
    if (!chunk)
        return;
    // Keep about a megabyte for the next stalls; beyond, back to the system.
    if (free_spills_.size() < free_spills_.capacity())
        free_spills_.push_back(chunk);
    else
        ::munmap(chunk, spill_bytes_);
    chunk = nullptr;
}

void EventLoop::note_relay_error(Conn& c, int sock_index, int res)
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

void EventLoop::watch_after_eof(Conn& c, Dir d)
{
    // Nothing reads this socket any more, so a reset that follows its FIN
    // (the peer closed, then got data it did not want) would go unseen while
    // the other direction still runs. A poll for errors catches it and the
    // reset is passed on, as it would reach the client of a direct connection.
    // Multishot: a plain poll would complete at once, since a socket past
    // FIN always reports RDHUP; this one reports each wakeup, the reset's too.
    io_uring_sqe* s = sqe();
    io_uring_prep_poll_multishot(s, c.src(d).fd, POLLERR);
    on(s, c.src(d));
    io_uring_sqe_set_data64(s, pack(&c, kWatch, d));
    c.watching[idx(d)] = true;
    ++c.inflight;
}

void EventLoop::apply(Conn& c, const Ops& ops)
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
            release_buffer(c, op.dir);
            submit_recv(c, op.dir);
            break;
        case Op::send:
            send_chunk(c, op);
            break;
        case Op::shutdown:
            if (!c.dst(op.dir).fixed) {
                // shutdown() on a socket never blocks; io_uring would punt it
                // to a worker thread, costing a thread hop per half-close.
                int rc = ::shutdown(c.dst(op.dir).fd, SHUT_WR) == 0 ? 0 : -errno;
                apply(c, c.relay.on_shutdown(op.dir, rc));
                break;
            }
            s = sqe();
            io_uring_prep_shutdown(s, c.dst(op.dir).fd, SHUT_WR);
            on(s, c.dst(op.dir));
            io_uring_sqe_set_data64(s, pack(&c, kShutdown, op.dir));
            ++c.inflight;
            break;
        case Op::abort:
            start_abort(c);
            break;
        case Op::finish:
            c.closing = true;
            for (Dir w : {Dir::ClientToUpstream, Dir::UpstreamToClient}) {
                if (!c.watching[idx(w)])
                    continue;
                s = sqe();
                io_uring_prep_cancel64(s, pack(&c, kWatch, w), 0);
                io_uring_sqe_set_data64(s, pack(&c, kCancel));
                ++c.inflight;
            }
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
    for (int i = 0; i < 2; ++i) {
        Conn::Sock k = c.sock(i);
        if (k.fd < 0)
            continue;
        io_uring_sqe* s = sqe();
        io_uring_prep_cancel_fd(s, k.fd, IORING_ASYNC_CANCEL_ALL | (k.fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
        io_uring_sqe_set_data64(s, pack(&c, kCancel));
        ++c.inflight;
    }
    maybe_release(c);
}

void EventLoop::maybe_release(Conn& c)
{
    if (c.inflight > 0 || !(c.aborting || c.closing))
        return;
    if (c.aborting && !c.lingered && linger_cmd_ && (c.slot[0] >= 0 || c.slot[1] >= 0)) {
        // A reset is passed on as a reset: SO_LINGER {1,0} on the fixed
        // sockets first, then the close below sends RST.
        c.lingered = true;
        for (int i = 0; i < 2; ++i) {
            if (c.slot[i] < 0)
                continue;
            io_uring_sqe* s = sqe();
            prep_setsockopt(s, c.slot[i], SOL_SOCKET, SO_LINGER, &c.linger_rst, sizeof(c.linger_rst));
            io_uring_sqe_set_data64(s, pack(&c, kLinger));
            ++c.inflight;
        }
        return;
    }
    log_conn(c);
    if (auto it = stats_.routes.find(c.route_name); it != stats_.routes.end() && it->second.active > 0) {
        --it->second.active;
        it->second.bytes_c2s += c.relay.bytes(Dir::ClientToUpstream);
        it->second.bytes_s2c += c.relay.bytes(Dir::UpstreamToClient);
    }
    if (End end = c.early_end != End::none ? c.early_end : c.relay.end(); end != End::eof)
        ++stats_.failures[fmt::format("{}/{}", c.route_name, end_name(end == End::none ? End::reset : end))];
    g_conn_fds.fetch_sub(static_cast<int64_t>(bool(c.fd[0])) + bool(c.fd[1]), std::memory_order_relaxed);
    if (c.aborting) {
        close_with_reset(c.fd[0]);
        close_with_reset(c.fd[1]);
    } else {
        c.fd[0].reset();
        c.fd[1].reset();
    }
    clear_slots(c);
    c.lingered = false;
    c.relaying = false;
    ++c.gen;
    release_buffer(c, Dir::ClientToUpstream);
    release_buffer(c, Dir::UpstreamToClient);
    c.router.reset();
    c.hs.reset();
    if (c.live_prev)
        c.live_prev->live_next = c.live_next;
    else
        live_head_ = c.live_next;
    if (c.live_next)
        c.live_next->live_prev = c.live_prev;
    c.next_free = free_;
    free_ = &c;
    live_.fetch_sub(1, std::memory_order_relaxed);
}

void EventLoop::sweep_idle()
{
    // Idle means no bytes moved either way. A completion of ours says bytes
    // moved (last_active), but a send the kernel is still carrying out, or
    // bytes draining from a socket's buffer to a slow reader, complete
    // nothing for as long as they take: once a connection has been quiet
    // for half the limit, the kernel's byte counters of its sockets are
    // asked at every sweep, and a change since the last answer counts as
    // traffic. Sockets only in the fixed-file table have no fd to ask
    // (TCP_INFO has no io_uring form): for them completions alone count.
    auto limit = std::chrono::duration<double>(cfg_.idle_timeout);
    for (Conn* c = live_head_; c;) {
        Conn* next = c->live_next;  // fail_early may release c
        if (!c->relaying || c->aborting || now_ - c->last_active <= limit / 2) {
            c = next;
            continue;
        }
        std::optional<uint64_t> moved;
        for (int i = 0; i < 2; ++i)
            if (c->slot[i] < 0 && c->fd[i])
                if (auto n = tcp_bytes_moved(c->fd[i].get()))
                    moved = moved.value_or(0) + *n;
        if (moved) {
            if (c->moved_at >= c->last_active && *moved != c->moved)
                c->last_active = now_;
            c->moved = *moved;
            c->moved_at = now_;
        }
        if (now_ - c->last_active > limit)
            fail_early(*c, End::idle, fmt::format("no bytes moved for {}s", cfg_.idle_timeout));
        c = next;
    }
}

void EventLoop::log_conn(const Conn& c) const
{
    if (!log::enabled(log::Level::info))
        return;
    End end = c.early_end != End::none ? c.early_end : c.relay.end();
    if (end == End::none)
        end = End::reset;
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c.started).count();
    // Written into stack buffers (SockAddr's formatter included): logging
    // every connection costs no heap allocation (tools.sh counts them).
    const uint64_t c2s = c.relay.bytes(Dir::ClientToUpstream), s2c = c.relay.bytes(Dir::UpstreamToClient);
    if (log::json()) {
        fmt::memory_buffer f;
        auto out = std::back_inserter(f);
        fmt::format_to(out, "\"client\":\"{}\",\"orig\":\"{}\",\"via\":\"{}\",\"route\":\"", c.client, c.orig, c.via);
        json_escape_to(f, c.route_name);
        fmt::format_to(out, "\",\"c2s\":{},\"s2c\":{},\"ms\":{:.3f},\"end\":\"{}\"", c2s, s2c, ms, end_name(end));
        if (c.sniffed) {
            fmt::format_to(out, ",\"domain\":\"");
            json_escape_to(f, c.domain);
            f.push_back('"');
        }
        if (!c.detail.empty()) {
            fmt::format_to(out, ",\"reason\":\"");
            json_escape_to(f, c.detail);
            f.push_back('"');
        }
        log::write_event(log::Level::info, "conn", std::string_view(f.data(), f.size()));
        return;
    }
    fmt::memory_buffer extra;
    if (c.sniffed)
        fmt::format_to(std::back_inserter(extra), " domain={}",
                       c.domain.empty() ? std::string_view("-") : std::string_view(c.domain));
    if (!c.detail.empty())
        fmt::format_to(std::back_inserter(extra), " reason=\"{}\"", c.detail);
    log::info("conn client={} orig={} via={} route={} c2s={} s2c={} ms={:.3f} end={}{}", c.client, c.orig, c.via,
              c.route_name, c2s, s2c, ms, end_name(end), std::string_view(extra.data(), extra.size()));
}

void EventLoop::run()
{
    if (ring_.flags & IORING_SETUP_R_DISABLED) {
        // liburing 2.3 has no wrapper for this one.
        if (syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0)
            fail_errno("enable io_uring");
    }
    now_ = std::chrono::steady_clock::now();
    for (auto& l : listeners_)
        arm_accept(l);
    arm_wake();
    if (cfg_.idle_timeout > 0)
        arm_sweep();

    while (!stop_.load(std::memory_order_relaxed)) {
        int ret = io_uring_submit_and_wait(&ring_, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            fail("io_uring_submit_and_wait: {}", errno_text(-ret));
        now_ = std::chrono::steady_clock::now();
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
                continue;
            case kAccept:
                on_accept(*static_cast<Listener*>(ptr), res, cqe->flags);
                continue;
            case kWake:
                answer_snapshots();
                if (!stop_.load())
                    arm_wake();
                continue;
            case kSweep:
                sweep_idle();
                arm_sweep();
                continue;
            default:
                break;
            }
            Conn& c = *static_cast<Conn*>(ptr);
            if (tag == kWatch && (cqe->flags & IORING_CQE_F_MORE)) {
                // An interim report of the multishot watch: it stays armed.
                if (res > 0 && (res & POLLERR) && !c.aborting && !c.closing)
                    fail_early(c, End::reset, "peer reset after its EOF");
                continue;
            }
            --c.inflight;
            c.last_active = now_;
            switch (tag) {
            case kConnect:
                on_connect(c, res);
                break;
            case kSniffRecv:
                on_sniff(c, res);
                break;
            case kHsSend:
                on_hs_send(c, res);
                break;
            case kHsRecv:
                on_hs_recv(c, res);
                break;
            case kRecv:
                on_relay_recv(c, dir, res, cqe->flags);
                break;
            case kSend:
            case kShutdown:
                if (c.aborting) {
                    maybe_release(c);
                    break;
                }
                if (tag == kSend && c.spliced && !c.spill[idx(dir)] && res >= 0) {
                    // Splice relay: that was the POLLOUT wait; send now.
                    splice_send(c, dir, c.splice_offset[idx(dir)], c.splice_len[idx(dir)]);
                    break;
                }
                if (res < 0 && res != -EAGAIN)
                    note_relay_error(c, idx(other(dir)), res);
                apply(c, tag == kSend ? c.relay.on_send(dir, res) : c.relay.on_shutdown(dir, res));
                break;
            case kWatch:  // the watch's last report
                c.watching[idx(dir)] = false;
                if (!c.aborting && !c.closing && res > 0 && (res & POLLERR))
                    fail_early(c, End::reset, "peer reset after its EOF");
                else
                    maybe_release(c);
                break;
            case kLinger:
                if (res < 0 && linger_cmd_) {
                    // Kernel without socket uring_cmd: closes stay graceful.
                    linger_cmd_ = false;
                    log::warn("io_uring socket setsockopt unavailable ({}): resets are passed on as EOF",
                              errno_text(-res));
                }
                maybe_release(c);
                break;
            default:  // link timeouts and cancels only hold a reference
                maybe_release(c);
                break;
            }
        }
        io_uring_cq_advance(&ring_, seen);
    }
}

}  // namespace ktp
