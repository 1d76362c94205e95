// Warm upstream sessions. Each session has at most one operation in flight
// (connect, a handshake send or recv, or the idle watch), each bounded by a
// linked timeout; the session object lives until both have completed, even
// after its socket was handed to a connection.
#include "upstream/session_pool.h"

#include "base/error.h"
#include "base/log.h"
#include "upstream/upstream_health.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace ktp {

namespace {

// Gives up on a fill streak's back-off growth here: an upstream that comes
// back is warm again within this long. Under UpstreamHealth::kBackoff: a
// dead group member is probed again before its back-off ends, so it stays
// down, and connections never find it dead themselves (one more round trip).
constexpr double kMaxBackoff = 2.5;
static_assert(kMaxBackoff < UpstreamHealth::kBackoff.count());

}  // namespace

SessionPools::SessionPools(const LoopConfig& cfg, Ring& ring, const std::chrono::steady_clock::time_point& now)
    : cfg_(cfg), ring_(ring), now_(now), connect_timeout_(to_timespec(cfg.connect_timeout))
{
}

SessionPools::~SessionPools() = default;

void SessionPools::sync(std::shared_ptr<const Router> r)
{
    router_ = std::move(r);
    by_upstream_.clear();
    std::vector<Pool*> used;
    for (const auto& u : router_->upstreams()) {
        if (u->url.kind == UpstreamUrl::Kind::direct || u->url.pool == 0)
            continue;
        // Same name, address, credentials and options: the same pool, its
        // sessions stay warm across a reload.
        std::string key = fmt::format("{}\n{}\n{}\n{}\n{}\n{}\n{}", u->name, static_cast<int>(u->url.kind),
                                      u->addr.to_string(), u->url.user, u->url.password, u->url.pool, u->url.pool_age);
        Pool* p = nullptr;
        for (auto& q : pools_)
            if (!q->retired && q->key == key)
                p = q.get();
        if (!p) {
            pools_.push_back(std::make_unique<Pool>());
            p = pools_.back().get();
            p->key = std::move(key);
            p->name = u->name;
            p->url = u->url;
            p->addr = u->addr;
            p->target = u->url.pool;
        }
        p->health = u->health;
        by_upstream_[u.get()] = p;
        used.push_back(p);
    }
    for (auto& p : pools_) {
        if (p->retired || std::find(used.begin(), used.end(), p.get()) != used.end())
            continue;
        p->retired = true;
        p->target = 0;
        while (!p->ready.empty())
            drop(*p->ready.back());
    }
    for (Pool* p : used)
        fill(*p);
}

UniqueFd SessionPools::take(const std::shared_ptr<const Router>& r, const Upstream& u)
{
    if (r != router_)
        sync(r);
    auto it = by_upstream_.find(&u);
    if (it == by_upstream_.end())
        return {};
    Pool& p = *it->second;
    const auto max_age = std::chrono::duration<double>(p.url.pool_age);
    while (!p.ready.empty()) {
        // The youngest: the likeliest still open at the far end.
        Session& s = *p.ready.back();
        if (now_ - s.born > max_age) {
            // Its watch has not reported yet; it would have.
            ++counts_.expired;
            drop(s);
            continue;
        }
        if (!alive(s.fd.get())) {
            // Closed at the far end, and its watch has not reported yet.
            p.health->suspect(now_);
            ++counts_.dropped;
            drop(s);
            continue;
        }
        unready(s);
        s.taken = true;
        cancel(s);
        UniqueFd fd = std::move(s.fd);
        ++counts_.hits;
        maybe_free(s);
        fill(p);
        return fd;
    }
    ++counts_.misses;
    fill(p);
    return {};
}

bool SessionPools::alive(int fd)
{
    // Idle, a session has nothing to read: EOF, a reset or unexpected bytes
    // all mean the upstream is done with it.
    char b;
    ssize_t r = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void SessionPools::fill(Pool& p)
{
    while (!p.retired && !p.waiting && p.ready.size() + p.filling < p.target)
        open_one(p);
}

void SessionPools::open_one(Pool& p)
{
    auto owned = std::make_unique<Session>();
    Session& s = *owned;
    s.pool = &p;
    s.born = now_;
    s.fd = UniqueFd(::socket(p.addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    auto failed = [&](const char* what) {
        log::warn("upstream {}: warm session: {}: {}", p.name, what, errno_text(errno));
        ++counts_.failed;
        ++p.failures;
        backoff(p);
    };
    if (!s.fd)
        return failed("socket()");
    // The same options as a connection's own upstream socket (tcp/setup.cpp):
    // the mark keeps it out of ktproxy's own interception, keepalive and
    // TCP_USER_TIMEOUT notice an upstream that died silently.
    int one = 1;
    if (setsockopt(s.fd.get(), SOL_SOCKET, SO_MARK, &cfg_.mark, sizeof(cfg_.mark)) != 0)
        return failed("SO_MARK");
    setsockopt(s.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (cfg_.keepalive_idle > 0) {
        int idle = static_cast<int>(cfg_.keepalive_idle), intvl = static_cast<int>(cfg_.keepalive_intvl),
            cnt = static_cast<int>(cfg_.keepalive_cnt);
        setsockopt(s.fd.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(s.fd.get(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(s.fd.get(), IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(s.fd.get(), IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
    if (cfg_.user_timeout_ms > 0) {
        int ut = static_cast<int>(cfg_.user_timeout_ms);
        setsockopt(s.fd.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    }
    p.sessions.push_back(std::move(owned));
    ++p.filling;
    io_uring_sqe* e = pair_sqe();
    io_uring_prep_connect(e, s.fd.get(), p.addr.get(), p.addr.size());
    // A refill is a group member's health probe: bounded as its connections are.
    with_timeout(s, e, to_timespec(p.health->connect_bound(cfg_.connect_timeout)));
}

io_uring_sqe* SessionPools::pair_sqe()
{
    ring_.reserve(2);  // the operation and its linked timeout, in one submission
    return ring_.sqe();
}

void SessionPools::with_timeout(Session& s, io_uring_sqe* e, const __kernel_timespec& ts)
{
    io_uring_sqe_set_data64(e, pack(&s, kPoolIo));
    e->flags |= IOSQE_IO_LINK;
    s.ts = ts;
    io_uring_sqe* t = ring_.sqe();
    io_uring_prep_link_timeout(t, &s.ts, 0);
    io_uring_sqe_set_data64(t, pack(&s, kPoolTimeout));
    s.inflight += 2;
}

void SessionPools::backoff(Pool& p)
{
    if (p.waiting || p.retired)
        return;
    double d = std::min(kMaxBackoff, 0.5 * std::pow(2.0, std::min(p.failures, 8u) - 1.0));
    p.backoff = to_timespec(d);
    p.waiting = true;
    io_uring_sqe* e = ring_.sqe();
    io_uring_prep_timeout(e, &p.backoff, 0, 0);
    io_uring_sqe_set_data64(e, pack(&p, kPoolTimer));
}

void SessionPools::on_completion(const Completion& cq)
{
    if (cq.tag == kPoolTimer) {
        Pool& p = *static_cast<Pool*>(cq.obj);
        p.waiting = false;
        return fill(p);
    }
    Session& s = *static_cast<Session*>(cq.obj);
    --s.inflight;
    if (cq.tag == kPoolTimeout || s.taken || s.state == Session::State::closing)
        return maybe_free(s);
    const int res = cq.res;
    switch (s.state) {
    case Session::State::connecting:
        if (res < 0)
            return fail(s, res == -ECANCELED ? "connect timed out" : errno_text(-res));
        s.pool->health->connected_in(now_ - s.born);
        if (s.pool->url.kind != UpstreamUrl::Kind::socks5)
            return become_ready(s);  // HTTP CONNECT: nothing to say before the request
        s.hs = std::make_unique<Socks5Handshake>(s.pool->url.user, s.pool->url.password, Target{},
                                                 Socks5Handshake::Phase::greet_only);
        return step(s, s.hs->start());
    case Session::State::sending:
        if (res <= 0)
            return fail(s, res == 0 ? "send: closed" : fmt::format("send: {}", errno_text(-res)));
        s.out_sent += static_cast<size_t>(res);
        if (s.out_sent < s.out.size())
            return send_more(s);
        return arm_recv(s);
    case Session::State::receiving:
        if (res == -ECANCELED)
            return fail(s, "greeting timed out");
        if (res <= 0)
            return fail(s, res == 0 ? "closed during the greeting" : errno_text(-res));
        s.in_len += static_cast<size_t>(res);
        return step(s, s.hs->feed(std::string_view(s.in, s.in_len)));
    case Session::State::ready:
        // The watch: readable (EOF, RST, stray bytes) or its pool-age passed.
        if (res == -ECANCELED) {
            ++counts_.expired;
        } else {
            // Closed by the far end: a restart or a kill closes them all,
            // before the next connection could learn it from a refusal.
            // Skipped until the refill (drop's) answers for it.
            ++counts_.dropped;
            s.pool->health->suspect(now_);
        }
        return drop(s);
    case Session::State::closing:
        break;
    }
}

void SessionPools::step(Session& s, HandshakeStep st)
{
    size_t used = std::min(st.consumed, s.in_len);
    std::memmove(s.in, s.in + used, s.in_len - used);
    s.in_len -= used;
    switch (st.kind) {
    case HandshakeStep::send:
        s.out = std::move(st.out);
        s.out_sent = 0;
        s.state = Session::State::sending;
        return send_more(s);
    case HandshakeStep::need_more:
        if (s.in_len >= sizeof(s.in))
            return fail(s, "greeting reply too large");
        return arm_recv(s);
    case HandshakeStep::done:
        // Nothing may follow the greeting's reply before our request.
        if (s.in_len > 0)
            return fail(s, "unexpected bytes after the greeting");
        return become_ready(s);
    case HandshakeStep::failed:
        return fail(s, st.error);
    }
}

void SessionPools::send_more(Session& s)
{
    io_uring_sqe* e = ring_.sqe();
    io_uring_prep_send(e, s.fd.get(), s.out.data() + s.out_sent, s.out.size() - s.out_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, pack(&s, kPoolIo));
    ++s.inflight;
}

void SessionPools::arm_recv(Session& s)
{
    s.state = Session::State::receiving;
    io_uring_sqe* e = pair_sqe();
    io_uring_prep_recv(e, s.fd.get(), s.in + s.in_len, sizeof(s.in) - s.in_len, 0);
    with_timeout(s, e, connect_timeout_);
}

void SessionPools::become_ready(Session& s)
{
    Pool& p = *s.pool;
    --p.filling;
    p.failures = 0;
    p.health->succeeded();
    ++counts_.opened;
    s.hs.reset();
    std::string().swap(s.out);
    if (p.retired || p.ready.size() >= p.target) {
        s.state = Session::State::closing;
        s.fd.reset();
        return maybe_free(s);
    }
    s.state = Session::State::ready;
    p.ready.push_back(&s);
    // Watch it while it waits: any readiness is the end of it; the linked
    // timeout is its pool-age.
    io_uring_sqe* e = pair_sqe();
    io_uring_prep_poll_add(e, s.fd.get(), POLLIN | POLLRDHUP);
    with_timeout(s, e, to_timespec(p.url.pool_age));
}

void SessionPools::fail(Session& s, const std::string& why)
{
    Pool& p = *s.pool;
    // One line per failing streak, not one per attempt.
    if (p.failures == 0)
        log::warn("upstream {}: warm session failed ({}); connections use the ordinary path meanwhile", p.name, why);
    ++counts_.failed;
    ++p.failures;
    --p.filling;
    p.health->failed(now_);
    if (on_member_down && p.health->grouped.load(std::memory_order_relaxed))
        on_member_down(*p.health);
    s.state = Session::State::closing;
    s.fd.reset();
    backoff(p);
    maybe_free(s);
}

void SessionPools::drop(Session& s)
{
    Pool& p = *s.pool;
    if (s.state == Session::State::ready)
        unready(s);
    s.state = Session::State::closing;
    cancel(s);
    s.fd.reset();
    maybe_free(s);
    fill(p);
}

void SessionPools::unready(Session& s)
{
    auto& r = s.pool->ready;
    r.erase(std::remove(r.begin(), r.end(), &s), r.end());
}

void SessionPools::cancel(Session& s)
{
    if (s.inflight == 0)
        return;
    // Its completion carries no owner (kIgnore); the cancelled operation
    // and its timeout report as usual.
    io_uring_sqe* e = ring_.sqe();
    io_uring_prep_cancel64(e, pack(&s, kPoolIo), 0);
    io_uring_sqe_set_data64(e, pack(nullptr, kIgnore));
}

void SessionPools::maybe_free(Session& s)
{
    if (s.inflight > 0 || !(s.taken || s.state == Session::State::closing))
        return;
    auto& all = s.pool->sessions;
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& q) { return q.get() == &s; });
    if (it != all.end()) {
        std::swap(*it, all.back());
        all.pop_back();
    }
}

}  // namespace ktp
