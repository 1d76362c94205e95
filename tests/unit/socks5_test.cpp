// SOCKS5 client handshake (RFC 1928/1929): bytes on the wire, reply parsing,
// split delivery, hostile replies, and the tunnel bytes that follow.
#include "handshake_driver.h"
#include "upstream/socks5.h"

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>

using namespace ktp;
using namespace std::string_literals;
using ktp::testing::drive;
using ktp::testing::DriveResult;

namespace {


SockAddr ip(const char* s, uint16_t port) { return *SockAddr::parse_ip(s, port); }

Target v4_target() { return Target{"", ip("10.0.0.1", 443)}; }

const std::string kMethodNoAuth = "\x05\x00"s;
const std::string kMethodUserPass = "\x05\x02"s;
const std::string kAuthOk = "\x01\x00"s;
const std::string kReplyV4 = "\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"s;  // bound 127.0.0.1:1080
const std::string kReplyV6 = "\x05\x00\x00\x04"s + std::string(15, '\0') + "\x01\x04\x38"s;
const std::string kReplyDomain = "\x05\x00\x00\x03\x09proxy.lan\x04\x38"s;

}  // namespace

TEST_CASE("socks5 greeting offers only no-auth without credentials")
{
    Socks5Handshake hs("", "", v4_target());
    HandshakeStep s = hs.start();
    REQUIRE(s.kind == HandshakeStep::send);
    CHECK(s.out == "\x05\x01\x00"s);
}

TEST_CASE("socks5 greeting offers no-auth and username/password with credentials")
{
    Socks5Handshake hs("alice", "secret", v4_target());
    HandshakeStep s = hs.start();
    REQUIRE(s.kind == HandshakeStep::send);
    CHECK(s.out == "\x05\x02\x00\x02"s);
}

TEST_CASE("socks5 CONNECT to an IPv4 destination uses ATYP 1 and the port in network order")
{
    Socks5Handshake hs("", "", v4_target());
    DriveResult r = drive(hs, kMethodNoAuth + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent == "\x05\x01\x00"s + "\x05\x01\x00\x01\x0a\x00\x00\x01\x01\xbb"s);
    CHECK(r.rest.empty());
}

TEST_CASE("socks5 greet_only ends after the method (and auth) reply, before any CONNECT")
{
    Socks5Handshake hs("", "", Target{}, Socks5Handshake::Phase::greet_only);
    DriveResult r = drive(hs, kMethodNoAuth);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent == "\x05\x01\x00"s);
    Socks5Handshake auth("alice", "secret", Target{}, Socks5Handshake::Phase::greet_only);
    DriveResult a = drive(auth, kMethodUserPass + kAuthOk);
    REQUIRE(a.last.kind == HandshakeStep::done);
    CHECK(a.sent == "\x05\x02\x00\x02"s + "\x01\x05"s + "alice\x06secret"s);
}

TEST_CASE("socks5 connect_only starts with the CONNECT request, optimistic data right behind it")
{
    Socks5Handshake hs("alice", "secret", v4_target(), Socks5Handshake::Phase::connect_only);
    hs.send_early("GET / HTTP/1.0\r\n\r\n");
    DriveResult r = drive(hs, kReplyV4 + "HTTP/1.0 200"s);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent == "\x05\x01\x00\x01\x0a\x00\x00\x01\x01\xbb"s + "GET / HTTP/1.0\r\n\r\n");
    CHECK(r.rest == "HTTP/1.0 200");
}

TEST_CASE("socks5 CONNECT to an IPv6 destination uses ATYP 4")
{
    Socks5Handshake hs("", "", Target{"", ip("fd00::2", 8080)});
    DriveResult r = drive(hs, kMethodNoAuth + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    std::string addr = "\xfd\x00"s + std::string(13, '\0') + "\x02"s;
    CHECK(r.sent.substr(3) == "\x05\x01\x00\x04"s + addr + "\x1f\x90"s);
}

TEST_CASE("socks5 sends a v4-mapped IPv6 destination as plain IPv4")
{
    Socks5Handshake hs("", "", Target{"", ip("::ffff:192.0.2.7", 80)});
    DriveResult r = drive(hs, kMethodNoAuth + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent.substr(3) == "\x05\x01\x00\x01\xc0\x00\x02\x07\x00\x50"s);
}

TEST_CASE("socks5 CONNECT sends the domain (ATYP 3) so DNS resolves at the proxy, port from the address")
{
    Socks5Handshake hs("", "", Target{"example.com", ip("10.0.0.1", 443)});
    DriveResult r = drive(hs, kMethodNoAuth + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent.substr(3) == "\x05\x01\x00\x03\x0b"s + "example.com" + "\x01\xbb"s);
}

TEST_CASE("socks5 username/password subnegotiation sends RFC 1929 bytes, then CONNECT")
{
    Socks5Handshake hs("alice", "s3cret", v4_target());
    DriveResult r = drive(hs, kMethodUserPass + kAuthOk + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sends == 3);
    CHECK(r.sent == "\x05\x02\x00\x02"s + "\x01\x05" "alice" "\x06" "s3cret"s +
                        "\x05\x01\x00\x01\x0a\x00\x00\x01\x01\xbb"s);
}

TEST_CASE("socks5 accepts an auth reply carrying version 5 as some servers send")
{
    Socks5Handshake hs("alice", "pw", v4_target());
    CHECK(drive(hs, kMethodUserPass + "\x05\x00"s + kReplyV4).last.kind == HandshakeStep::done);
}

TEST_CASE("socks5 skips authentication when the server picks no-auth despite offered credentials")
{
    Socks5Handshake hs("alice", "pw", v4_target());
    DriveResult r = drive(hs, kMethodNoAuth + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sends == 2);
}

TEST_CASE("socks5 rejected credentials fail naming the status")
{
    Socks5Handshake hs("alice", "wrong", v4_target());
    DriveResult r = drive(hs, kMethodUserPass + "\x01\x01"s);
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error == "socks5 upstream rejected username/password (status 0x01)");
}

TEST_CASE("socks5 method 0xff fails with no acceptable auth method")
{
    Socks5Handshake hs("", "", v4_target());
    DriveResult r = drive(hs, "\x05\xff"s);
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK_THAT(r.last.error, Catch::StartsWith("socks5 upstream: no acceptable auth method (0xff)"));
}

TEST_CASE("socks5 fails when the server picks a method that was not offered")
{
    SECTION("username/password without credentials")
    {
        Socks5Handshake hs("", "", v4_target());
        DriveResult r = drive(hs, kMethodUserPass);
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "socks5 upstream chose an auth method we did not offer (0x02)");
    }
    SECTION("GSSAPI")
    {
        Socks5Handshake hs("alice", "pw", v4_target());
        CHECK(drive(hs, "\x05\x01"s).last.kind == HandshakeStep::failed);
    }
}

TEST_CASE("socks5 names a non-SOCKS server's first byte as garbage")
{
    Socks5Handshake hs("", "", v4_target());
    DriveResult r = drive(hs, "HTTP/1.1 400 Bad Request\r\n\r\n");
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error == "socks5 upstream answered garbage (version 0x48)");
}

TEST_CASE("socks5 garbage in the CONNECT reply or auth reply fails")
{
    SECTION("reply version")
    {
        Socks5Handshake hs("", "", v4_target());
        DriveResult r = drive(hs, kMethodNoAuth + "\x04\x5a\x00\x00"s);
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "socks5 upstream answered garbage (version 0x04)");
    }
    SECTION("auth version")
    {
        Socks5Handshake hs("a", "b", v4_target());
        DriveResult r = drive(hs, kMethodUserPass + "\x07\x00"s);
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "socks5 upstream answered garbage (auth version 0x07)");
    }
    SECTION("address type")
    {
        Socks5Handshake hs("", "", v4_target());
        DriveResult r = drive(hs, kMethodNoAuth + "\x05\x00\x00\x02\x00\x00"s);
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "socks5 upstream answered garbage (address type 0x02)");
    }
}

TEST_CASE("socks5 refused CONNECT names the reply code and its meaning")
{
    struct Case {
        uint8_t rep;
        const char* text;
    } cases[] = {
        {0x01, "general SOCKS server failure"}, {0x02, "connection not allowed by ruleset"},
        {0x03, "network unreachable"},          {0x04, "host unreachable"},
        {0x05, "connection refused"},           {0x06, "TTL expired"},
        {0x07, "command not supported"},        {0x08, "address type not supported"},
        {0x42, "unknown reply"},
    };
    for (const Case& c : cases) {
        Socks5Handshake hs("", "", v4_target());
        // Only VER and REP: the failure is reported without waiting for the rest.
        DriveResult r = drive(hs, kMethodNoAuth + "\x05"s + char(c.rep));
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == fmt::format("socks5 upstream refused CONNECT: {} (REP=0x{:02x})", c.text, c.rep));
    }
}

TEST_CASE("socks5 reply with BND.ADDR of each type is consumed exactly, later bytes are tunnel data")
{
    for (const std::string& reply : {kReplyV4, kReplyV6, kReplyDomain}) {
        Socks5Handshake hs("", "", v4_target());
        DriveResult r = drive(hs, kMethodNoAuth + reply + "HTTP/1.1 200 OK\r\n"s);
        REQUIRE(r.last.kind == HandshakeStep::done);
        CHECK(r.last.consumed == reply.size());
        CHECK(r.rest == "HTTP/1.1 200 OK\r\n");
    }
}

TEST_CASE("socks5 handshake delivered one byte at a time ends the same as in one piece")
{
    for (const std::string& reply : {kReplyV4, kReplyV6, kReplyDomain}) {
        std::string server = kMethodUserPass + kAuthOk + reply + "\x00tunnel"s;
        Socks5Handshake whole("u", "p", v4_target());
        Socks5Handshake split("u", "p", v4_target());
        DriveResult a = drive(whole, server);
        DriveResult b = drive(split, server, 1);
        REQUIRE(a.last.kind == HandshakeStep::done);
        REQUIRE(b.last.kind == HandshakeStep::done);
        CHECK(a.sent == b.sent);
        CHECK(b.rest == "\x00tunnel"s);
    }
}

TEST_CASE("socks5 server bytes truncated at any point leave the handshake waiting, never done or failed")
{
    for (const std::string& reply : {kReplyV4, kReplyV6, kReplyDomain}) {
        std::string server = kMethodUserPass + kAuthOk + reply;
        for (size_t cut = 0; cut < server.size(); ++cut) {
            Socks5Handshake hs("u", "p", v4_target());
            DriveResult r = drive(hs, server.substr(0, cut), 1);
            INFO("cut at " << cut);
            CHECK(r.last.kind == HandshakeStep::need_more);
        }
    }
}

TEST_CASE("socks5 domain reply whose length byte promises more than arrived waits, reading nothing beyond")
{
    Socks5Handshake hs("", "", v4_target());
    // Claims a 200-byte name; only 3 bytes follow.
    DriveResult r = drive(hs, kMethodNoAuth + "\x05\x00\x00\x03\xc8" "abc"s);
    CHECK(r.last.kind == HandshakeStep::need_more);
}

TEST_CASE("socks5 refuses over-long credentials and domains before sending anything")
{
    std::string max(255, 'x'), over(256, 'x');
    CHECK(Socks5Handshake(max, max, Target{max, ip("10.0.0.1", 1)}).start().kind == HandshakeStep::send);
    HandshakeStep s = Socks5Handshake(over, "p", v4_target()).start();
    CHECK(s.kind == HandshakeStep::failed);
    CHECK(s.error == "socks5: username is 256 bytes, the protocol allows 255");
    CHECK(Socks5Handshake("u", over, v4_target()).start().kind == HandshakeStep::failed);
    s = Socks5Handshake("", "", Target{over, ip("10.0.0.1", 1)}).start();
    CHECK(s.kind == HandshakeStep::failed);
    CHECK(s.error == "socks5: domain is 256 bytes, the protocol allows 255");
}

TEST_CASE("socks5 a maximal username and password are sent with their lengths")
{
    std::string user(255, 'u'), pass(255, 'p');
    Socks5Handshake hs(user, pass, v4_target());
    DriveResult r = drive(hs, kMethodUserPass + kAuthOk + kReplyV4);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent.substr(4, 2 + 255 + 1 + 255) == "\x01\xff"s + user + "\xff"s + pass);
}

TEST_CASE("socks5 a password without a username is refused (RFC 1929 needs a username)")
{
    CHECK(Socks5Handshake("", "pw", v4_target()).start().kind == HandshakeStep::failed);
}

TEST_CASE("socks5 without an address fails in start, even with a domain (the port comes from the address)")
{
    HandshakeStep s = Socks5Handshake("", "", Target{}).start();
    CHECK(s.kind == HandshakeStep::failed);
    CHECK(s.error == "socks5: no destination address to CONNECT to");
    CHECK(Socks5Handshake("", "", Target{"example.com", {}}).start().kind == HandshakeStep::failed);
}

TEST_CASE("socks5 reply with an empty domain as BND.ADDR and a non-zero RSV is still accepted")
{
    Socks5Handshake hs("", "", v4_target());
    DriveResult r = drive(hs, kMethodNoAuth + "\x05\x00\x01\x03\x00\x00\x00"s + "x");
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.last.consumed == 7);
    CHECK(r.rest == "x");
}

TEST_CASE("socks5 feeding out of order fails instead of misbehaving")
{
    Socks5Handshake before("", "", v4_target());
    CHECK(before.feed("\x05\x00"s).kind == HandshakeStep::failed);

    Socks5Handshake after("", "", v4_target());
    REQUIRE(drive(after, kMethodNoAuth + kReplyV4).last.kind == HandshakeStep::done);
    CHECK(after.feed(kReplyV4).kind == HandshakeStep::failed);
    CHECK(after.start().kind == HandshakeStep::failed);
}

TEST_CASE("socks5 survives every pseudo-random reply without reading out of bounds")
{
    uint32_t seed = 12345;
    auto next = [&] { return seed = seed * 1103515245u + 12345u; };
    for (int i = 0; i < 2000; ++i) {
        std::string server = i % 2 ? kMethodNoAuth : kMethodUserPass + kAuthOk;
        size_t n = next() % 40;
        for (size_t k = 0; k < n; ++k)
            server += char(next() >> 16);
        if (i % 3 == 0 && n > 0)
            server[server.size() - n] = 0x05;  // keep the version right more often
        Socks5Handshake hs("u", "p", v4_target());
        DriveResult r = drive(hs, server, 1 + next() % 4);
        if (r.last.kind == HandshakeStep::done)
            CHECK(r.last.consumed <= server.size());
    }
}
