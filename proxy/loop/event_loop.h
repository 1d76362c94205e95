// One io_uring event loop per worker thread: accepts intercepted connections,
// asks their original destination, routes them (sniffing the domain when a
// rule needs it), connects directly or through an upstream proxy, and drives
// each Relay. Relay data lives in a provided-buffer ring shared by the
// worker's connections, so idle connections hold no buffers.
#pragma once

#include "loop/buf_ring.h"
#include "loop/pipe_pool.h"
#include "loop/listener.h"
#include "relay/relay.h"
#include "route/router.h"
#include "base/sock_addr.h"
#include "ops/stats.h"
#include "base/unique_fd.h"

#include <liburing.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

namespace ktp {

struct LoopConfig {
    uint32_t mark = 0;
    double connect_timeout = 10.0;  // connect + upstream handshake, seconds
    double sniff_timeout = 0.3;     // wait for the client's first bytes, seconds
    double idle_timeout = 0;        // seconds without traffic before a relay is cut; 0 = never
    uint32_t buffer_size = 32 * 1024;  // bytes per relay buffer
    uint32_t buffers = 128;            // relay buffers per worker (power of two)
    // Relay through a pipe per direction with splice(2) instead of recv/send
    // into ring buffers: the bytes never enter user space. `buffers` then
    // bounds the pipes per worker.
    bool splice = true;
    // ktproxy's outgoing sockets: TCP keepalive (idle seconds before the
    // first probe, seconds between probes, probes; idle 0 = off) and
    // TCP_USER_TIMEOUT (milliseconds sent data may stay unacknowledged; 0 =
    // the kernel's default): a destination that dies silently is noticed
    // and passed on to the app as a reset (End::dead).
    uint32_t keepalive_idle = 30, keepalive_intvl = 10, keepalive_cnt = 3;
    uint32_t user_timeout_ms = 60'000;
    // The connect hooks' negative cache (bpf/sock_deadcache.h): a direct
    // destination that refused or did not answer is written there for
    // dead_cache seconds. -1 / 0: none.
    int dead_dst_fd = -1;
    double dead_cache = 5;
};

// The router in force; SIGHUP swaps it while workers read it.
using RouterSlot = std::atomic<std::shared_ptr<const Router>>;

struct HandshakeStep;
struct alignas(32) Conn;

class EventLoop {
public:
    EventLoop(const LoopConfig& cfg, std::vector<Listener> listeners, const RouterSlot& router);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Runs until stop() is called (from any thread).
    void run();
    void stop();
    // Thread-safe: the worker fills the snapshot between two completion
    // batches; with_conns adds one entry per live connection.
    std::future<WorkerSnapshot> snapshot(bool with_conns);
    size_t live_connections() const { return live_.load(std::memory_order_relaxed); }

private:
    io_uring_sqe* sqe();
    void reserve(unsigned n);
    void link_timeout(Conn& c, const __kernel_timespec& ts);
    // recv into buf, bounded by a linked timeout (completes with -ECANCELED).
    // i: the connection's socket (0 client, 1 upstream), ordinary or fixed.
    void recv_with_timeout(Conn& c, int i, char* buf, uint32_t len, uint64_t tag, const __kernel_timespec& ts);
    void arm_accept(Listener& l);
    void arm_wake();
    void arm_sweep();
    void on_accept(Listener& l, int res, uint32_t flags);
    void sniff_more(Conn& c);
    void on_sniff(Conn& c, int res);
    void route(Conn& c, const std::string* domain);
    void on_connect(Conn& c, int res);
    void hs_step(Conn& c, HandshakeStep step);
    void on_hs_send(Conn& c, int res);
    void on_hs_recv(Conn& c, int res);
    void start_relay(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c);
    void on_relay_recv(Conn& c, Dir d, int res, uint32_t flags);
    void submit_recv(Conn& c, Dir d);
    void on_splice_ready(Conn& c, Dir d, int res);
    void splice_send(Conn& c, Dir d, uint32_t offset, uint32_t len);
    // Fair use of the shared pool by stalled directions (event_loop.cpp,
    // "Stalled directions").
    void send_chunk(Conn& c, const Op& op);
    bool may_hold(Conn& c, Dir d);
    void hold_anyway(Conn& c, Dir d);
    char* take_spill();
    void give_spill(char*& chunk);
    void note_relay_error(Conn& c, int sock_index, int res);
    bool set_upstream_options(Conn& c);
    void remember_dead(const Conn& c, int err);
    bool prefill_pipes(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c);
    static ssize_t recv_past_mark(int fd, Pipe& p);
    struct Waiter;
    void wake_waiter(std::deque<Waiter>& queue);
    void watch_after_eof(Conn& c, Dir d);
    void release_buffer(Conn& c, Dir d);
    void to_fixed(Conn& c);
    void clear_slots(Conn& c);
    void move_to_fixed(Conn& c, int i);
    void sweep_idle();
    void apply(Conn& c, const Ops& ops);
    void start_abort(Conn& c);
    void maybe_release(Conn& c);
    void fail_early(Conn& c, End why, std::string detail);
    Conn* alloc_conn();
    char* take_chunk(Dir d);
    void give_chunk(char*& chunk, Dir d);
    void log_conn(const Conn& c) const;
    void answer_snapshots();
    void account_route(Conn& c);

    LoopConfig cfg_;
    std::vector<Listener> listeners_;
    const RouterSlot& router_;
    io_uring ring_{};
    std::unique_ptr<BufRing> bufs_;
    std::unique_ptr<PipePool> pipes_;  // --relay splice only
    UniqueFd wake_fd_;  // eventfd: stop() writes, the loop reads
    uint64_t wake_value_ = 0;
    struct alignas(32) Slot {
        uint8_t unused;
    } wake_slot_{}, sweep_slot_{};
    std::atomic<bool> stop_{false};
    struct SnapshotRequest {
        bool with_conns;
        std::promise<WorkerSnapshot> reply;
    };
    std::mutex requests_mu_;
    std::vector<SnapshotRequest> requests_;
    WorkerSnapshot stats_;  // closed-connection totals; only the worker touches it
    __kernel_timespec connect_timeout_{}, sniff_timeout_{}, sweep_every_{};
    std::chrono::steady_clock::time_point now_;

    std::vector<std::unique_ptr<Conn>> all_;  // every Conn ever made; recycled, never freed
    Conn* free_ = nullptr;
    Conn* live_head_ = nullptr;               // intrusive list of live Conns, for the idle sweep
    std::atomic<size_t> live_{0};

    // Connections whose recv found the buffer ring empty (or, splicing, no
    // pipe left), waiting for one to come back; one queue per kind, so a
    // buffer coming back never wakes a connection that waits for a pipe.
    struct Waiter {
        Conn* c;
        Dir d;
        uint32_t gen;
    };
    static constexpr int kWaitBuffer = 0, kWaitPipe = 1;
    std::deque<Waiter> waiting_[2];

    std::vector<int32_t> free_slots_;  // fixed-file table slots not in use
    size_t slots_total_ = 0;
    int64_t fd_budget_ = 0;            // process-wide connection fds before using the table
    bool linger_cmd_ = true;           // socket setsockopt via uring_cmd works

    // Stalled directions: those waiting for a full destination may keep
    // their pool buffer (pipe) while fewer than stall_cap_ are held so (pipes:
    // stalled_ counts the stalled spliced directions; ring: buffers in use);
    // beyond, a stalled chunk moves to a private spill chunk of spill_bytes_,
    // so that the rest of the pool always serves every other connection.
    uint32_t stalled_ = 0;
    uint32_t stall_cap_ = 0;
    uint32_t spill_bytes_ = 0;
    std::vector<char*> free_spills_;

    // Setup buffers not in use, per Dir (sniff chunks, handshake chunks);
    // chunks in use belong to their Conn until given back.
    std::vector<char*> free_chunks_[2];
};

}  // namespace ktp
