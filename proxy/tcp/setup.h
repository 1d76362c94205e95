// The TCP connection-setup pipeline: accept -> original destination -> sniff
// (only when a domain rule needs the client's first bytes) -> route ->
// connect (SO_MARK, TCP_NODELAY, keepalive, TCP_USER_TIMEOUT) -> upstream
// handshake (SOCKS5, HTTP CONNECT) -> a ready pair of sockets handed to the
// relay (RelayDriver::start). The UDP datagram path and the DNS forwarder
// run on threads of their own (udp/, dns/), not as branches inside it; the
// one exception hands a connection to port 53 (--udp) to dns/dns_tcp.h
// right after accept.
#pragma once

#include "loop/fixed_files.h"
#include "loop/listener.h"
#include "loop/loop_config.h"
#include "loop/ring.h"
#include "tcp/chunk_pool.h"
#include "tcp/conn.h"

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

namespace ktp {

class RelayDriver;
class SessionPools;
struct UpstreamHealth;
struct HandshakeStep;

class TcpSetup : public CompletionOwner {
public:
    TcpSetup(const LoopConfig& cfg, Ring& ring, FixedFiles& fixed, ConnPool& pool, SetupChunks& chunks,
             RelayDriver& relay, ConnObserver& observer, const RouterSlot& router,
             const std::chrono::steady_clock::time_point& now, const std::atomic<bool>& stopping);

    // Accepts on l (multishot, re-armed until stopping).
    void listen(Listener& l);
    // Warm upstream sessions to take instead of connecting (upstream/session_pool.h).
    void use_sessions(SessionPools& s);
    // An upstream was just found down (h: its health): this worker's
    // connections in a group that wait for its handshake reply go to the
    // next member now, not at their timeout (cancelled, then retried).
    void member_down(const UpstreamHealth& h, const Conn* except = nullptr);
    // kAccept, kConnect, kSniffRecv, kHsSend, kHsRecv, kSockopt, kEarlyRecv.
    void on_completion(const Completion& cq) override;

private:
    void on_accept(Listener& l, int res, uint32_t flags);
    // recv into buf, bounded by a linked timeout (completes with -ECANCELED).
    // i: the connection's socket (0 client, 1 upstream), ordinary or fixed.
    void recv_with_timeout(Conn& c, int i, char* buf, uint32_t len, Tag tag, const __kernel_timespec& ts);
    void sniff_more(Conn& c);
    void on_sniff(Conn& c, int res);
    void route(Conn& c, const std::string* domain);
    // Connects to c.upstream (a warm session, or socket + connect).
    void dial(Conn& c);
    // c.upstream failed before any byte reached the app: counts against its
    // health; true if the connection goes on through the group's next member.
    bool retry_elsewhere(Conn& c);
    bool set_upstream_options(Conn& c);
    // The same options as linked setsockopt requests ahead of the connect:
    // no syscall each. False: this kernel cannot (sock_cmd.h).
    void queue_upstream_options(Conn& c);
    void on_connect(Conn& c, int res);
    // Optimistic data (upstream/handshake.h send_early), then the handshake.
    void start_handshake(Conn& c);
    void on_early(Conn& c, int res);
    void peek(Conn& c);
    void on_peek(Conn& c, int res);
    void hs_step(Conn& c, HandshakeStep step);
    void on_hs_send(Conn& c, int res);
    void on_hs_recv(Conn& c, int res);

    const LoopConfig& cfg_;
    Ring& ring_;
    FixedFiles& fixed_;
    ConnPool& pool_;
    SetupChunks& chunks_;
    RelayDriver& relay_;
    ConnObserver& observer_;
    const RouterSlot& router_;
    const std::chrono::steady_clock::time_point& now_;
    const std::atomic<bool>& stopping_;
    __kernel_timespec connect_timeout_{}, sniff_timeout_{}, early_wait_{};
    SessionPools* sessions_ = nullptr;
    // The upstream socket's options, in the order they are set; the values
    // live here for the requests that read them.
    struct SockOpt {
        int level, name, value;
    };
    std::vector<SockOpt> upstream_opts_;
    bool opts_by_ring_ = false;
};

}  // namespace ktp
