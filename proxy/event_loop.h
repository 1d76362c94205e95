// One io_uring event loop: accepts intercepted connections, asks their
// original destination, routes them (sniffing the domain when a rule needs
// it), connects directly or through an upstream proxy, and drives each Relay.
#pragma once

#include "listener.h"
#include "relay.h"
#include "router.h"
#include "sock_addr.h"
#include "unique_fd.h"

#include <liburing.h>
#include <sys/signalfd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

namespace ktp {

struct LoopConfig {
    uint32_t mark = 0;
    double connect_timeout = 10.0;  // connect + upstream handshake, seconds
    double sniff_timeout = 0.3;     // wait for the client's first bytes, seconds
    uint32_t buffer_size = 64 * 1024;
};

struct HandshakeStep;
struct alignas(32) Conn;

class EventLoop {
public:
    struct Hooks {
        std::function<void()> on_usr1;  // SIGUSR1: report
        std::function<void()> on_hup;   // SIGHUP: reload
    };
    // Signals handled: SIGINT/SIGTERM stop the loop; SIGUSR1 / SIGHUP call hooks.
    EventLoop(const LoopConfig& cfg, std::vector<Listener>& listeners, std::shared_ptr<const Router> router,
              Hooks hooks);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Runs until SIGINT or SIGTERM; returns the signal number.
    int run();
    // New connections use the new router; live ones keep the one they started with.
    void set_router(std::shared_ptr<const Router> r) { router_ = std::move(r); }
    size_t live_connections() const { return live_; }

private:
    io_uring_sqe* sqe();
    void arm_accept(Listener& l);
    void arm_signal();
    void reserve(unsigned n);
    void link_timeout(Conn& c, const __kernel_timespec& ts);
    void on_accept(Listener& l, int res, uint32_t flags);
    void sniff_more(Conn& c);
    void on_sniff(Conn& c, int res);
    void route(Conn& c, const std::string* domain);
    void on_connect(Conn& c, int res);
    void hs_step(Conn& c, HandshakeStep step);
    void on_hs_send(Conn& c, int res);
    void on_hs_recv(Conn& c, int res);
    void start_relay(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c);
    void on_signal(int res);
    void apply(Conn& c, const Ops& ops);
    void start_abort(Conn& c);
    void maybe_release(Conn& c);
    void fail_early(Conn& c, End why, std::string detail);
    Conn* alloc_conn();
    void log_conn(const Conn& c) const;
    char* buffer(Conn& c, Dir d) const;

    LoopConfig cfg_;
    std::vector<Listener>& listeners_;
    std::shared_ptr<const Router> router_;
    Hooks hooks_;
    io_uring ring_{};
    UniqueFd signal_fd_;
    struct alignas(32) SignalSlot {
        uint8_t unused;
    } signal_slot_{};
    signalfd_siginfo siginfo_{};
    int stop_signal_ = 0;
    bool stopping_ = false;
    __kernel_timespec connect_timeout_{};
    __kernel_timespec sniff_timeout_{};
    std::vector<std::unique_ptr<Conn>> all_;
    Conn* free_ = nullptr;
    size_t live_ = 0;
};

}  // namespace ktp
