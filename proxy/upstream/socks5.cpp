// SOCKS5 client handshake. Replies are parsed only once complete; until then
// need_more consumes nothing, so split delivery is the caller's only concern.
#include "upstream/socks5.h"

#include "upstream/socks5_udp.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <cstring>

namespace ktp {

namespace {

constexpr uint8_t kVersion = 0x05;
constexpr uint8_t kAuthVersion = 0x01;  // RFC 1929 subnegotiation version
constexpr uint8_t kNoAuth = 0x00;
constexpr uint8_t kUserPass = 0x02;
constexpr uint8_t kNoAcceptable = 0xff;
constexpr uint8_t kCmdConnect = 0x01;
constexpr uint8_t kCmdUdpAssociate = 0x03;
constexpr uint8_t kAtypV4 = 0x01;
constexpr uint8_t kAtypDomain = 0x03;
constexpr uint8_t kAtypV6 = 0x04;

uint8_t byte(std::string_view s, size_t i) { return static_cast<uint8_t>(s[i]); }

}  // namespace

std::string_view socks5_reply_text(uint8_t rep)
{
    switch (rep) {
    case 0x00: return "succeeded";
    case 0x01: return "general SOCKS server failure";
    case 0x02: return "connection not allowed by ruleset";
    case 0x03: return "network unreachable";
    case 0x04: return "host unreachable";
    case 0x05: return "connection refused";
    case 0x06: return "TTL expired";
    case 0x07: return "command not supported";
    case 0x08: return "address type not supported";
    default: return "unknown reply";
    }
}

Socks5Handshake::Socks5Handshake(std::string user, std::string password, Target target, Phase phase)
    : user_(std::move(user)), password_(std::move(password)), target_(std::move(target)), phase_(phase)
{
}

HandshakeStep Socks5Handshake::fail(std::string error)
{
    state_ = State::failed;
    return step_failed(std::move(error));
}

HandshakeStep Socks5Handshake::start()
{
    if (state_ != State::init)
        return fail("socks5: handshake started twice");
    // RFC 1929 carries lengths in one byte, and ULEN must be at least 1.
    if (user_.size() > 255)
        return fail(fmt::format("socks5: username is {} bytes, the protocol allows 255", user_.size()));
    if (password_.size() > 255)
        return fail(fmt::format("socks5: password is {} bytes, the protocol allows 255", password_.size()));
    if (user_.empty() && !password_.empty())
        return fail("socks5: a password without a username cannot be sent (RFC 1929 needs a username)");
    if (target_.domain.size() > 255)
        return fail(fmt::format("socks5: domain is {} bytes, the protocol allows 255", target_.domain.size()));
    // The port always comes from the address, even when the domain is sent.
    int fam = target_.addr.unmapped().family();
    if (phase_ != Phase::greet_only && fam != AF_INET && fam != AF_INET6)
        return fail("socks5: no destination address to CONNECT to");

    if (phase_ == Phase::connect_only) {
        state_ = State::connect;
        return step_send(connect_request(), 0);
    }
    state_ = State::method;
    if (user_.empty())
        return step_send(std::string{char(kVersion), 1, char(kNoAuth)}, 0);
    return step_send(std::string{char(kVersion), 2, char(kNoAuth), char(kUserPass)}, 0);
}

HandshakeStep Socks5Handshake::feed(std::string_view in)
{
    switch (state_) {
    case State::method: return on_method(in);
    case State::auth: return on_auth(in);
    case State::connect: return on_connect(in);
    case State::init: return fail("socks5: reply before the handshake started");
    case State::done:
    case State::failed: break;
    }
    return fail("socks5: handshake already finished");
}

HandshakeStep Socks5Handshake::on_method(std::string_view in)
{
    if (in.size() < 2)
        return step_need_more();
    if (byte(in, 0) != kVersion)
        return fail(fmt::format("socks5 upstream answered garbage (version 0x{:02x})", byte(in, 0)));
    uint8_t method = byte(in, 1);
    if (method == kNoAcceptable)
        return fail(fmt::format("socks5 upstream: no acceptable auth method (0xff){}",
                                user_.empty() ? "; it may need a username and password" : ""));
    if (method == kNoAuth)
        return greeted(2);
    if (method == kUserPass && !user_.empty()) {
        state_ = State::auth;
        std::string req;
        req += char(kAuthVersion);
        req += char(user_.size());
        req += user_;
        req += char(password_.size());
        req += password_;
        return step_send(std::move(req), 2);
    }
    return fail(fmt::format("socks5 upstream chose an auth method we did not offer (0x{:02x})", method));
}

HandshakeStep Socks5Handshake::on_auth(std::string_view in)
{
    if (in.size() < 2)
        return step_need_more();
    // Some servers answer the RFC 1929 exchange with version 0x05; the status
    // byte means the same, so accept both.
    if (byte(in, 0) != kAuthVersion && byte(in, 0) != kVersion)
        return fail(fmt::format("socks5 upstream answered garbage (auth version 0x{:02x})", byte(in, 0)));
    if (byte(in, 1) != 0x00)
        return fail(fmt::format("socks5 upstream rejected username/password (status 0x{:02x})", byte(in, 1)));
    return greeted(2);
}

HandshakeStep Socks5Handshake::greeted(size_t consumed)
{
    if (phase_ == Phase::greet_only) {
        state_ = State::done;
        return step_done(consumed);
    }
    state_ = State::connect;
    return step_send(connect_request(), consumed);
}

std::string Socks5Handshake::connect_request()
{
    const bool udp = phase_ == Phase::udp_associate;
    std::string req{char(kVersion), char(udp ? kCmdUdpAssociate : kCmdConnect), 0x00};
    if (!target_.domain.empty()) {
        req += char(kAtypDomain);
        req += char(target_.domain.size());
        req += target_.domain;
        uint16_t port = target_.addr.port();
        req += char(port >> 8);
        req += char(port & 0xff);
    } else {
        socks5_append_address(req, target_.addr);  // targets are always IPv4 or IPv6
    }
    // The server reads exactly the request and relays what follows once
    // connected; refused, it closes and the bytes go nowhere.
    req += early_;
    early_out_ = !early_.empty();
    return req;
}

HandshakeStep Socks5Handshake::on_connect(std::string_view in)
{
    // VER REP RSV ATYP BND.ADDR BND.PORT; a failure is reported as soon as REP
    // is visible, since the server closes afterwards anyway.
    if (in.size() < 2)
        return step_need_more();
    if (byte(in, 0) != kVersion)
        return fail(fmt::format("socks5 upstream answered garbage (version 0x{:02x})", byte(in, 0)));
    uint8_t rep = byte(in, 1);
    target_refused_ = rep != 0x00;
    if (rep != 0x00)
        return fail(fmt::format("socks5 upstream refused {}: {} (REP=0x{:02x})",
                                phase_ == Phase::udp_associate ? "UDP ASSOCIATE" : "CONNECT", socks5_reply_text(rep),
                                rep));
    if (in.size() < 4)
        return step_need_more();
    size_t len = 0;
    switch (byte(in, 3)) {
    case kAtypV4: len = 4 + 4 + 2; break;
    case kAtypV6: len = 4 + 16 + 2; break;
    case kAtypDomain:
        if (in.size() < 5)
            return step_need_more();
        len = 5 + size_t(byte(in, 4)) + 2;
        break;
    default:
        return fail(fmt::format("socks5 upstream answered garbage (address type 0x{:02x})", byte(in, 3)));
    }
    if (in.size() < len)
        return step_need_more();
    if (phase_ == Phase::udp_associate) {
        // Datagrams go to this address: a name would need resolving here.
        size_t used = 0;
        auto at = socks5_parse_address(in.substr(3, len - 3), used);
        if (!at)
            return fail("socks5 upstream named its UDP relay by a domain (an address is needed)");
        relay_ = *at;
    }
    state_ = State::done;
    return step_done(len);
}

}  // namespace ktp
