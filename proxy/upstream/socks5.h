// SOCKS5 client handshake (RFC 1928, username/password per RFC 1929) as a
// pure state machine: greeting -> [auth] -> CONNECT -> reply.
#pragma once

#include "upstream/handshake.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace ktp {

class Socks5Handshake : public Handshake {
public:
    // Where a warm session pool (upstream/session_pool.h) splits the
    // exchange: greet_only ends (done) once the server accepted the greeting
    // and credentials; connect_only starts with the CONNECT request on such
    // a session. udp_associate asks for a UDP relay (RFC 1928 section 7)
    // instead of a CONNECT: target is where ktproxy will send from, and
    // relay() is the server's answer.
    enum class Phase { full, greet_only, connect_only, udp_associate };
    // Credentials are offered (method 0x02, alongside no-auth) when user is
    // non-empty. Over-long user, password or domain fail in start().
    Socks5Handshake(std::string user, std::string password, Target target, Phase phase = Phase::full);

    HandshakeStep start() override;
    HandshakeStep feed(std::string_view input) override;
    // udp_associate, once done: where the server relays datagrams (BND.ADDR,
    // BND.PORT; an unspecified address means the server's own).
    const SockAddr& relay() const { return relay_; }

private:
    enum class State { init, method, auth, connect, done, failed };

    HandshakeStep on_method(std::string_view in);
    HandshakeStep on_auth(std::string_view in);
    HandshakeStep on_connect(std::string_view in);
    HandshakeStep greeted(size_t consumed);
    HandshakeStep fail(std::string error);
    std::string connect_request();

    std::string user_, password_;
    Target target_;
    State state_ = State::init;
    Phase phase_;
    SockAddr relay_;
};

// "connection refused" for REP 0x05; "unknown reply" outside RFC 1928's table.
std::string_view socks5_reply_text(uint8_t rep);

}  // namespace ktp
