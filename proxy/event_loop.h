// One io_uring event loop: accepts intercepted connections, asks their
// original destination, connects upstream and drives each Relay.
#pragma once

#include "listener.h"
#include "relay.h"
#include "sock_addr.h"
#include "unique_fd.h"

#include <liburing.h>
#include <sys/signalfd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace ktp {

struct LoopConfig {
    uint32_t mark = 0;
    double connect_timeout = 10.0;
    uint32_t buffer_size = 64 * 1024;
};

struct alignas(32) Conn;

class EventLoop {
public:
    // Signals handled: SIGINT/SIGTERM stop the loop; SIGUSR1 calls on_usr1.
    EventLoop(const LoopConfig& cfg, std::vector<Listener>& listeners, std::function<void()> on_usr1);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Runs until SIGINT or SIGTERM; returns the signal number.
    int run();
    size_t live_connections() const { return live_; }

private:
    io_uring_sqe* sqe();
    void arm_accept(Listener& l);
    void arm_signal();
    void on_accept(Listener& l, int res, uint32_t flags);
    void on_connect(Conn& c, int res);
    void on_signal(int res);
    void apply(Conn& c, const Ops& ops);
    void start_abort(Conn& c);
    void maybe_release(Conn& c);
    void fail_early(Conn& c, End why, const char* detail);
    Conn* alloc_conn();
    void log_conn(const Conn& c, const char* detail) const;

    LoopConfig cfg_;
    std::vector<Listener>& listeners_;
    std::function<void()> on_usr1_;
    io_uring ring_{};
    UniqueFd signal_fd_;
    struct alignas(32) SignalSlot {
        uint8_t unused;
    } signal_slot_{};
    signalfd_siginfo siginfo_{};
    int stop_signal_ = 0;
    bool stopping_ = false;
    __kernel_timespec connect_timeout_{};
    std::vector<std::unique_ptr<Conn>> all_;
    Conn* free_ = nullptr;
    size_t live_ = 0;
};

}  // namespace ktp
