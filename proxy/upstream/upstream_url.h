// Upstream proxy URLs: socks5://[user:pass@]host[:port], http://[...],
// direct:// (or just "direct"). The host stays a string; resolving it is the
// router's job.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace ktp {

struct UpstreamUrl {
    enum class Kind { direct, socks5, http } kind = Kind::direct;
    std::string host;  // IPv4, IPv6 (without brackets) or a lowercase DNS name
    uint16_t port = 0;
    std::string user, password;  // percent-decoded

    // Options after '?' (docs/usage.md): warm sessions kept per worker (0:
    // none), how long an idle one may wait, and whether the client's first
    // bytes travel with the CONNECT request (optimistic data). Off unless
    // asked for: a server must keep what follows its request, and not all
    // do. dante 1.4 relays it; microsocks 1.0 reads it along with the
    // request and drops it, and the app then waits for an answer to a
    // request the destination never got; an HTTP proxy may do the same.
    unsigned pool = kDefaultPool;
    double pool_age = kDefaultPoolAge;  // seconds
    bool optimistic = false;
    // TCP Fast Open toward the upstream (TCP_FASTOPEN_CONNECT): once the
    // kernel holds the server's cookie, a cold connection's first handshake
    // message rides in the SYN. Needs a server with TFO enabled.
    bool tfo = false;
    static constexpr unsigned kDefaultPool = 4;
    static constexpr unsigned kMaxPool = 64;
    static constexpr double kDefaultPoolAge = 30;

    // For logs: "socks5://alice:***@10.0.0.5:1080". Parses back to the same
    // URL except for the password and options.
    std::string to_string_redacted() const;
};

constexpr uint16_t kDefaultSocks5Port = 1080;
constexpr uint16_t kDefaultHttpPort = 8080;

Result<UpstreamUrl> parse_upstream_url(std::string_view text);

}  // namespace ktp
