// Domain sniffing from the client's first bytes: TLS ClientHello SNI and the
// HTTP/1.x Host header, including truncation, lying lengths and garbage.
#include "route/sniff.h"

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace ktp;
using namespace std::string_literals;

namespace {

std::string u16(size_t v) { return {char(v >> 8 & 0xff), char(v & 0xff)}; }
std::string u24(size_t v) { return {char(v >> 16 & 0xff), char(v >> 8 & 0xff), char(v & 0xff)}; }

std::string extension(uint16_t type, const std::string& data) { return u16(type) + u16(data.size()) + data; }

std::string sni_extension(const std::string& host)
{
    std::string entry = "\x00"s + u16(host.size()) + host;  // host_name
    return extension(0, u16(entry.size()) + entry);
}

// A ClientHello as a TLS 1.3 client sends it, built from its fields so that
// tests can make any one of them lie.
struct HelloBuilder {
    std::string session_id = std::string(32, '\x5a');
    std::string suites = "\x13\x01\x13\x02\x13\x03\xc0\x2b"s;
    std::string compression = "\x00"s;
    std::vector<std::string> extensions;
    bool with_extensions = true;
    size_t record_split = 0;  // >0: spread the handshake message over records of this size

    HelloBuilder& sni(const std::string& host)
    {
        extensions.push_back(sni_extension(host));
        return *this;
    }

    std::string body() const
    {
        std::string b = "\x03\x03"s + std::string(32, '\x11');
        b += char(session_id.size()) + session_id;
        b += u16(suites.size()) + suites;
        b += char(compression.size()) + compression;
        if (with_extensions) {
            std::string exts;
            for (const std::string& e : extensions)
                exts += e;
            b += u16(exts.size()) + exts;
        }
        return b;
    }

    std::string handshake() const { return "\x01"s + u24(body().size()) + body(); }

    std::string bytes() const
    {
        std::string hs = handshake();
        size_t step = record_split ? record_split : hs.size();
        std::string out;
        for (size_t i = 0; i < hs.size(); i += step) {
            std::string frag = hs.substr(i, step);
            out += "\x16\x03\x01"s + u16(frag.size()) + frag;
        }
        return out;
    }
};

HelloBuilder typical(const std::string& host)
{
    HelloBuilder b;
    b.extensions.push_back(extension(0x000a, "\x00\x04\x00\x1d\x00\x17"s));  // supported_groups
    b.sni(host);
    b.extensions.push_back(extension(0x002b, "\x02\x03\x04"s));  // supported_versions
    return b;
}

std::string from_hex(std::string_view hex)
{
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out += char(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
    return out;
}

// Captured from `openssl s_client -servername www.Example.com` (OpenSSL 3.0)
// against a listener on 127.0.0.1.
const std::string kOpensslHello = from_hex(
    "160301013c010001380303406f66ca66676473107c4d871374cc6dcd5578645db7fff899c66fd179d30b6020bd4d5886"
    "262abeb4b3fb5b7cf3e297a379dbee863037f8aaa1d21fa2a67cfc2e003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000b1"
    "00000014001200000f7777772e4578616d706c652e636f6d000b000403000102000a00160014001d0017001e00190018"
    "01000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b08040805"
    "0806040105010601030303010302040205020602002b0009080304030303020301002d00020101003300260024001d00"
    "2031138e1ee4aab08669f7a6b9455bed78d3a708b4fe252ad5b9845bf2a0c16822");

SniffResult::Status status(std::string_view bytes) { return sniff_domain(bytes).status; }

std::string found(std::string_view bytes)
{
    SniffResult r = sniff_domain(bytes);
    REQUIRE(r.status == SniffResult::found);
    return r.domain;
}

}  // namespace

TEST_CASE("sni from a real openssl ClientHello, lowercased")
{
    REQUIRE(kOpensslHello.size() == 321);
    CHECK(found(kOpensslHello) == "www.example.com");
}

TEST_CASE("sni is found among other extensions, in any position")
{
    CHECK(found(typical("api.example.net").bytes()) == "api.example.net");
    HelloBuilder last;
    last.extensions = {extension(0x0017, ""), extension(0x0023, ""), sni_extension("last.example")};
    CHECK(found(last.bytes()) == "last.example");
}

TEST_CASE("sni: every truncation of a ClientHello asks for more bytes")
{
    for (const std::string& hello : {kOpensslHello, typical("a.example").bytes()}) {
        for (size_t cut = 0; cut < hello.size(); ++cut) {
            INFO("cut at " << cut);
            CHECK(status(hello.substr(0, cut)) == SniffResult::need_more);
        }
    }
}

TEST_CASE("sni: a ClientHello split over several records is reassembled")
{
    HelloBuilder b = typical("split.example");
    b.record_split = 7;
    std::string bytes = b.bytes();
    CHECK(found(bytes) == "split.example");
    for (size_t cut = 0; cut < bytes.size(); ++cut)
        CHECK(status(bytes.substr(0, cut)) == SniffResult::need_more);
}

TEST_CASE("sni: the bytes after the ClientHello do not matter")
{
    CHECK(found(typical("x.example").bytes() + "\x14\x03\x03\x00\x01\x01"s) == "x.example");
}

TEST_CASE("sni: a ClientHello without server_name, or without extensions, has no domain")
{
    HelloBuilder no_sni;
    no_sni.extensions.push_back(extension(0x000a, "\x00\x02\x00\x1d"s));
    CHECK(status(no_sni.bytes()) == SniffResult::none);
    HelloBuilder no_ext;
    no_ext.with_extensions = false;
    CHECK(status(no_ext.bytes()) == SniffResult::none);
}

TEST_CASE("sni: names that are not host names give none")
{
    for (std::string bad : {"exa_mple.com"s, "a..b"s, ".a"s, "10.0.0.1"s, "has space.com"s, ""s, "x\0y.com"s,
                            std::string(254, 'a'), std::string(64, 'a') + ".com", "caf\xc3\xa9.example"s}) {
        INFO(bad);
        CHECK(status(HelloBuilder{}.sni(bad).bytes()) == SniffResult::none);
    }
    CHECK(found(HelloBuilder{}.sni("trailing.dot.").bytes()) == "trailing.dot");
    std::string longest = std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
                          std::string(61, 'd');
    REQUIRE(longest.size() == 253);
    CHECK(found(HelloBuilder{}.sni(longest).bytes()) == longest);
}

TEST_CASE("sni: a server_name entry of another name type is skipped")
{
    HelloBuilder b;
    std::string entries = "\x01"s + u16(3) + "abc" + "\x00"s + u16(9) + "b.example";
    b.extensions.push_back(extension(0, u16(entries.size()) + entries));
    CHECK(found(b.bytes()) == "b.example");
}

TEST_CASE("sni: lengths that lie give none, never a read past the end")
{
    SECTION("session id longer than 32")
    {
        HelloBuilder b = typical("a.example");
        b.session_id = std::string(33, 'x');
        CHECK(status(b.bytes()) == SniffResult::none);
    }
    SECTION("odd or empty cipher suite list")
    {
        HelloBuilder b = typical("a.example");
        b.suites = "\x13"s;
        CHECK(status(b.bytes()) == SniffResult::none);
        b.suites = "";
        CHECK(status(b.bytes()) == SniffResult::none);
    }
    SECTION("no compression methods")
    {
        HelloBuilder b = typical("a.example");
        b.compression = "";
        CHECK(status(b.bytes()) == SniffResult::none);
    }
    // Patch one length field in an otherwise valid hello; the handshake and
    // record lengths stay as they were.
    std::string good = HelloBuilder{}.sni("a.example").bytes();
    size_t ext_total = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 8 + 1 + 1;  // offset of extensions length
    auto patched = [&](size_t at, size_t v) {
        std::string b = good;
        b[at] = char(v >> 8);
        b[at + 1] = char(v & 0xff);
        return b;
    };
    SECTION("extensions length beyond the message")
    {
        CHECK(status(patched(ext_total, 0xffff)) == SniffResult::none);
    }
    SECTION("extension data length beyond the extensions")
    {
        CHECK(status(patched(ext_total + 4, 0x0fff)) == SniffResult::none);
    }
    SECTION("server_name list length beyond the extension")
    {
        CHECK(status(patched(ext_total + 6, 0x0fff)) == SniffResult::none);
    }
    SECTION("host name length beyond the list")
    {
        CHECK(status(patched(ext_total + 9, 0x0fff)) == SniffResult::none);
    }
    SECTION("cipher suite length beyond the message")
    {
        CHECK(status(patched(5 + 4 + 2 + 32 + 1 + 32, 0xfffe)) == SniffResult::none);
    }
    SECTION("handshake length shorter than the fields")
    {
        std::string b = good;
        b[6] = 0;
        b[7] = 0;
        b[8] = 40;  // the body ends inside the random
        CHECK(status(b) == SniffResult::none);
    }
}

TEST_CASE("sni: a record or handshake message over 16 KiB is not waited for")
{
    CHECK(status("\x16\x03\x01\x40\x01"s) == SniffResult::none);         // record of 16385
    CHECK(status("\x16\x03\x01\x00\x04\x01\x00\x40\x00"s) == SniffResult::none);  // hello of 16384
    CHECK(status("\x16\x03\x01\x00\x04\x01\xff\xff\xff"s) == SniffResult::none);
    CHECK(status("\x16\x03\x01\x3f\xfb"s) == SniffResult::need_more);   // exactly at the cap: wait
}

TEST_CASE("sni: not a ClientHello gives none")
{
    CHECK(status("\x16\x03\x01\x00\x04\x02\x00\x00\x00"s) == SniffResult::none);  // ServerHello
    CHECK(status("\x16\x02"s) == SniffResult::none);                              // not TLS 1.x
    CHECK(status("\x16\x03\x01\x00\x00"s) == SniffResult::none);                  // empty record
    HelloBuilder b = typical("a.example");
    b.record_split = 10;
    std::string bytes = b.bytes();
    bytes[15] = 0x17;  // second record is application data
    CHECK(status(bytes) == SniffResult::none);
    CHECK(status("\x17\x03\x03\x00\x10"s) == SniffResult::none);
}

TEST_CASE("http: the Host header names the domain, without its port, lowercased")
{
    CHECK(found("GET / HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\n") == "example.com");
    CHECK(found("POST /x HTTP/1.0\r\nUser-Agent: t\r\nhOsT:   api.example.org:8080  \r\n\r\nbody") ==
          "api.example.org");
    CHECK(found("GET / HTTP/1.1\nHost: lf.example\n\n") == "lf.example");
    CHECK(found("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n") == "a.example");
}

TEST_CASE("http: waits for the blank line that ends the headers")
{
    std::string req = "GET /index.html HTTP/1.1\r\nHost: w.example\r\nAccept: */*\r\n\r\n";
    for (size_t cut = 0; cut < req.size(); ++cut) {
        INFO("cut at " << cut);
        CHECK(status(req.substr(0, cut)) == SniffResult::need_more);
    }
    CHECK(found(req) == "w.example");
}

TEST_CASE("http: IP literals and malformed hosts name no domain")
{
    for (const char* bad : {"[fd00::1]:8080", "[fd00::1]", "10.0.0.1", "10.0.0.1:80", "", "bad_host", "a:b",
                            "a.example:", "a.example:123456", "a b"}) {
        INFO(bad);
        CHECK(status(fmt::format("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", bad)) == SniffResult::none);
    }
}

TEST_CASE("http: no Host header, or two of them, gives none")
{
    CHECK(status("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n") == SniffResult::none);
    CHECK(status("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n") == SniffResult::none);
    CHECK(status("GET / HTTP/1.1\r\nX-Host: a.example\r\n\r\n") == SniffResult::none);
}

TEST_CASE("http: headers over 8 KiB without a blank line are not waited for")
{
    std::string big = "GET / HTTP/1.1\r\nHost: a.example\r\nX: " + std::string(9000, 'a');
    CHECK(status(big.substr(0, 8191)) == SniffResult::need_more);
    CHECK(status(big.substr(0, 8192)) == SniffResult::none);
    CHECK(status(big + "\r\n\r\n") == SniffResult::none);
}

TEST_CASE("http: a method prefix waits, other protocols give none")
{
    CHECK(status("") == SniffResult::need_more);
    CHECK(status("G") == SniffResult::need_more);
    CHECK(status("GET") == SniffResult::need_more);
    CHECK(status("GET /") == SniffResult::need_more);
    CHECK(status("get / HTTP/1.1\r\nHost: a.example\r\n\r\n") == SniffResult::none);
    CHECK(status("SSH-2.0-OpenSSH_9.2\r\n") == SniffResult::none);
    CHECK(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == SniffResult::none);
    CHECK(status("GET / HTTP/1.1 extra\r\nHost: a.example\r\n\r\n") == SniffResult::none);
    CHECK(status("GET /\r\nHost: a.example\r\n\r\n") == SniffResult::none);  // HTTP/0.9
    CHECK(status(" GET / HTTP/1.1\r\n") == SniffResult::none);
    CHECK(status("\x00\x00\x00\x00"s) == SniffResult::none);
    CHECK(status(std::string(40, 'A')) == SniffResult::none);
}

TEST_CASE("http: methods of up to 20 letters are waited for, longer tokens are not HTTP")
{
    // Found by the http_host fuzzer: the answer must not change as more of
    // the same stream arrives.
    std::string m20(20, 'Q'), m21(21, 'Q');
    CHECK(status(m20) == SniffResult::need_more);
    CHECK(found(m20 + " / HTTP/1.1\r\nHost: q.example\r\n\r\n") == "q.example");
    CHECK(status(m21) == SniffResult::none);
    CHECK(status(m21 + " / HTTP/1.1\r\nHost: q.example\r\n\r\n") == SniffResult::none);
}

TEST_CASE("sniffing survives pseudo-random mutations of valid input without reading out of bounds")
{
    // ASan builds turn any out-of-bounds read here into a failure.
    std::vector<std::string> seeds = {kOpensslHello, typical("m.example").bytes(),
                                      "GET / HTTP/1.1\r\nHost: m.example\r\n\r\n"};
    uint32_t seed = 99;
    auto next = [&] { return seed = seed * 1103515245u + 12345u; };
    for (int i = 0; i < 20000; ++i) {
        std::string s = seeds[i % seeds.size()];
        int flips = 1 + next() % 4;
        for (int k = 0; k < flips; ++k)
            s[(next() >> 8) % s.size()] = char(next() >> 16);
        if (next() % 3 == 0)
            s.resize((next() >> 8) % s.size());
        SniffResult r = sniff_domain(s);
        if (r.status == SniffResult::found)
            CHECK(valid_sniffed_name(r.domain) == r.domain);
    }
}
