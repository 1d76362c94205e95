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

    // For logs: "socks5://alice:***@10.0.0.5:1080". Parses back to the same
    // URL except for the password.
    std::string to_string_redacted() const;
};

constexpr uint16_t kDefaultSocks5Port = 1080;
constexpr uint16_t kDefaultHttpPort = 8080;

Result<UpstreamUrl> parse_upstream_url(std::string_view text);

}  // namespace ktp
