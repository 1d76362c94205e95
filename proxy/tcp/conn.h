// One TCP connection through the proxy (Conn: both sockets, its setup state,
// its Relay and the relay engine's per-connection state), the worker's pool
// of them, and what the worker learns of their lives (ConnObserver).
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "loop/pipe_pool.h"
#include "loop/ring.h"
#include "netns/netns.h"
#include "relay/relay.h"
#include "route/router.h"
#include "tcp/conn_proc.h"
#include "upstream/handshake.h"

#include <liburing.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ktp {

class RelayEngine;

// The object of most completions (user_data): aligned so that a pointer to
// it leaves the tag bits free.
struct alignas(kUserDataAlign) Conn {
    UniqueFd fd[2];  // [0] client (accepted), [1] upstream
    SockAddr client, orig, via;
    // The listener the app connected to (the cgroup path; null for the
    // gateway, whose clients are not on this host): the app socket's peer.
    const SockAddr* local = nullptr;
    // The namespace the upstream socket is made in (a container's); null:
    // ktproxy's own.
    NetnsRef egress;
    // The namespace of the listener it came through (a container's; null:
    // ktproxy's own): status shows it, the half-closed sweep asks its
    // socket table. Holds *local alive for a container's listener.
    NetnsRef app_ns;
    ConnProc proc;  // who connected (the connect hooks' record); unknown for the gateway
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
    // The relay engine moving each direction's bytes, chosen when relaying
    // starts (RelayDriver::start) and again before each read of a direction
    // (RelayDriver::pick_engine); none before.
    RelayEngine* engine[2] = {nullptr, nullptr};
    // POLLPRI left out of this direction's readiness poll: it reported urgent
    // data that cannot be read yet (a gap before the urgent byte).
    bool urg_quiet[2] = {false, false};

    // Stalled directions (relay/driver.h): a chunk whose destination could
    // not take it at once either keeps its pool unit (stalled, counted by
    // its engine) or moves to a private spill chunk, and the pool unit goes
    // back at once.
    char* spill[2] = {nullptr, nullptr};
    bool stalled[2] = {false, false};
    uint8_t tries[2] = {0, 0};  // 1 once the current ring-buffer chunk's first send went
    // The direction's next recv went in linked behind the send of its chunk
    // (BufferEngine::send); cleared by its completion.
    bool prearmed[2] = {false, false};

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
    // domain came from the name memory, from an answer another process
    // asked for (NameMemory::Name): it routes, it is logged, but the
    // upstream is given the address (see TcpSetup::dial).
    bool domain_untrusted = false;
    bool sniffed = false;
    uint32_t sniff_len = 0;  // client bytes at the start of setup[c2u]
    bool peeking = false;    // the read beside a direct connect is in flight (TcpSetup::peek)
    bool connected = false;  // ... and the connect completed before it

    // Upstream handshake.
    std::unique_ptr<Handshake> hs;
    std::string hs_out;
    uint32_t hs_out_sent = 0;
    uint32_t hs_in = 0;  // unconsumed upstream bytes at the start of setup[u2c]
    bool warm = false;   // the upstream socket came from the warm session pool
    const Upstream* group = nullptr;  // the upstream group `upstream` was picked from
    bool retried = false;             // set up again on the group's next member once
    std::chrono::steady_clock::time_point dialed;  // the upstream proxy connect began (its health's RTT sample)
    uint32_t early = 0;  // client bytes sent with the CONNECT request (optimistic data)

    // Once relaying, both sockets usually live only in the ring's fixed-file
    // table (slot >= 0) and their ordinary fds are closed: a relayed
    // connection then costs no entry in the process's fd table, which is what
    // lets one process hold more connections than RLIMIT_NOFILE / 2.
    int32_t slot[2] = {-1, -1};
    bool lingered = false;         // SO_LINGER {1,0} set on the slots before an abortive close
    bool ended = false;            // logged and its sockets closed; the slot waits for a cancelled watch
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

// The client's address and the upstream socket's local one (once relaying),
// if not known yet: asked at accept and when relaying starts.
void learn_addresses(Conn& c);

// Marks an SQE as working on k (a fixed-table slot or an ordinary fd).
inline void on(io_uring_sqe* s, Conn::Sock k)
{
    if (k.fixed)
        s->flags |= IOSQE_FIXED_FILE;
}

// What the worker learns of a connection's life, for its statistics, the
// dead-destination cache and the log.
class ConnObserver {
public:
    // Routed (a `block` included): counts in its route.
    virtual void routed(Conn& c) = 0;
    // A direct destination refused or did not answer (err: the errno).
    virtual void unreachable(const Conn& c, int err) = 0;
    // Done, with nothing in flight: just before its sockets close.
    virtual void ended(Conn& c) = 0;

protected:
    ~ConnObserver() = default;
};

// Conns are recycled through a free list: no heap traffic per connection
// once the pool has grown to the peak concurrency. Live ones are on an
// intrusive list, for snapshots and the idle sweep.
class ConnPool {
public:
    ConnPool() = default;
    ConnPool(const ConnPool&) = delete;
    ConnPool& operator=(const ConnPool&) = delete;

    Conn& alloc(std::shared_ptr<const Router> router, std::chrono::steady_clock::time_point now);
    // c is done: off the live list, onto the free list.
    void release(Conn& c);

    Conn* live_head() const { return live_head_; }
    // Thread-safe.
    size_t live() const { return live_.load(std::memory_order_relaxed); }
    // Every Conn ever made (teardown).
    const std::vector<std::unique_ptr<Conn>>& all() const { return all_; }

private:
    std::vector<std::unique_ptr<Conn>> all_;  // recycled, never freed
    Conn* free_ = nullptr;
    Conn* live_head_ = nullptr;
    std::atomic<size_t> live_{0};
};

}  // namespace ktp
