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
#include "udp/relay_socket.h"

#include "ktproxy_shared.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ktp {

class DnsForwarder;
class NameMemory;
class Netns;

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

    // Thread-safe: the relay sockets ktproxy's helper made in a container's
    // namespace (fd6 may be invalid): its datagrams are answered from them;
    // its flows' sockets are made in that namespace, or in ktproxy's with
    // egress_host (but for loopback resolvers: the container's own).
    void add_netns(std::shared_ptr<const Netns> ns, UniqueFd fd4, UniqueFd fd6, bool egress_host);
    // Thread-safe: the namespace is gone: its relay sockets and flows close.
    void remove_netns(uint64_t cookie);

    struct Flow;
    struct RelaySock;

private:
    void run();
    void on_commands();
    void add_sock(std::shared_ptr<RelaySock> rs);
    void on_app_datagram(const std::shared_ptr<RelaySock>& rs);
    // The flow's direct socket: in the container's namespace for a
    // container's flow (egress container, or a loopback destination).
    UniqueFd direct_socket(const RelaySock& rs, const SockAddr& dst, bool& later);
    void on_upstream(Flow& f);
    // Rules send the flow to an upstream: a SOCKS5 UDP association, or the
    // flow drops its datagrams (never direct). False: no flow yet (the
    // container's socket stock is being refilled): the datagram is dropped.
    bool start_association(Flow& f, const Decision& d);
    void on_control(Flow& f);
    // The flow stops relaying now; it is freed by retire() or the sweep.
    void end_flow(Flow& f);
    // Closes and unlists a flow; freed after the current batch of events.
    void retire(const std::string& key);
    bool file_conn6(const RelaySock& rs, const SockAddr& app, const ktp_udp_key& key, ktp_udp_flow& val);
    // A datagram of a flow to port 53: false when the forwarder answered or
    // dropped it itself instead of forwarding it.
    bool dns_query(Flow& f, std::string_view query);
    void send_to_app(Flow& f, const char* data, size_t len);
    // Thread-safe: a reply to the app from its token (IPv4) or the IPv6 relay socket `out`.
    static bool send_reply(int out, const SockAddr& app, uint32_t token, bool v6, const char* data, size_t len);
    void sweep(std::chrono::steady_clock::time_point now);
    void close_flow(Flow& f);

    UdpConfig cfg_;
    const RouterSlot& router_;
    NameMemory* names_;
    DnsForwarder& dns_;
    std::shared_ptr<RelaySock> host4_, host6_;
    UniqueFd epoll_, wake_, cmd_;
    uint16_t port_ = 0;
    int flows_fd_ = -1, conn6_fd_ = -1;
    std::atomic<size_t> live_{0};
    std::thread thread_;
    // Key: the app's address and port as the relay sees them, plus the token
    // (IPv4) the datagram went to; text form keeps it simple and exact.
    std::unordered_map<std::string, std::unique_ptr<Flow>> flows_;
    std::vector<std::unique_ptr<Flow>> retired_;
    std::vector<std::shared_ptr<RelaySock>> retired_socks_;  // removed in this batch of events
    // Containers' relay sockets, by namespace cookie (the thread's own).
    std::unordered_map<uint64_t, std::vector<std::shared_ptr<RelaySock>>> netns_;
    // add_netns / remove_netns, for the thread (cmd_ says there are some).
    std::mutex cmd_mu_;
    std::vector<std::pair<uint64_t, std::vector<std::shared_ptr<RelaySock>>>> cmds_;
};

}  // namespace ktp
