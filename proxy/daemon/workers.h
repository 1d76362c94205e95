// The instance's worker threads, one event loop each, sharing the listener
// port through SO_REUSEPORT: started once the kernel side is loaded, stopped
// and joined whatever happens.
#pragma once

#include "config/options.h"
#include "loop/event_loop.h"
#include "loop/listener.h"
#include "ops/stats.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace ktp {

// The loops' settings from the options; dead_dst_fd: the connect hooks'
// negative cache (-1 without socket hooks).
LoopConfig loop_config(const Options& o, int dead_dst_fd);

class Workers {
public:
    // One loop per listener set. Loops are built here, on the main thread,
    // so that their setup errors come before "ready".
    Workers(const LoopConfig& cfg, std::vector<std::vector<Listener>> sets, const RouterSlot& router);
    ~Workers();
    Workers(const Workers&) = delete;
    Workers& operator=(const Workers&) = delete;

    // Starts a thread per loop; a loop that fails logs and sends SIGTERM to
    // the process (the main thread then shuts down in order).
    void start();
    size_t count() const { return loops_.size(); }
    size_t live_connections() const;
    // Every worker's snapshot, merged (a worker that does not answer within
    // a second is left out).
    WorkerSnapshot gather(bool with_conns);
    // A namespace's listeners go to one worker (round robin); removal asks
    // every worker. Thread-safe.
    void add_listeners(std::vector<Listener> ls);
    void remove_listeners(uint64_t netns_cookie);
    // Waits until no connection is open, or the deadline.
    void drain(std::chrono::milliseconds at_most) const;

private:
    std::vector<std::unique_ptr<EventLoop>> loops_;
    std::vector<std::thread> threads_;
    std::atomic<size_t> next_{0};
};

}  // namespace ktp
