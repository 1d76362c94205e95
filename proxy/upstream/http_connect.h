// HTTP CONNECT client handshake (RFC 9110 section 9.3.6) as a pure state
// machine: one request out, one response header block in.
#pragma once

#include "upstream/handshake.h"

#include <string>
#include <string_view>

namespace ktp {

class HttpConnectHandshake : public Handshake {
public:
    // Proxy-Authorization: Basic is sent when user or password is non-empty.
    HttpConnectHandshake(std::string user, std::string password, Target target);

    HandshakeStep start() override;
    HandshakeStep feed(std::string_view input) override;

    // The response header block may not exceed this; past it the upstream is
    // not a proxy we can talk to.
    static constexpr size_t kMaxHeader = 16 * 1024;

private:
    enum class State { init, response, done, failed };
    HandshakeStep fail(std::string error);

    std::string user_, password_;
    Target target_;
    State state_ = State::init;
};

// RFC 4648 base64 with padding.
std::string base64_encode(std::string_view in);

}  // namespace ktp
