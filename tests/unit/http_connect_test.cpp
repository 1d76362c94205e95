// HTTP CONNECT client handshake: the request bytes, Basic credentials, status
// line parsing, the 16 KiB header cap, and tunnel bytes after the headers.
#include "handshake_driver.h"
#include "upstream/http_connect.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

using namespace ktp;
using namespace std::string_literals;
using ktp::testing::drive;
using ktp::testing::DriveResult;

namespace {


SockAddr ip(const char* s, uint16_t port) { return *SockAddr::parse_ip(s, port); }

Target domain_target() { return Target{"example.com", ip("10.0.0.1", 443)}; }

const std::string kOk = "HTTP/1.1 200 Connection established\r\n\r\n";

}  // namespace

TEST_CASE("base64 matches the RFC 4648 test vectors")
{
    CHECK(base64_encode("") == "");
    CHECK(base64_encode("f") == "Zg==");
    CHECK(base64_encode("fo") == "Zm8=");
    CHECK(base64_encode("foo") == "Zm9v");
    CHECK(base64_encode("foob") == "Zm9vYg==");
    CHECK(base64_encode("fooba") == "Zm9vYmE=");
    CHECK(base64_encode("foobar") == "Zm9vYmFy");
    CHECK(base64_encode("\xff\xfe\x00"s) == "//4A");
    CHECK(base64_encode("Aladdin:open sesame") == "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

TEST_CASE("http CONNECT request names the domain and port in the request line and Host")
{
    HttpConnectHandshake hs("", "", domain_target());
    HandshakeStep s = hs.start();
    REQUIRE(s.kind == HandshakeStep::send);
    CHECK(s.out == "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
}

TEST_CASE("http CONNECT to an address writes IPv4 plainly and IPv6 in brackets")
{
    CHECK(HttpConnectHandshake("", "", Target{"", ip("10.1.2.3", 80)}).start().out ==
          "CONNECT 10.1.2.3:80 HTTP/1.1\r\nHost: 10.1.2.3:80\r\n\r\n");
    CHECK(HttpConnectHandshake("", "", Target{"", ip("fd00::1", 8443)}).start().out ==
          "CONNECT [fd00::1]:8443 HTTP/1.1\r\nHost: [fd00::1]:8443\r\n\r\n");
    CHECK(HttpConnectHandshake("", "", Target{"", ip("::ffff:10.1.2.3", 80)}).start().out ==
          "CONNECT 10.1.2.3:80 HTTP/1.1\r\nHost: 10.1.2.3:80\r\n\r\n");
}

TEST_CASE("http CONNECT with credentials sends Proxy-Authorization Basic")
{
    HttpConnectHandshake hs("Aladdin", "open sesame", domain_target());
    CHECK(hs.start().out ==
          "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
          "Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n");
}

TEST_CASE("http CONNECT refuses a username with ':' which Basic cannot carry")
{
    HandshakeStep s = HttpConnectHandshake("a:b", "c", domain_target()).start();
    CHECK(s.kind == HandshakeStep::failed);
}

TEST_CASE("http CONNECT refuses a domain that would inject header lines")
{
    for (std::string bad : {"evil.com\r\nX-Injected: 1"s, "a b"s, "x\ny"s, ""s + char(0x7f)}) {
        HandshakeStep s = HttpConnectHandshake("", "", Target{bad, ip("10.0.0.1", 80)}).start();
        CHECK(s.kind == HandshakeStep::failed);
        CHECK(s.error.find('\n') == std::string::npos);
    }
}

TEST_CASE("http CONNECT without an address fails in start, even with a domain (the port comes from the address)")
{
    CHECK(HttpConnectHandshake("", "", Target{}).start().kind == HandshakeStep::failed);
    CHECK(HttpConnectHandshake("", "", Target{"example.com", {}}).start().kind == HandshakeStep::failed);
}

TEST_CASE("http 2xx completes the handshake; bytes after the blank line are tunnel data")
{
    HttpConnectHandshake hs("", "", domain_target());
    std::string server = "HTTP/1.1 200 OK\r\nVia: squid\r\nProxy-Agent: x\r\n\r\n\x16\x03\x01tunnel"s;
    DriveResult r = drive(hs, server);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.last.consumed == server.find("\r\n\r\n") + 4);
    CHECK(r.rest == "\x16\x03\x01tunnel"s);
}

TEST_CASE("http accepts HTTP/1.0, any 2xx, a missing reason and bare LF line endings")
{
    for (std::string reply : {"HTTP/1.0 200 Connection established\r\n\r\n"s, "HTTP/1.1 204\r\n\r\n"s,
                              "HTTP/1.1 299 Whatever\n\n"s, "HTTP/1.1 200 OK\nVia: x\r\n\n"s}) {
        HttpConnectHandshake hs("", "", domain_target());
        DriveResult r = drive(hs, reply + "T");
        INFO(reply);
        REQUIRE(r.last.kind == HandshakeStep::done);
        CHECK(r.rest == "T");
    }
}

TEST_CASE("http non-2xx fails with the status code and reason")
{
    HttpConnectHandshake hs("", "", domain_target());
    DriveResult r = drive(hs, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n");
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error == "http upstream refused CONNECT: 407 Proxy Authentication Required");
}

TEST_CASE("http refusal is reported on its status line, without waiting for the headers")
{
    HttpConnectHandshake hs("", "", domain_target());
    DriveResult r = drive(hs, "HTTP/1.1 502\r\n");
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error == "http upstream refused CONNECT: 502");
}

TEST_CASE("http 3xx is a refusal too: a CONNECT cannot follow redirects")
{
    HttpConnectHandshake hs("", "", domain_target());
    CHECK(drive(hs, "HTTP/1.1 301 Moved\r\n\r\n").last.error == "http upstream refused CONNECT: 301 Moved");
}

TEST_CASE("http control bytes in the reason phrase do not reach the one-line error")
{
    HttpConnectHandshake hs("", "", domain_target());
    DriveResult r = drive(hs, "HTTP/1.1 403 No\x1b[31m way\r\n"s);
    REQUIRE(r.last.kind == HandshakeStep::failed);
    CHECK(r.last.error == "http upstream refused CONNECT: 403 No\\x1b[31m way");
}

TEST_CASE("http interim 1xx responses are skipped before the final one")
{
    HttpConnectHandshake hs("", "", domain_target());
    std::string server = "HTTP/1.1 100 Continue\r\n\r\n" + kOk + "data";
    DriveResult r = drive(hs, server);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.rest == "data");
}

TEST_CASE("http garbage instead of a status line fails at once and shows the first bytes")
{
    SECTION("an SSH server")
    {
        HttpConnectHandshake hs("", "", domain_target());
        DriveResult r = drive(hs, "SSH-2.0-OpenSSH_9.2");
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "http upstream answered garbage: \"SSH-2.0-OpenSSH_\"");
    }
    SECTION("a SOCKS5 server, seen on its first byte")
    {
        HttpConnectHandshake hs("", "", domain_target());
        DriveResult r = drive(hs, "\x05"s);
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "http upstream answered garbage: \"\\x05\"");
    }
    SECTION("malformed status lines")
    {
        for (std::string bad : {"HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 abc\r\n\r\n",
                                "HTTP/1.x 200 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n", "HTTP/2 200\r\n\r\n",
                                "\r\n\r\n", "http/1.1 200 OK\r\n\r\n"}) {
            HttpConnectHandshake hs("", "", domain_target());
            INFO(bad);
            CHECK(drive(hs, bad).last.kind == HandshakeStep::failed);
        }
    }
}

TEST_CASE("http response headers over 16 KiB fail instead of buffering forever")
{
    SECTION("one endless header line")
    {
        HttpConnectHandshake hs("", "", domain_target());
        DriveResult r = drive(hs, "HTTP/1.1 200 OK\r\nX: " + std::string(20000, 'a'), 1000);
        REQUIRE(r.last.kind == HandshakeStep::failed);
        CHECK(r.last.error == "http upstream sent a response header over 16 KiB");
    }
    SECTION("many short headers")
    {
        std::string server = "HTTP/1.1 200 OK\r\n";
        while (server.size() < 17000)
            server += "X-Pad: 0123456789\r\n";
        HttpConnectHandshake hs("", "", domain_target());
        CHECK(drive(hs, server + "\r\n", 4096).last.kind == HandshakeStep::failed);
    }
    SECTION("an endless status line")
    {
        HttpConnectHandshake hs("", "", domain_target());
        CHECK(drive(hs, "HTTP/1.1 200 " + std::string(20000, 'a')).last.kind == HandshakeStep::failed);
    }
}

TEST_CASE("http response headers just under 16 KiB are accepted")
{
    std::string server = "HTTP/1.1 200 OK\r\nX: ";
    server += std::string(HttpConnectHandshake::kMaxHeader - server.size() - 4, 'a') + "\r\n\r\n";
    REQUIRE(server.size() == HttpConnectHandshake::kMaxHeader);
    HttpConnectHandshake hs("", "", domain_target());
    DriveResult r = drive(hs, server + "tunnel");
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.rest == "tunnel");
}

TEST_CASE("http response delivered one byte at a time ends the same as in one piece")
{
    std::string server = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nVia: 1.1 proxy\r\n\r\nhello";
    HttpConnectHandshake hs("", "", domain_target());
    DriveResult r = drive(hs, server, 1);
    REQUIRE(r.last.kind == HandshakeStep::done);
    CHECK(r.rest == "hello");
}

TEST_CASE("http response truncated at any point leaves the handshake waiting")
{
    std::string server = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nVia: 1.1 proxy\r\n\r\n";
    for (size_t cut = 0; cut < server.size(); ++cut) {
        HttpConnectHandshake hs("", "", domain_target());
        INFO("cut at " << cut);
        CHECK(drive(hs, server.substr(0, cut), 1).last.kind == HandshakeStep::need_more);
    }
}

TEST_CASE("http feeding out of order fails instead of misbehaving")
{
    HttpConnectHandshake before("", "", domain_target());
    CHECK(before.feed(kOk).kind == HandshakeStep::failed);
    HttpConnectHandshake after("", "", domain_target());
    REQUIRE(drive(after, kOk).last.kind == HandshakeStep::done);
    CHECK(after.feed(kOk).kind == HandshakeStep::failed);
}

TEST_CASE("http survives every pseudo-random response without reading out of bounds")
{
    uint32_t seed = 777;
    auto next = [&] { return seed = seed * 1103515245u + 12345u; };
    const char* pieces[] = {"HTTP/1.", "1 ", "200", " OK", "\r\n", "\n", "\r", "1", "X: y", ":", " ", "\x00"};
    for (int i = 0; i < 3000; ++i) {
        std::string server;
        size_t n = next() % 12;
        for (size_t k = 0; k < n; ++k)
            server += next() % 4 ? std::string(pieces[(next() >> 8) % 12]) : std::string(1, char(next() >> 16));
        HttpConnectHandshake hs("", "", domain_target());
        drive(hs, server, 1 + next() % 5);
    }
}
