// DNS message parsing for the forwarder and the name memory: questions,
// answers with CNAME chains and compression, refusals, and hostile input.
#include "dns/dns_message.h"
#include "dns_wire.h"
#include "dns/fake_pool.h"
#include "dns/name_memory.h"
#include "dns/name_text.h"
#include "ops/report.h"
#include "ops/stats.h"

#include <catch2/catch.hpp>

#include <array>
#include <string>
#include <utility>

using namespace ktp;
using namespace ktp::test;
using namespace std::string_literals;

namespace {

std::string rr(const std::string& owner, unsigned type, unsigned ttl, const std::string& rdata)
{
    return owner + u16(type) + u16(1) + u32(ttl) + u16(rdata.size()) + rdata;
}

// An answer for NAME with one IPv4 address, as the forwarder would pass it
// to the name memory.
dns::Answer one_address(std::string name, std::array<uint8_t, 4> v4, uint32_t ttl)
{
    dns::Answer a;
    a.question.name = std::move(name);
    dns::Address ad;
    for (size_t i = 0; i < v4.size(); ++i)
        ad.bytes[i] = v4[i];  // IPv4 in the first 4
    ad.ttl = ttl;
    a.addresses.push_back(ad);
    return a;
}
}  // namespace

TEST_CASE("a query's question is read, lowercased")
{
    auto q = dns::parse_question(query("WWW.Example.ORG", dns::kTypeAaaa));
    REQUIRE(q);
    CHECK(q->id == 0x1234);
    CHECK(!q->response);
    CHECK(q->name == "www.example.org");
    CHECK(q->qtype == dns::kTypeAaaa);
}

TEST_CASE("DNS over TCP: pipelined messages are taken one by one, a short length is refused")
{
    const std::string q1 = query("a.test"), q2 = query("b.test", dns::kTypeAaaa);
    const std::string stream = dns::frame_tcp_message(q1) + dns::frame_tcp_message(q2);
    auto f = dns::take_tcp_message(stream);
    REQUIRE(f.status == dns::TcpFrame::whole);
    CHECK(f.message == q1);
    CHECK(f.used == 2 + q1.size());
    auto g = dns::take_tcp_message(std::string_view(stream).substr(f.used));
    REQUIRE(g.status == dns::TcpFrame::whole);
    CHECK(dns::parse_question(g.message)->name == "b.test");
    // Every cut short of the whole message waits for more.
    for (size_t n = 0; n < 2 + q1.size(); ++n)
        CHECK(dns::take_tcp_message(stream.substr(0, n)).status == dns::TcpFrame::need_more);
    // No DNS message is shorter than its header: the stream is not DNS.
    CHECK(dns::take_tcp_message(u16(0)).status == dns::TcpFrame::bad);
    CHECK(dns::take_tcp_message(u16(11) + std::string(11, 'x')).status == dns::TcpFrame::bad);
    CHECK(dns::frame_tcp_message(std::string(65536, 'x')).empty());
    CHECK(dns::frame_tcp_message(std::string(65535, 'x')).size() == 65537);
}

TEST_CASE("an answer's addresses follow the CNAME chain, with the smallest TTL")
{
    // Question at offset 12; the CNAME target compressed against it.
    std::string msg = header(7, 0x8180, 1, 3) + name("a.example") + u16(1) + u16(1);
    msg += rr("\xc0\x0c"s, dns::kTypeCname, 300, name("b.example"));
    msg += rr(name("b.example"), dns::kTypeA, 60, "\x0a\x00\x00\x05"s);
    msg += rr(name("unrelated.example"), dns::kTypeA, 60, "\x0a\x00\x00\x06"s);
    auto a = dns::parse_answer(msg);
    REQUIRE(a);
    CHECK(a->question.name == "a.example");
    REQUIRE(a->addresses.size() == 1);
    CHECK(a->addresses[0].bytes[3] == 5);
    CHECK(a->addresses[0].ttl == 60);
}

TEST_CASE("compression pointers that loop or point forward are refused")
{
    std::string self = header(1, 0x0100, 1, 0) + "\xc0\x0c"s + u16(1) + u16(1);
    CHECK(!dns::parse_question(self));
    std::string fwd = header(1, 0x0100, 1, 0) + "\xc0\x20"s + u16(1) + u16(1) + std::string(20, '\0');
    CHECK(!dns::parse_question(fwd));
    // Backwards pointers around a label: bounded by the 255-byte name limit.
    std::string loop = header(1, 0x0100, 1, 0) + "\x01x\xc0\x0c"s + u16(1) + u16(1);
    CHECK(!dns::parse_question(loop));
    // Into the header (found by the fuzzer: a refusal rewrites the header,
    // so such a name would change under it).
    std::string hdr = header(1, 0x0100, 1, 0) + "\xc0\x00"s + u16(1) + u16(1);
    CHECK(!dns::parse_question(hdr));
}

TEST_CASE("truncated messages and records are refused")
{
    std::string q = query("a.example");
    for (size_t cut = 0; cut < q.size(); ++cut)
        CHECK(!dns::parse_question(q.substr(0, cut)));
    std::string msg = header(7, 0x8180, 1, 1) + name("a.example") + u16(1) + u16(1) +
                      rr(name("a.example"), dns::kTypeA, 60, "\x0a\x00\x00\x05"s);
    CHECK(dns::parse_answer(msg));
    CHECK(!dns::parse_answer(msg.substr(0, msg.size() - 1)));
}

TEST_CASE("a refusal keeps the question and sets QR and the rcode")
{
    std::string r = dns::refusal(query("blocked.example"), dns::kRcodeRefused);
    auto q = dns::parse_question(r);
    REQUIRE(q);
    CHECK(q->response);
    CHECK(q->rcode == dns::kRcodeRefused);
    CHECK(q->name == "blocked.example");
    CHECK(q->id == 0x1234);
    CHECK(dns::refusal("junk", dns::kRcodeRefused).empty());
}

TEST_CASE("no refusal for a question whose pointer reaches past the question")
{
    // Found by the fuzzer: the name's pointer goes back to a byte of its own
    // first label, read there as a 32-byte label that runs into the bytes
    // after the question. The query parses; a reply holding only the
    // question would not, so none is made.
    std::string q = header(1, 0x0100, 1, 0) + "\x04\x00\x01\x20\x01\xc0\x0f"s + u16(1) + u16(1) + std::string(40, '\0');
    REQUIRE(dns::parse_question(q));
    CHECK(dns::refusal(q, dns::kRcodeNxdomain).empty());
}

TEST_CASE("a name is trusted only for the process that asked for it, and only while its answer is the latest")
{
    NameMemory m;
    auto now = NameMemory::Clock::now();
    auto addr = *SockAddr::parse_ip("10.0.0.9", 443);
    m.remember(one_address("bank.example", {10, 0, 0, 9}, 30), 100, now);
    CHECK(m.lookup(addr, 100, now).name == "bank.example");
    CHECK(m.lookup(addr, 100, now).trusted);
    CHECK(m.lookup(addr, 200, now).name == "bank.example");  // routes another process's connection
    CHECK_FALSE(m.lookup(addr, 200, now).trusted);           // but its upstream gets the address
    CHECK_FALSE(m.lookup(addr, 0, now).trusted);             // process unknown (gateway)
    // Another process makes an answer say its own name for the address.
    m.remember(one_address("evil.example", {10, 0, 0, 9}, 30), 200, now);
    CHECK(m.lookup(addr, 100, now).name == "bank.example");  // its own answer still names it
    CHECK(m.lookup(addr, 100, now).trusted);
    CHECK(m.lookup(addr, 200, now).name == "evil.example");
    CHECK(m.lookup(addr, 200, now).trusted);
    CHECK(m.lookup(addr, 300, now).name == "evil.example");  // a third process: the latest answer
    CHECK_FALSE(m.lookup(addr, 300, now).trusted);
    CHECK_FALSE(m.lookup(*SockAddr::parse_ip("10.0.0.8", 443), 100, now).trusted);
    m.remember(one_address("none.example", {10, 0, 0, 7}, 30), 0, now);  // asker unknown
    CHECK_FALSE(m.lookup(*SockAddr::parse_ip("10.0.0.7", 443), 0, now).trusted);
}

TEST_CASE("one address behind many names (a CDN): each process connects under the name it asked for")
{
    NameMemory m;
    auto now = NameMemory::Clock::now();
    auto addr = *SockAddr::parse_ip("10.0.0.9", 443);
    // 1 asked for a name a proxy rule covers, 2 for a direct one on the same
    // address: 1's connection must still be routed by its own name.
    m.remember(one_address("video.proxied.example", {10, 0, 0, 9}, 30), 1, now);
    m.remember(one_address("cdn.direct.example", {10, 0, 0, 9}, 30), 2, now);
    CHECK(m.lookup(addr, 1, now).name == "video.proxied.example");
    CHECK(m.lookup(addr, 2, now).name == "cdn.direct.example");
    // A process's next answer replaces its own name only.
    m.remember(one_address("img.proxied.example", {10, 0, 0, 9}, 30), 1, now);
    CHECK(m.lookup(addr, 1, now).name == "img.proxied.example");
    CHECK(m.lookup(addr, 2, now).name == "cdn.direct.example");
    // Past kAskersPerAddress askers the earliest goes; its process then sees the latest name.
    for (uint32_t p = 3; p < 3 + NameMemory::kAskersPerAddress - 1; ++p)
        m.remember(one_address("n" + std::to_string(p) + ".example", {10, 0, 0, 9}, 30), p, now);
    CHECK(m.lookup(addr, 1, now).name == "img.proxied.example");
    CHECK(m.lookup(addr, 2, now).name == "n5.example");
    CHECK_FALSE(m.lookup(addr, 2, now).trusted);
    CHECK(m.size() == 1);
    // One asker's name expiring leaves the others'.
    m.remember(one_address("short.example", {10, 0, 0, 9}, 1), 9, now);
    auto later = now + std::chrono::seconds(2) + NameMemory::kGrace;
    CHECK(m.lookup(addr, 9, later).name == "n5.example");
}

TEST_CASE("the name memory maps answered addresses to the name, until the TTL is long past")
{
    NameMemory m;
    dns::Answer a = one_address("db.corp.example", {10, 0, 0, 9}, 30);
    auto now = NameMemory::Clock::now();
    m.remember(a, 1, now);
    auto addr = *SockAddr::parse_ip("10.0.0.9", 5432);
    CHECK(m.lookup(addr, 1, now).name == "db.corp.example");
    CHECK(m.lookup(*SockAddr::parse_ip("::ffff:10.0.0.9", 1), 1, now).name == "db.corp.example");
    CHECK(m.lookup(*SockAddr::parse_ip("10.0.0.8", 1), 1, now).name.empty());
    CHECK(m.lookup(addr, 1, now + std::chrono::seconds(30) + NameMemory::kGrace + std::chrono::seconds(1)).name.empty());
}

TEST_CASE("a query whose name's pointer leads past the question gets no refusal and no fake answer")
{
    // Found by the fuzzer: the cut at the question's end broke the name.
    const std::string q = "\x01\x0d\x0d\x0d\x0d\x0d\x0d\x0d\x0d\x0d\x0d\x0d\x18\x0d\x0d\x0d\x0d\x0d\x0d\x00\x00\x00\x00\x00\x00\x00\x0d\x0d\x0d\x80\x6c\x65\x00\x00\x01\x00\x01\xc0\x0d\x0d\x00\x01\x00\x02\x00\x00\x00\x00"s;
    REQUIRE(dns::parse_question(q));
    CHECK(dns::refusal(q, dns::kRcodeRefused).empty());
    dns::Address ad;
    CHECK(dns::address_answer(q, &ad, 1).empty());
}

TEST_CASE("a fake answer carries the question and one record for it, parsed back as an answer")
{
    dns::Address ad;
    ad.bytes = {198, 18, 0, 1};
    std::string q = query("Proxied.Example");
    std::string r = dns::address_answer(q, &ad, 1);
    auto a = dns::parse_answer(r);
    REQUIRE(a);
    CHECK(a->question.id == 0x1234);
    CHECK(a->question.rcode == 0);
    CHECK(a->question.name == "proxied.example");
    REQUIRE(a->addresses.size() == 1);
    CHECK(!a->addresses[0].v6);
    CHECK(a->addresses[0].bytes[0] == 198);
    CHECK(a->addresses[0].bytes[3] == 1);
    CHECK(a->addresses[0].ttl == 1);
    CHECK((uint8_t(r[2]) & 0x81) == 0x81);  // QR, RD kept
    // AAAA: 16 bytes; NODATA: no record; the wrong family or a response: nothing.
    dns::Address v6;
    v6.v6 = true;
    v6.bytes[0] = 0xfd;
    auto a6 = dns::parse_answer(dns::address_answer(query("x.example", dns::kTypeAaaa), &v6, 1));
    REQUIRE(a6);
    REQUIRE(a6->addresses.size() == 1);
    CHECK(a6->addresses[0].v6);
    auto nodata = dns::parse_answer(dns::address_answer(query("x.example", dns::kTypeAaaa), nullptr, 1));
    REQUIRE(nodata);
    CHECK(nodata->addresses.empty());
    CHECK(dns::address_answer(query("x.example", dns::kTypeAaaa), &ad, 1).empty());
    CHECK(dns::address_answer(header(1, 0x8180, 1, 0) + name("x.example") + u16(1) + u16(1), &ad, 1).empty());
    CHECK(dns::address_answer("\x12\x34"s, &ad, 1).empty());
}

TEST_CASE("the fake pool gives each name its own address and knows it back")
{
    FakePool pool("198.18.0.0/15", "fd6b:7470:726f:7879::/64");
    auto t0 = FakePool::Clock::now();
    auto a = pool.address_for("a.example", false, t0);
    auto b = pool.address_for("b.example", false, t0);
    auto a6 = pool.address_for("a.example", true, t0);
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(a6);
    CHECK(a->bytes != b->bytes);
    CHECK(pool.address_for("a.example", false, t0)->bytes == a->bytes);
    auto sa = SockAddr::parse_ip("198.18.0.1", 443);
    auto sb = SockAddr::parse_ip("198.18.0.2", 443);
    auto s6 = SockAddr::parse_ip("fd6b:7470:726f:7879::1", 443);
    CHECK(pool.lookup(*sa, t0) == "a.example");
    CHECK(pool.lookup(*sb, t0) == "b.example");
    CHECK(pool.lookup(*s6, t0) == "a.example");
    // In the range but never handed out: fake, and no name.
    auto never = SockAddr::parse_ip("198.19.255.200", 80);
    CHECK(pool.contains(*never));
    CHECK(pool.lookup(*never, t0).empty());
    CHECK(!pool.contains(*SockAddr::parse_ip("10.0.0.1", 80)));
    CHECK(!pool.contains(*SockAddr::parse_ip("fd00::1", 80)));
}

TEST_CASE("a full fake pool reuses the oldest address only once nothing used it for the hold time")
{
    FakePool pool("10.99.0.0/29", "fd6b::/64");  // 6 usable addresses
    REQUIRE(pool.capacity() == 6);
    auto t0 = FakePool::Clock::now();
    for (int i = 0; i < 6; ++i)
        REQUIRE(pool.address_for("n" + std::to_string(i) + ".example", false, t0));
    CHECK(!pool.address_for("late.example", false, t0 + std::chrono::seconds(1)));
    // n0 is connected to again: n1 is now the oldest.
    auto later = t0 + FakePool::kHold + std::chrono::seconds(1);
    CHECK(pool.lookup(*SockAddr::parse_ip("10.99.0.1", 80), later) == "n0.example");
    auto r = pool.address_for("late.example", false, later);
    REQUIRE(r);
    CHECK(r->bytes[3] == 2);
    CHECK(pool.lookup(*SockAddr::parse_ip("10.99.0.2", 80), later) == "late.example");
    CHECK(pool.lookup(*SockAddr::parse_ip("10.99.0.1", 80), later) == "n0.example");
    CHECK(pool.size() == 6);
}

TEST_CASE("bad fake ranges are refused with the flag's name")
{
    CHECK_THROWS_WITH(FakePool("198.18.0.0", "fd00::/64"), Catch::Contains("--fake-range4"));
    CHECK_THROWS_WITH(FakePool("198.18.0.0/31", "fd00::/64"), Catch::Contains("--fake-range4"));
    CHECK_THROWS_WITH(FakePool("198.18.0.0/15", "fd00::/32"), Catch::Contains("--fake-range6"));
    CHECK_THROWS_WITH(FakePool("198.18.0.0/15", "nope/64"), Catch::Contains("--fake-range6"));
}

TEST_CASE("status names every kernel counter, the UDP ones included")
{
    // A nameless counter made `ktproxy status` throw (fmt and a null name)
    // and end the instance.
    for (int i = 0; i < KTP_CTR_MAX; ++i) {
        const char* n = kernel_counter_name(i);
        REQUIRE(n != nullptr);
        CHECK(std::string(n) != "?");
    }
    CHECK(std::string(kernel_counter_name(KTP_CTR_UDP_REDIRECTED)) == "udp_redirected");
    InstanceInfo info;
    CHECK_NOTHROW(render_status_text(info, WorkerSnapshot{}));
}

TEST_CASE("dns names in text logs: hostile bytes escaped, plain names unchanged")
{
    CHECK(ktp::dns::printable_name("web.test") == "web.test");
    CHECK(ktp::dns::plain_name("web.test"));
    const std::string hostile = "evil\nname\x1b[31m x\\y"s + '\0' + ".test";
    CHECK(ktp::dns::printable_name(hostile) == "evil\\x0aname\\x1b[31m\\x20x\\x5cy\\x00.test");
    CHECK_FALSE(ktp::dns::plain_name(hostile));
    CHECK(ktp::dns::printable_name("\xff") == "\\xff");
}

TEST_CASE("the name memory does not keep a name that is not plain text")
{
    NameMemory m;
    dns::Answer a = one_address("evil\nforged line.test", {10, 0, 0, 7}, 30);
    auto now = NameMemory::Clock::now();
    m.remember(a, 1, now);
    CHECK(m.lookup(*SockAddr::parse_ip("10.0.0.7", 22), 1, now).name.empty());
}
