// The DNS forwarder's decision, one for every query of the cgroup whatever
// carried it (UDP: udp/udp_relay.cpp; TCP: dns/dns_tcp.cpp): the name asked
// routes it (direct, through an upstream, block), fake mode answers A/AAAA
// for proxied names itself, and answers are remembered for domain rules.
// The callers own the sockets; exchange() runs the TCP ones on a small pool.
#pragma once

#include "base/sock_addr.h"
#include "loop/loop_config.h"
#include "route/router.h"
#include "udp/dns_upstream.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

namespace ktp {

class NameMemory;
namespace dns {
struct Question;
}

struct DnsForwarderConfig {
    uint32_t mark = 0;                     // SO_MARK of the sockets to resolvers and upstreams
    std::optional<SockAddr> dns_resolver;  // --dns-resolver: where proxied queries go (none: the one asked)
    uint8_t block_rcode = 5;               // --dns-block: REFUSED (5) or NXDOMAIN (3)
    bool ipv6 = false;                     // IPv6 is relayed: fake AAAA answers get an address, not NODATA
    // Where a proxied name goes when the app asked a resolver on loopback
    // (systemd-resolved's 127.0.0.53) and there is no --dns-resolver: the
    // upstream cannot reach this host's loopback. The servers that resolver
    // uses itself (/run/systemd/resolve/resolv.conf); none: SERVFAIL.
    std::vector<SockAddr> loopback_fallback;
};

// Who asked, for the log lines: the app's process and the resolver it asked.
struct DnsAsker {
    const SockAddr& resolver;
    const std::string& comm;
    uint32_t pid;
};

struct DnsRoute {
    enum class Kind {
        direct,    // to the resolver asked, as it is
        answered,  // ktproxy answers itself: `answer` (block, fake mode)
        upstream,  // DNS over TCP through `upstream` to `resolver`
        drop,      // not forwarded, not answered (logged)
    };
    Kind kind = Kind::drop;
    std::string answer;
    std::shared_ptr<const Router> router;  // keeps `upstream` alive
    const Upstream* upstream = nullptr;
    SockAddr resolver;
    std::string shown;  // the name, printable (dns/name_text.h), for log lines
    uint32_t asker = 0; // the pid that asked: its answer's names are trusted for it alone
};

class DnsForwarder {
public:
    DnsForwarder(const DnsForwarderConfig& cfg, const RouterSlot& router, NameMemory* names);
    ~DnsForwarder();
    DnsForwarder(const DnsForwarder&) = delete;
    DnsForwarder& operator=(const DnsForwarder&) = delete;

    // Thread-safe: what to do with one query (its decision is logged).
    DnsRoute route(std::string_view query, const DnsAsker& who);
    // Thread-safe: the query over TCP, through r.upstream (Kind::upstream)
    // or straight to r.resolver (r.upstream null); done runs on a pool
    // thread with the answer ("" and the error on failure), the answer
    // already remembered. False when too many wait or after stop().
    // make_socket: the exchange's TCP socket (a container's query leaves
    // from its namespace); null: made in ktproxy's.
    bool exchange(const DnsRoute& r, std::string query,
                  std::function<void(const std::string& answer, const std::string& error)> done,
                  std::function<UniqueFd(int family)> make_socket = nullptr);
    // Thread-safe: the addresses of an answer process asker (pid) receives,
    // remembered with their name.
    void remember(std::string_view answer, uint32_t asker);
    // Finishes the exchanges under way (their done runs), drops the queued ones.
    void stop();

private:
    // Fake mode: ktproxy's own answer to an A/AAAA query for a proxied
    // name; "" when it gives none (other types, the table is full).
    std::string fake_answer(const dns::Question& q, std::string_view query, const DnsAsker& who);

    DnsForwarderConfig cfg_;
    const RouterSlot& router_;
    NameMemory* names_;
    std::mutex mu_;
    std::unique_ptr<DnsUpstreamPool> pool_;  // built on the first exchange
    bool stopped_ = false;
};

}  // namespace ktp
