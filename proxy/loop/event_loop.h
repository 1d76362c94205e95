// One worker: an io_uring (Ring) and the parts that submit to it, the TCP
// setup pipeline (tcp/setup.h) and the relay (relay/driver.h with its two
// engines), wired together. The worker runs the completion loop, handing
// each completion to the owner of its tag, and keeps what is about all
// connections: status and metrics snapshots, the idle sweep, the
// dead-destination cache and the per-connection log line.
#pragma once

#include "loop/fixed_files.h"
#include "loop/listener.h"
#include "loop/loop_config.h"
#include "loop/ring.h"
#include "ops/stats.h"
#include "relay/driver.h"
#include "tcp/chunk_pool.h"
#include "tcp/app_socket_probe.h"
#include "tcp/conn.h"
#include "tcp/setup.h"
#include "upstream/session_pool.h"

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <list>
#include <mutex>
#include <vector>

namespace ktp {

class EventLoop final : CompletionOwner, ConnObserver {
public:
    EventLoop(const LoopConfig& cfg, std::vector<Listener> listeners, const RouterSlot& router);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Restricts the loop's ring (Ring::restrict); before any worker runs.
    void restrict_ring() { ring_.restrict(); }
    // Runs until stop() is called (from any thread).
    void run();
    void stop();
    // Thread-safe: the worker fills the snapshot between two completion
    // batches; with_conns adds one entry per live connection.
    std::future<WorkerSnapshot> snapshot(bool with_conns);
    size_t live_connections() const { return pool_.live(); }
    // Thread-safe: start serving these listeners (one namespace's), or stop
    // serving every listener of a namespace (its accept is cancelled, the
    // listener closed once the cancel completed).
    void add_listeners(std::vector<Listener> ls);
    void remove_listeners(uint64_t netns_cookie);

private:
    // Makes o the handler of tag's completions. The UDP datagram path and
    // the DNS forwarder plug in here, beside TcpSetup and RelayDriver.
    void own(Tag tag, CompletionOwner& o) { owners_[tag] = &o; }
    // kWake, kSweep.
    void on_completion(const Completion& cq) override;
    // ConnObserver.
    void routed(Conn& c) override;
    void unreachable(const Conn& c, int err) override;
    void ended(Conn& c) override;

    void answer_snapshots();
    void apply_listener_changes();
    void sweep();
    void sweep_idle();
    void sweep_half_closed();
    void log_conn(const Conn& c) const;

    LoopConfig cfg_;
    std::vector<Listener> listeners_;
    const RouterSlot& router_;
    std::atomic<bool> stop_{false};
    std::chrono::steady_clock::time_point now_;  // when the current completion batch arrived
    __kernel_timespec sweep_every_{};
    AppSocketProbe app_probe_;

    // Declared in the order they are built; torn down in ~EventLoop.
    Ring ring_;
    FixedFiles fixed_;
    SetupChunks chunks_;
    ConnPool pool_;
    SessionPools sessions_;
    RelayDriver relay_;
    TcpSetup tcp_;
    std::array<CompletionOwner*, kMaxTags> owners_{};

    struct SnapshotRequest {
        bool with_conns;
        std::promise<WorkerSnapshot> reply;
    };
    std::mutex requests_mu_;
    std::vector<SnapshotRequest> requests_;
    std::vector<Listener> adds_;          // under requests_mu_
    std::vector<uint64_t> removes_;       // under requests_mu_
    std::list<Listener> netns_listeners_; // stable addresses: accepts point at them
    WorkerSnapshot stats_;  // closed-connection totals; only the worker touches it
};

}  // namespace ktp
