// The UDP relay: receives the datagrams the socket hooks rewrote to it
// (bpf/sock_udp.h), finds each one's original destination in ktp_udp_flows,
// and relays it through a per-flow upstream socket; replies go back from the
// token address the app sent to, which recvmsg4/6 show the app as the
// original destination. One thread with epoll: a datagram is one recvmsg and
// one sendmsg, nothing to splice or buffer, and the TCP workers' rings stay
// untouched (docs/architecture.md "UDP").
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "loop/loop_config.h"

#include "ktproxy_shared.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ktp {

class DnsForwarder;
class NameMemory;

struct UdpConfig {
    uint16_t port_hint = 0;           // tried first (the TCP listeners' port), else any
    uint32_t mark = 0;                // SO_MARK of the relay's sockets: the hooks skip them
    std::optional<SockAddr> listen6;  // the IPv6 relay socket's address (none: no IPv6)
    double idle_timeout = 60;         // seconds an unconnected flow lives without datagrams
};

class UdpRelay {
public:
    // Opens the relay sockets (IPv4 on 0.0.0.0, accepting only datagrams to
    // 127/8; IPv6 on listen6), all on one port. Throws Error.
    // names: the addresses' names (fake addresses among them; may be
    // null); dns: decides each query to port 53 (not owned).
    UdpRelay(const UdpConfig& cfg, const RouterSlot& router, NameMemory* names, DnsForwarder& dns);
    ~UdpRelay();
    UdpRelay(const UdpRelay&) = delete;
    UdpRelay& operator=(const UdpRelay&) = delete;

    uint16_t port() const { return port_; }
    // Starts the thread; the hooks' ktp_udp_flows and ktp_udp_conn6 (not owned).
    void start(int flows_fd, int conn6_fd);
    void stop();
    size_t live_flows() const { return live_.load(std::memory_order_relaxed); }

    struct Flow;

private:
    void run();
    void on_app_datagram(int listener_fd, bool v6);
    void on_upstream(Flow& f);
    // Rules send the flow to an upstream: a SOCKS5 UDP association, or the
    // flow drops its datagrams (never direct).
    void start_association(Flow& f, const Decision& d);
    void on_control(Flow& f);
    // The flow stops relaying now; it is freed by retire() or the sweep.
    void end_flow(Flow& f);
    // Closes and unlists a flow; freed after the current batch of events.
    void retire(const std::string& key);
    bool file_conn6(const SockAddr& app, const ktp_udp_key& key, ktp_udp_flow& val);
    // A datagram of a flow to port 53: false when the forwarder answered or
    // dropped it itself instead of forwarding it.
    bool dns_query(Flow& f, std::string_view query);
    void send_to_app(Flow& f, const char* data, size_t len);
    // Thread-safe: a reply to the app from its token (IPv4) or the IPv6 relay socket.
    static bool send_reply(int out, const SockAddr& app, uint32_t token, bool v6, const char* data, size_t len);
    void sweep(std::chrono::steady_clock::time_point now);
    void close_flow(Flow& f);

    UdpConfig cfg_;
    const RouterSlot& router_;
    NameMemory* names_;
    DnsForwarder& dns_;
    UniqueFd sock4_, sock6_, epoll_, wake_;
    uint16_t port_ = 0;
    int flows_fd_ = -1, conn6_fd_ = -1;
    std::atomic<size_t> live_{0};
    std::thread thread_;
    // Key: the app's address and port as the relay sees them, plus the token
    // (IPv4) the datagram went to; text form keeps it simple and exact.
    std::unordered_map<std::string, std::unique_ptr<Flow>> flows_;
    std::vector<std::unique_ptr<Flow>> retired_;
};

}  // namespace ktp
