// Warm upstream sessions: per upstream proxy and per worker, a few TCP
// connections already past the SOCKS5 greeting and authentication (for an
// HTTP CONNECT proxy, just connected), so that a new connection through a
// far-away upstream pays one round trip (the CONNECT) instead of three or
// four. Sessions are refilled in the background on the worker's io_uring,
// watched for EOF/RST by a poll, closed at the URL's pool-age, and never used
// twice: SOCKS5 and HTTP CONNECT sessions become the tunnel. An empty pool
// is never an error: the caller connects the ordinary way.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "loop/loop_config.h"
#include "loop/ring.h"
#include "route/router.h"
#include "upstream/socks5.h"

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace ktp {

class SessionPools final : public CompletionOwner {
public:
    SessionPools(const LoopConfig& cfg, Ring& ring, const std::chrono::steady_clock::time_point& now);
    ~SessionPools();
    SessionPools(const SessionPools&) = delete;
    SessionPools& operator=(const SessionPools&) = delete;

    // One pool per upstream of r with pool > 0; pools of upstreams that a
    // reload removed or changed are emptied. Cheap when r is the router of
    // the last call.
    void sync(std::shared_ptr<const Router> r);
    // A warm session to u (checked alive and younger than its pool-age just
    // now), or an empty fd. The pool starts refilling at once.
    UniqueFd take(const std::shared_ptr<const Router>& r, const Upstream& u);
    // kPoolIo, kPoolTimeout, kPoolTimer.
    void on_completion(const Completion& cq) override;

    // Called when a refill found its upstream dead (set by TcpSetup).
    std::function<void(const UpstreamHealth&)> on_member_down;

    struct Counts {
        uint64_t hits = 0, misses = 0, opened = 0, failed = 0, expired = 0, dropped = 0;
    };
    const Counts& counts() const { return counts_; }

private:
    struct Pool;
    struct alignas(kUserDataAlign) Session {
        enum class State { connecting, sending, receiving, ready, closing } state = State::connecting;
        Pool* pool = nullptr;
        UniqueFd fd;
        std::unique_ptr<Socks5Handshake> hs;
        std::string out;
        size_t out_sent = 0;
        char in[64];
        size_t in_len = 0;
        uint32_t inflight = 0;
        bool taken = false;
        std::chrono::steady_clock::time_point born;
        __kernel_timespec ts{};
    };
    struct alignas(kUserDataAlign) Pool {
        std::string key;
        std::string name;
        UpstreamUrl url;
        SockAddr addr;
        // Its refills are the upstream's health probes (upstream_health.h).
        std::shared_ptr<UpstreamHealth> health;
        unsigned target = 0;
        bool retired = false;
        std::vector<std::unique_ptr<Session>> sessions;  // every session, whatever its state
        std::deque<Session*> ready;                      // oldest first
        unsigned filling = 0;
        unsigned failures = 0;  // consecutive failed fills: the back-off grows with them
        bool waiting = false;   // the back-off timer is armed
        __kernel_timespec backoff{};
    };

    void fill(Pool& p);
    void open_one(Pool& p);
    // An SQE with room for its linked timeout behind it.
    io_uring_sqe* pair_sqe();
    // e (from pair_sqe, prepared) becomes s's operation, bounded by ts.
    void with_timeout(Session& s, io_uring_sqe* e, const __kernel_timespec& ts);
    // Fills pause for a while after a failure, longer after each in a row.
    void backoff(Pool& p);
    void step(Session& s, HandshakeStep st);
    void arm_recv(Session& s);
    void send_more(Session& s);
    void become_ready(Session& s);
    // A fill failed: counted, logged once per streak, back-off.
    void fail(Session& s, const std::string& why);
    // A ready session died, aged out or was found dead; the pool refills.
    void drop(Session& s);
    void cancel(Session& s);
    void maybe_free(Session& s);
    void unready(Session& s);
    static bool alive(int fd);

    const LoopConfig& cfg_;
    Ring& ring_;
    const std::chrono::steady_clock::time_point& now_;
    __kernel_timespec connect_timeout_{};
    std::vector<std::unique_ptr<Pool>> pools_;
    std::unordered_map<const Upstream*, Pool*> by_upstream_;
    // Held, so that its Upstream pointers (by_upstream_'s keys) stay unique.
    std::shared_ptr<const Router> router_;
    bool stopping_ = false;
    Counts counts_;
};

}  // namespace ktp
