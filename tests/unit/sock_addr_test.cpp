// Address parsing, printing and the v4-mapped form shared with the BPF maps.
#include "kernel/bpf_abi.h"
#include "base/sock_addr.h"

#include <arpa/inet.h>
#include <catch2/catch.hpp>

using namespace ktp;

TEST_CASE("numeric addresses parse with their family and print with brackets for IPv6")
{
    auto a = SockAddr::parse_ip("10.1.2.3", 80);
    REQUIRE(a);
    CHECK(a->family() == AF_INET);
    CHECK(a->to_string() == "10.1.2.3:80");
    auto b = SockAddr::parse_ip("fd00::1", 443);
    REQUIRE(b);
    CHECK(b->family() == AF_INET6);
    CHECK(b->to_string() == "[fd00::1]:443");
    auto c = SockAddr::parse_ip("[::1]", 1);
    REQUIRE(c);
    CHECK(c->to_string() == "[::1]:1");
}

TEST_CASE("names and garbage are not addresses")
{
    CHECK_FALSE(SockAddr::parse_ip("localhost", 80));
    CHECK_FALSE(SockAddr::parse_ip("", 80));
    CHECK_FALSE(SockAddr::parse_ip("1.2.3.4.5", 80));
    CHECK_FALSE(SockAddr::parse_ip("fd00::zz", 80));
}

TEST_CASE("IPv4 maps to ::ffff:a.b.c.d and back")
{
    auto a = SockAddr::parse_ip("192.0.2.7", 8080);
    uint32_t m[4];
    a->to_mapped(m);
    CHECK(m[0] == 0);
    CHECK(m[1] == 0);
    CHECK(m[2] == htonl(0xffff));
    CHECK(m[3] == inet_addr("192.0.2.7"));

    auto mapped = SockAddr::parse_ip("::ffff:192.0.2.7", 8080);
    REQUIRE(mapped->family() == AF_INET6);
    SockAddr un = mapped->unmapped();
    CHECK(un.family() == AF_INET);
    CHECK(un.to_string() == "192.0.2.7:8080");
    // A real IPv6 address stays IPv6.
    CHECK(SockAddr::parse_ip("fd00::7", 1)->unmapped().family() == AF_INET6);
}

TEST_CASE("an original destination from the BPF map becomes the right socket address")
{
    ktp_orig_dst od{};
    SockAddr::parse_ip("10.201.0.2", 0)->to_mapped(od.addr);
    od.port = htons(80);
    od.family = KTP_AF_INET;
    CHECK(SockAddr::from_orig_dst(od).to_string() == "10.201.0.2:80");

    ktp_orig_dst od6{};
    SockAddr::parse_ip("fd00:201::2", 0)->to_mapped(od6.addr);
    od6.port = htons(443);
    od6.family = KTP_AF_INET6;
    SockAddr s6 = SockAddr::from_orig_dst(od6);
    CHECK(s6.family() == AF_INET6);
    CHECK(s6.to_string() == "[fd00:201::2]:443");
}
