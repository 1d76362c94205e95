// SOCKS5 UDP (RFC 1928 section 7): the request header ktproxy builds, the
// parse of hostile relay datagrams, and the UDP ASSOCIATE handshake.
#include "handshake_driver.h"
#include "upstream/socks5.h"
#include "upstream/socks5_udp.h"

#include <catch2/catch.hpp>

#include <string>

using namespace ktp;
using namespace std::string_literals;
using ktp::testing::drive;

namespace {

SockAddr ip(const char* s, uint16_t port) { return *SockAddr::parse_ip(s, port); }

}  // namespace

TEST_CASE("socks5 udp header for IPv4, IPv6 and v4-mapped destinations")
{
    CHECK(socks5_udp_header(ip("10.0.0.2", 53)) == "\0\0\0\x01\x0a\0\0\x02\0\x35"s);
    CHECK(socks5_udp_header(ip("::ffff:10.0.0.2", 7000)) == "\0\0\0\x01\x0a\0\0\x02\x1b\x58"s);
    CHECK(socks5_udp_header(ip("fd00::1", 443)) == "\0\0\0\x04\xfd"s + std::string(14, '\0') + "\x01\x01\xbb"s);
    CHECK(socks5_udp_header(SockAddr()).empty());
}

TEST_CASE("socks5 udp parse round-trips the header and finds the payload")
{
    for (const char* a : {"10.0.0.2", "fd00::7"}) {
        const SockAddr dst = ip(a, 7000);
        const std::string d = socks5_udp_header(dst) + "payload";
        auto r = socks5_udp_parse(d);
        REQUIRE(r);
        CHECK(r->from.to_string() == dst.to_string());
        CHECK(d.substr(r->payload) == "payload");
    }
    auto empty = socks5_udp_parse("\0\0\0\x01\x0a\0\0\x02\0\x35"s);
    REQUIRE(empty);
    CHECK(empty->payload == 10);
}

TEST_CASE("socks5 udp parse refuses hostile datagrams")
{
    std::string_view why;
    const std::string good = socks5_udp_header(ip("10.0.0.2", 7000)) + "x";
    CHECK_FALSE(socks5_udp_parse("", &why));
    CHECK(why == "shorter than a SOCKS5 UDP header");
    CHECK_FALSE(socks5_udp_parse("\0\0\0"s, &why));
    for (size_t cut = 0; cut < 10; ++cut)
        CHECK_FALSE(socks5_udp_parse(std::string_view(good).substr(0, cut)));
    std::string frag = good;
    frag[2] = 1;
    CHECK_FALSE(socks5_udp_parse(frag, &why));
    CHECK(why == "a fragment (FRAG != 0)");
    std::string rsv = good;
    rsv[1] = 1;
    CHECK_FALSE(socks5_udp_parse(rsv, &why));
    CHECK(why == "reserved bytes not zero");
    CHECK_FALSE(socks5_udp_parse("\0\0\0\x03\x04name\0\x35x"s, &why));
    CHECK(why.find("domain") != std::string_view::npos);
    CHECK_FALSE(socks5_udp_parse("\0\0\0\x09\x0a\0\0\x02\0\x35x"s, &why));
    CHECK(why == "unknown address type");
    CHECK_FALSE(socks5_udp_parse("\0\0\0\x04\xfd\0\0\0"s, &why));  // IPv6 cut short
}

TEST_CASE("socks5 UDP ASSOCIATE sends command 3 and learns the relay address")
{
    Socks5Handshake hs("user", "pw", Target{"", ip("0.0.0.0", 40000)}, Socks5Handshake::Phase::udp_associate);
    auto r = drive(hs, "\x05\x02"s + "\x01\x00"s + "\x05\x00\x00\x01\x0a\x00\x00\x09\x30\x39"s, 3);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.sent.substr(r.sent.size() - 10) == "\x05\x03\x00\x01\x00\x00\x00\x00\x9c\x40"s);
    CHECK(hs.relay().to_string() == "10.0.0.9:12345");
}

TEST_CASE("socks5 UDP ASSOCIATE refused, or answered with a domain, fails")
{
    Socks5Handshake refused("", "", Target{"", ip("0.0.0.0", 1)}, Socks5Handshake::Phase::udp_associate);
    auto r = drive(refused, "\x05\x00"s + "\x05\x07\x00\x01\0\0\0\0\0\0"s);
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error == "socks5 upstream refused UDP ASSOCIATE: command not supported (REP=0x07)");
    Socks5Handshake named("", "", Target{"", ip("0.0.0.0", 1)}, Socks5Handshake::Phase::udp_associate);
    r = drive(named, "\x05\x00"s + "\x05\x00\x00\x03\x05relay\x30\x39"s);
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error.find("domain") != std::string::npos);
}
