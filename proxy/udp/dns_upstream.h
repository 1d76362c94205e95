// DNS queries the rules send to an upstream proxy: DNS over TCP (RFC 1035
// 4.2.2, two-byte length prefix) through a SOCKS5 or HTTP CONNECT tunnel to
// the resolver, so that neither the query nor the name leaves the host
// except through the upstream; and the app's own DNS-over-TCP queries routed
// direct, over TCP to the resolver asked. A few threads do the blocking
// exchanges, off the relays' loops; each exchange is bounded by a timeout.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "route/router.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ktp {

struct DnsUpstreamJob {
    std::shared_ptr<const Router> router;  // keeps `upstream` alive
    const Upstream* upstream = nullptr;    // null: straight to resolver (direct)
    SockAddr resolver;
    std::string query;
    // Makes the TCP socket of the exchange (a container's: made in its
    // namespace, so that the query leaves from there); null: socket().
    std::function<UniqueFd(int family)> make_socket;
    // Called on a pool thread with the answer ("" and error on failure).
    std::function<void(const std::string& answer, const std::string& error)> done;
};

// One query's exchange, blocking: connect to the upstream and its handshake
// to resolver (up null: connect to resolver), the query out, the answer in.
// Returns the answer, or "" with error set. mark: SO_MARK of the socket;
// make_socket: where it comes from (null: socket()).
std::string dns_over_tcp(const Upstream* up, const SockAddr& resolver, const std::string& query, uint32_t mark,
                         int timeout_ms, std::string& error,
                         const std::function<UniqueFd(int family)>& make_socket = nullptr);

// "IP", "IP:PORT" or "[IPv6]:PORT" (port 53 by default). Throws Error.
SockAddr parse_dns_resolver(const std::string& text);

class DnsUpstreamPool {
public:
    DnsUpstreamPool(uint32_t mark, unsigned threads);
    ~DnsUpstreamPool();  // finishes the exchanges under way, drops the queued ones
    // False when too many queries wait (the query is dropped, as a lost datagram).
    bool submit(DnsUpstreamJob job);

private:
    void run();

    uint32_t mark_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<DnsUpstreamJob> queue_;
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace ktp
