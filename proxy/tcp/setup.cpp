// The TCP setup pipeline, phase by phase; each phase is driven by
// completions and ends in the next one, in a failure (the client is reset,
// as the destination itself would have done) or in the relay.
#include "tcp/setup.h"

#include "base/error.h"
#include "base/log.h"
#include "kernel/bpf_abi.h"
#include "loop/sock_cmd.h"
#include "netns/netns.h"
#include "relay/driver.h"
#include "route/sniff.h"
#include "dns/dns_tcp.h"
#include "dns/name_memory.h"
#include "upstream/handshake.h"
#include "upstream/http_connect.h"
#include "upstream/session_pool.h"
#include "upstream/socks5.h"
#include "upstream/upstream_group.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace ktp {

namespace {

// How long a connection that got a warm session waits for the client's
// first bytes, to send them with the CONNECT request: an app that speaks
// first has written them by then (usually within microseconds of its
// connect); a server-speaks-first protocol loses only this much.
constexpr double kEarlyWait = 0.005;

void set_nodelay(int fd)
{
    // The relay forwards whole chunks as they arrive; Nagle would only add latency.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

TcpSetup::TcpSetup(const LoopConfig& cfg, Ring& ring, FixedFiles& fixed, ConnPool& pool, SetupChunks& chunks,
                   RelayDriver& relay, ConnObserver& observer, const RouterSlot& router,
                   const std::chrono::steady_clock::time_point& now, const std::atomic<bool>& stopping)
    : cfg_(cfg), ring_(ring), fixed_(fixed), pool_(pool), chunks_(chunks), relay_(relay), observer_(observer),
      router_(router), now_(now), stopping_(stopping), connect_timeout_(to_timespec(cfg.connect_timeout)),
      sniff_timeout_(to_timespec(cfg.sniff_timeout)), early_wait_(to_timespec(kEarlyWait))
{
    auto v = [](uint32_t x) { return static_cast<int>(x); };
    upstream_opts_.push_back({SOL_SOCKET, SO_MARK, v(cfg.mark)});
    // The relay forwards whole chunks as they arrive; Nagle would only add latency.
    upstream_opts_.push_back({IPPROTO_TCP, TCP_NODELAY, 1});
    if (cfg.keepalive_idle > 0) {
        upstream_opts_.push_back({SOL_SOCKET, SO_KEEPALIVE, 1});
        upstream_opts_.push_back({IPPROTO_TCP, TCP_KEEPIDLE, v(cfg.keepalive_idle)});
        upstream_opts_.push_back({IPPROTO_TCP, TCP_KEEPINTVL, v(cfg.keepalive_intvl)});
        upstream_opts_.push_back({IPPROTO_TCP, TCP_KEEPCNT, v(cfg.keepalive_cnt)});
    }
    if (cfg.user_timeout_ms > 0)
        upstream_opts_.push_back({IPPROTO_TCP, TCP_USER_TIMEOUT, v(cfg.user_timeout_ms)});
    opts_by_ring_ = sock_cmd_setsockopt_works();
}

void TcpSetup::use_sessions(SessionPools& s)
{
    sessions_ = &s;
    s.on_member_down = [this](const UpstreamHealth& h) { member_down(h); };
}

void TcpSetup::member_down(const UpstreamHealth& h, const Conn* except)
{
    for (Conn* c = pool_.live_head(); c; c = c->live_next) {
        // Only where a retry is allowed (retry_elsewhere): a group, not yet
        // retried, none of the client's bytes sent.
        if (c == except || !c->hs || c->aborting || !c->group || c->retried || c->hs->early_handed_out() || !c->upstream ||
            c->upstream->health.get() != &h)
            continue;
        // Nothing matches unless its reply is awaited (-ENOENT, ignored).
        io_uring_sqe* e = ring_.sqe();
        io_uring_prep_cancel64(e, pack(c, kHsRecv), 0);
        io_uring_sqe_set_data64(e, pack(nullptr, kIgnore));
    }
}

void TcpSetup::listen(Listener& l)
{
    io_uring_sqe* s = ring_.sqe();
    // Non-blocking from the start: splice(2) waits on a blocking socket
    // whatever its flags say, and the loop must never wait there. io_uring's
    // own operations behave the same on either kind.
    io_uring_prep_multishot_accept(s, l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    io_uring_sqe_set_data64(s, pack(&l, kAccept));
}

void TcpSetup::on_completion(const Completion& cq)
{
    if (cq.tag == kAccept)
        return on_accept(*static_cast<Listener*>(cq.obj), cq.res, cq.flags);
    Conn& c = *static_cast<Conn*>(cq.obj);
    if (cq.tag == kSockopt) {
        // Only a failure posts (IOSQE_CQE_SKIP_SUCCESS), and before the
        // connect behind it completes as cancelled: c is still in setup, and
        // this request was never counted in flight.
        return relay_.fail(c, End::error, fmt::format("socket options on upstream socket: {}", errno_text(-cq.res)));
    }
    --c.inflight;
    c.last_active = now_;
    switch (cq.tag) {
    case kConnect:
        on_connect(c, cq.res);
        break;
    case kSniffRecv:
        on_sniff(c, cq.res);
        break;
    case kHsSend:
        on_hs_send(c, cq.res);
        break;
    case kHsRecv:
        on_hs_recv(c, cq.res);
        break;
    case kEarlyRecv:
        on_early(c, cq.res);
        break;
    case kPeekRecv:
        on_peek(c, cq.res);
        break;
    default:
        break;
    }
}

void TcpSetup::on_accept(Listener& l, int res, uint32_t flags)
{
    if (!(flags & IORING_CQE_F_MORE)) {
        if (l.closing)
            l.closed = true;
        else if (!stopping_.load())
            listen(l);
    }
    if (res < 0) {
        if (l.closing)
            return;
        log::warn("accept on {}: {}", l.addr.to_string(), errno_text(-res));
        return;
    }
    Conn& c = pool_.alloc(router_.load(std::memory_order_acquire), now_);
    c.fd[0] = UniqueFd(res);
    FixedFiles::opened();
    // The client's address is asked now, not when shown (docs/performance.md,
    // issue 19: lazily, the restart test of tests/e2e/hostile.sh saw
    // connections no line named).
    if (l.transparent) {
        // Gateway: the TC program handed the SYN to this listener; the
        // connection's local address is where the client was going.
        learn_addresses(c);
        c.orig = SockAddr::local_of(res).unmapped();
    } else {
        // One call gives the destination, who connected and from where:
        // ktproxy's own option, answered by the same getsockopt program as
        // SO_ORIGINAL_DST from the same socket storage (bpf/ktproxy_shared.h).
        ktp_conn_info info{};
        socklen_t len = sizeof(info);
        if (getsockopt(res, SOL_IP, KTP_SO_CONN_INFO, &info, &len) != 0 || len != sizeof(info)) {
            learn_addresses(c);
            return relay_.fail(c, End::error, "no original destination (connection not redirected by ktproxy's hooks)");
        }
        const ktp_orig_dst& od = info.od;
        c.client = SockAddr::from_wire(info.peer_addr, info.peer_port, info.peer_family, true);
        c.orig = SockAddr::from_wire(od.addr, od.port, od.family, true);
        // A container's listener may close (its namespace gone) while the
        // connection lives on: its address is the namespace's copy.
        c.app_ns = l.ns;
        c.local = !l.ns ? &l.addr : l.addr.family() == AF_INET6 ? &l.ns->listen6 : &l.ns->listen4;
        c.egress = l.egress;
        c.proc.pid = od.pid;
        c.proc.tid = od.tid;
        c.proc.uid = od.uid;
        std::memcpy(c.proc.comm, od.comm, sizeof(c.proc.comm));
    }
    if (c.orig.port() == l.addr.port() && c.orig.ip_string() == l.addr.ip_string())
        return relay_.fail(c, End::error, "original destination is ktproxy itself");
    // DNS over TCP (--udp): the forwarder reads its queries and routes each
    // by the name asked, as it does over UDP; a container's exchanges leave
    // from its namespace (c.egress: --egress container), as its relays do.
    // Never to a fake address, which must not reach the network.
    if (cfg_.dns_tcp && !l.transparent && c.orig.port() == 53 && !(cfg_.names && cfg_.names->is_fake(c.orig))) {
        cfg_.dns_tcp->adopt(std::move(c.fd[0]), c.client, c.orig, c.proc, c.egress);
        FixedFiles::closed();
        pool_.release(c);
        return;
    }
    // Past half of the fd limit the client's socket goes into the fixed
    // table now, not when relaying starts: in a burst, connections still in
    // setup hold two ordinary fds each (the client's and the upstream's) and
    // could use up the other half, failing socket() for the next upstream.
    // Not where a fixed socket cannot be reset (SO_LINGER through io_uring
    // needs Linux 6.7: see FixedFiles::can_reset): a failed setup must still
    // reset the client, as the destination's refusal would have.
    if (fixed_.can_reset() && fixed_.over_budget())
        fixed_.move_in(c.fd[0], c.slot[0]);

    // The name the app resolved this address from, if its DNS went through
    // ktproxy: domain rules match on it unless sniffing finds another.
    if (cfg_.names) {
        // The upstream gets it only if this process asked for it itself
        // (NameMemory::Name), or it is a fake address's (ktproxy answered
        // the query itself, and the address means nothing outside).
        NameMemory::Name n = cfg_.names->lookup(c.orig, c.proc.pid);
        c.domain = std::move(n.name);
        c.domain_untrusted = !c.domain.empty() && !n.trusted;
    }
    if (c.router->has_domain_rules() && c.router->decide(c.orig, nullptr).kind == Decision::need_sniff) {
        c.setup[idx(Dir::ClientToUpstream)] = chunks_.take(Dir::ClientToUpstream);
        if (!c.setup[idx(Dir::ClientToUpstream)])
            return relay_.fail(c, End::error, fmt::format("sniff buffer: {}", errno_text(errno)));
        return sniff_more(c);
    }
    route(c, nullptr);
}

void TcpSetup::recv_with_timeout(Conn& c, int i, char* buf, uint32_t len, Tag tag, const __kernel_timespec& ts)
{
    ring_.reserve(2);
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_recv(s, c.sock(i).fd, buf, len, 0);
    on(s, c.sock(i));
    io_uring_sqe_set_data64(s, pack(&c, tag));
    s->flags |= IOSQE_IO_LINK;
    ++c.inflight;
    c.timeout = ts;
    ring_.link_timeout(c.timeout);
}

void TcpSetup::sniff_more(Conn& c)
{
    // Server-speaks-first protocols never send: the timeout routes them
    // without a name instead of hanging.
    char* base = c.setup[idx(Dir::ClientToUpstream)];
    recv_with_timeout(c, 0, base + c.sniff_len, SetupChunks::kSniff - c.sniff_len, kSniffRecv, sniff_timeout_);
}

void TcpSetup::on_sniff(Conn& c, int res)
{
    if (c.aborting)
        return relay_.maybe_release(c);
    if (res < 0 && res != -ECANCELED)
        return relay_.fail(c, End::reset, fmt::format("client: {}", errno_text(-res)));
    if (res > 0) {
        c.sniff_len += static_cast<uint32_t>(res);
        SniffResult r = sniff_domain(std::string_view(c.setup[idx(Dir::ClientToUpstream)], c.sniff_len));
        if (r.status == SniffResult::need_more && c.sniff_len < SetupChunks::kSniff)
            return sniff_more(c);
        if (r.status == SniffResult::found)
            c.domain = r.domain, c.domain_untrusted = false;
    }
    // Timeout (-ECANCELED), EOF (0: the relay's recv sees it again), or
    // enough bytes: decide with what we know.
    c.sniffed = true;
    route(c, &c.domain);
}

void TcpSetup::route(Conn& c, const std::string* domain)
{
    Decision d = c.router->decide(c.orig, domain ? domain : &c.domain);
    if (cfg_.names && cfg_.names->is_fake(c.orig)) {
        // A fake address never goes out on the network: only an upstream
        // reached with the name it stands for may take the connection.
        const bool by_upstream = d.action.kind == ActionKind::proxy && d.upstream &&
                                 (d.upstream->url.kind != UpstreamUrl::Kind::direct || !d.upstream->members.empty()) &&
                                 !c.domain.empty();
        if (!by_upstream) {
            c.route_name = "block";
            observer_.routed(c);
            return relay_.fail(c, End::blocked,
                               c.domain.empty() ? "fake address ktproxy did not hand out (or expired)"
                                                : fmt::format("fake address of {} routed direct", c.domain));
        }
    }
    if (d.action.kind == ActionKind::block) {
        c.route_name = "block";
        observer_.routed(c);
        return relay_.fail(c, End::blocked, d.rule >= 0 ? fmt::format("rule {}", d.rule + 1) : "default");
    }
    c.upstream = d.action.kind == ActionKind::proxy ? d.upstream : c.router->upstream("direct");
    c.route_name = c.upstream ? c.upstream->name : "direct";
    observer_.routed(c);
    if (c.upstream && !c.upstream->members.empty()) {
        c.group = c.upstream;
        c.upstream = pick_member(*c.group, now_);
    }
    dial(c);
}

bool TcpSetup::retry_elsewhere(Conn& c)
{
    // Counted against the upstream: a group skips it for a back-off.
    c.upstream->health->failed(now_);
    if (c.group)
        member_down(*c.upstream->health, &c);
    // Once the client's bytes went out with a request they may have been
    // passed on: they must never reach the destination a second time.
    if (!c.group || c.retried || (c.hs && c.hs->early_handed_out()))
        return false;
    const Upstream* next = pick_member(*c.group, now_, c.upstream);
    if (!next)
        return false;
    log::debug("client {}: upstream {} failed during setup, trying {} ({})", c.client, c.upstream->name, next->name,
               c.group->name);
    c.group->health->retried_total.fetch_add(1, std::memory_order_relaxed);
    c.retried = true;
    c.upstream = next;
    if (c.fd[1]) {
        c.fd[1].reset();
        FixedFiles::closed();
    }
    c.hs.reset();
    c.hs_in = 0;
    c.hs_out_sent = 0;
    std::string().swap(c.hs_out);
    c.warm = false;
    if (c.early > 0) {  // taken for a request that never went out: still at the start of setup[c2u]
        c.sniff_len = c.early;
        c.early = 0;
    }
    dial(c);
    return true;
}

void TcpSetup::dial(Conn& c)
{
    const SockAddr* target = &c.orig;
    if (c.upstream && c.upstream->url.kind != UpstreamUrl::Kind::direct) {
        target = &c.upstream->addr;
        // A name another process asked for could send this connection
        // anywhere (its answer says "evil.example" for the victim's
        // address): the upstream gets the address the app connected to;
        // the name still routes and is logged.
        Target t{c.domain_untrusted ? std::string() : c.domain, c.orig};
        // A warm session is past the greeting: only the CONNECT is left.
        UniqueFd warm = sessions_ ? sessions_->take(c.router, *c.upstream) : UniqueFd();
        auto phase = warm ? Socks5Handshake::Phase::connect_only : Socks5Handshake::Phase::full;
        if (c.upstream->url.kind == UpstreamUrl::Kind::socks5)
            c.hs = std::make_unique<Socks5Handshake>(c.upstream->url.user, c.upstream->url.password, t, phase);
        else
            c.hs = std::make_unique<HttpConnectHandshake>(c.upstream->url.user, c.upstream->url.password, t);
        if (!c.setup[idx(Dir::UpstreamToClient)])
            c.setup[idx(Dir::UpstreamToClient)] = chunks_.take(Dir::UpstreamToClient);
        if (!c.setup[idx(Dir::UpstreamToClient)])
            return relay_.fail(c, End::error, fmt::format("handshake buffer: {}", errno_text(errno)));
        if (warm) {
            c.fd[1] = std::move(warm);
            FixedFiles::opened();
            c.warm = true;
            return start_handshake(c);
        }
    }

    c.fd[1] = c.egress ? c.egress->egress_socket(target->family())
                       : UniqueFd(::socket(target->family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (c.fd[1])
        FixedFiles::opened();
    if (!c.fd[1])
        return relay_.fail(c, End::error, fmt::format("upstream socket(): {}", errno_text(errno)));
    if (c.hs && c.upstream->url.tfo) {
        // The connect then completes at once when a cookie is known, and the
        // greeting (or request) goes out in the SYN.
        int one = 1;
        if (setsockopt(c.fd[1].get(), IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof(one)) != 0)
            return relay_.fail(c, End::error, fmt::format("TCP_FASTOPEN_CONNECT on upstream socket: {}", errno_text(errno)));
    }
    if (!c.hs)
        peek(c);
    if (opts_by_ring_) {
        queue_upstream_options(c);
    } else {
        if (setsockopt(c.fd[1].get(), SOL_SOCKET, SO_MARK, &cfg_.mark, sizeof(cfg_.mark)) != 0)
            return relay_.fail(c, End::error, fmt::format("SO_MARK on upstream socket: {}", errno_text(errno)));
        set_nodelay(c.fd[1].get());
        if (!set_upstream_options(c))
            return;
        ring_.reserve(2);
    }
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_connect(s, c.fd[1].get(), target->get(), target->size());
    io_uring_sqe_set_data64(s, pack(&c, kConnect));
    s->flags |= IOSQE_IO_LINK;
    ++c.inflight;
    c.timeout = connect_timeout_;
    c.dialed = now_;
    // A group member that does not answer in about two of its usual connect
    // times is given up for the next member (upstream_health.h); the last
    // one left gets the whole timeout.
    if (c.hs && c.group && !c.retried && c.group->members.size() > 1)
        c.timeout = to_timespec(c.upstream->health->connect_bound(cfg_.connect_timeout));
    ring_.link_timeout(c.timeout);
}

void TcpSetup::queue_upstream_options(Conn& c)
{
    // One chain: the options in order, then the connect and its timeout, all
    // in one submission (a chain cut in two would run the connect before its
    // SO_MARK). A failing option cancels the rest of the chain.
    ring_.reserve(static_cast<unsigned>(upstream_opts_.size()) + 2);
    for (const SockOpt& o : upstream_opts_) {
        io_uring_sqe* s = ring_.sqe();
        prep_setsockopt(s, c.fd[1].get(), false, o.level, o.name, &o.value, sizeof(o.value));
        s->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(s, pack(&c, kSockopt));
    }
}

bool TcpSetup::set_upstream_options(Conn& c)
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
        relay_.fail(c, End::error, fmt::format("{} on upstream socket: {}", what, errno_text(errno)));
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

void TcpSetup::on_connect(Conn& c, int res)
{
    if (c.aborting)
        return relay_.maybe_release(c);
    if (res < 0) {
        End why = res == -ECANCELED || res == -ETIMEDOUT ? End::timeout
                  : res == -ECONNREFUSED                 ? End::refused
                                                         : End::error;
        const char* what = c.hs ? "upstream proxy" : "destination";
        if (c.hs && retry_elsewhere(c))
            return;
        if (!c.hs && (why == End::refused || why == End::timeout || res == -EHOSTUNREACH || res == -ENETUNREACH))
            observer_.unreachable(c, res == -ECANCELED ? ETIMEDOUT : -res);
        // The app asked for a connection that cannot be made: tell it with a
        // reset, as the destination itself would have.
        // EADDRNOTAVAIL here is almost always this host's ephemeral ports
        // run dry (TIME_WAIT at a high connection rate): say what to change.
        const char* hint = res == -EADDRNOTAVAIL ? " (no free local port: widen net.ipv4.ip_local_port_range "
                                                   "or set net.ipv4.tcp_tw_reuse=1)"
                                                 : "";
        return relay_.fail(c, why,
                           fmt::format("{}: {}{}", what, res == -ECANCELED ? "connect timed out" : errno_text(-res),
                                       hint));
    }
    if (c.hs) {
        if (!c.upstream->url.tfo)  // with a cookie, it completed before any packet left
            c.upstream->health->connected_in(now_ - c.dialed);
        return start_handshake(c);
    }
    if (c.peeking) {  // its bytes go first: the relay starts when it completes
        c.connected = true;
        return;
    }
    relay_.start(c, c.sniff_len, 0);
}

void TcpSetup::peek(Conn& c)
{
    // What the client has sent by now, read beside the connect to the
    // destination and never waited for (MSG_DONTWAIT): it completes inside
    // the enter that submits the connect, which then sleeps for the connect
    // alone (Ring::note_quiet), and the relay starts by sending those bytes
    // instead of asking for them in one more enter: one io_uring_enter
    // fewer per connection from one client (issue 19). Queued ahead of the
    // connect, so its completion comes first.
    if (c.sniff_len > 0 || c.setup[idx(Dir::ClientToUpstream)])
        return;
    char* buf = c.setup[idx(Dir::ClientToUpstream)] = chunks_.take(Dir::ClientToUpstream);
    if (!buf)
        return;
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_recv(s, c.sock(0).fd, buf, SetupChunks::kSniff, MSG_DONTWAIT);
    on(s, c.sock(0));
    io_uring_sqe_set_data64(s, pack(&c, kPeekRecv));
    ++c.inflight;
    c.peeking = true;
    ring_.note_quiet();
}

void TcpSetup::on_peek(Conn& c, int res)
{
    c.peeking = false;
    if (c.aborting)
        return relay_.maybe_release(c);
    // -EAGAIN: nothing yet, and 0: the client's EOF, which the relay's
    // first read sees again. A reset is passed on now.
    if (res < 0 && res != -EAGAIN)
        return relay_.fail(c, End::reset, fmt::format("client: {}", errno_text(-res)));
    if (res > 0)
        c.sniff_len = static_cast<uint32_t>(res);
    if (c.connected)
        relay_.start(c, c.sniff_len, 0);
}

void TcpSetup::start_handshake(Conn& c)
{
    if (!c.upstream->url.optimistic)
        return hs_step(c, c.hs->start());
    char*& buf = c.setup[idx(Dir::ClientToUpstream)];
    if (!buf && !(buf = chunks_.take(Dir::ClientToUpstream)))
        return hs_step(c, c.hs->start());  // no buffer: the bytes follow the ordinary way
    if (c.sniff_len == 0 && c.slot[0] < 0) {
        // What the client has sent by now, without waiting.
        ssize_t n = ::recv(c.fd[0].get(), buf, SetupChunks::kSniff, MSG_DONTWAIT);
        if (n > 0)
            c.sniff_len = static_cast<uint32_t>(n);
    }
    if (c.sniff_len == 0 && c.warm)
        // After a cold connect the client has had a round trip to speak;
        // with a warm session it may not have written yet.
        return recv_with_timeout(c, 0, buf, SetupChunks::kSniff, kEarlyRecv, early_wait_);
    on_early(c, 0);
}

void TcpSetup::on_early(Conn& c, int res)
{
    if (c.aborting)
        return relay_.maybe_release(c);
    if (res < 0 && res != -ECANCELED)
        return relay_.fail(c, End::reset, fmt::format("client: {}", errno_text(-res)));
    if (res > 0)
        c.sniff_len += static_cast<uint32_t>(res);
    // The bytes go with the request; the relay has none left to replay. A
    // refused CONNECT resets the client, and the bytes reached no one: the
    // upstream connects nowhere and discards them.
    if (c.sniff_len > 0) {
        c.hs->send_early(std::string(c.setup[idx(Dir::ClientToUpstream)], c.sniff_len));
        c.early = c.sniff_len;
        c.sniff_len = 0;
    }
    hs_step(c, c.hs->start());
}

void TcpSetup::hs_step(Conn& c, HandshakeStep step)
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
        io_uring_sqe* s = ring_.sqe();
        io_uring_prep_send(s, c.fd[1].get(), c.hs_out.data(), c.hs_out.size(), MSG_NOSIGNAL);
        io_uring_sqe_set_data64(s, pack(&c, kHsSend));
        ++c.inflight;
        return;
    }
    case HandshakeStep::need_more: {
        if (c.hs_in >= SetupChunks::kHandshake)
            return relay_.fail(c, End::upstream, "upstream handshake reply too large");
        recv_with_timeout(c, 1, in + c.hs_in, SetupChunks::kHandshake - c.hs_in, kHsRecv, connect_timeout_);
        return;
    }
    case HandshakeStep::done:
        c.upstream->health->succeeded();
        c.hs.reset();
        std::string().swap(c.hs_out);  // a held connection keeps no handshake memory
        return relay_.start(c, c.sniff_len, c.hs_in);
    case HandshakeStep::failed:
        if (!c.hs->target_refused() && retry_elsewhere(c))
            return;
        return relay_.fail(c, End::upstream, step.error);
    }
}

void TcpSetup::on_hs_send(Conn& c, int res)
{
    if (c.aborting)
        return relay_.maybe_release(c);
    if (res <= 0) {
        if (retry_elsewhere(c))
            return;
        return relay_.fail(c, End::upstream,
                           fmt::format("upstream proxy: send: {}", res == 0 ? "closed" : errno_text(-res)));
    }
    c.hs_out_sent += static_cast<uint32_t>(res);
    if (c.hs_out_sent < c.hs_out.size()) {
        io_uring_sqe* s = ring_.sqe();
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

void TcpSetup::on_hs_recv(Conn& c, int res)
{
    if (c.aborting)
        return relay_.maybe_release(c);
    if (res <= 0 && retry_elsewhere(c))
        return;
    if (res == -ECANCELED)
        return relay_.fail(c, End::timeout, "upstream proxy: handshake timed out");
    if (res < 0)
        return relay_.fail(c, End::upstream, fmt::format("upstream proxy: {}", errno_text(-res)));
    if (res == 0)
        return relay_.fail(c, End::upstream, "upstream proxy closed the connection during the handshake");
    c.hs_in += static_cast<uint32_t>(res);
    hs_step(c, c.hs->feed(std::string_view(c.setup[idx(Dir::UpstreamToClient)], c.hs_in)));
}

}  // namespace ktp
