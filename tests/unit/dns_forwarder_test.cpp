// The DNS forwarder's decision, the one UDP and TCP queries share: block
// answered locally, direct to the resolver asked, proxied names to the
// upstream (and --dns-resolver), unreadable queries never direct past a
// domain rule, fake mode's own answers.
#include "dns/dns_forwarder.h"
#include "dns/dns_message.h"
#include "dns_wire.h"
#include "dns/fake_pool.h"
#include "dns/name_memory.h"

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

using namespace ktp;
using namespace ktp::test;

namespace {

struct Fixture {
    RouterSlot slot{std::make_shared<const Router>(
        std::vector<std::string>{"domain=blocked.test block", "domain=secret.test proxy=m"},
        std::vector<std::string>{"m=socks5://127.0.0.1:1080"}, "direct")};
    SockAddr resolver = *SockAddr::parse_ip("192.0.2.53", 53);
    std::string comm = "test";
    DnsAsker who{resolver, comm, 1};
};

}  // namespace

TEST_CASE_METHOD(Fixture, "the forwarder routes each query by the name asked")
{
    NameMemory names;
    DnsForwarder fw({0, std::nullopt, dns::kRcodeRefused, false}, slot, &names);

    DnsRoute r = fw.route(query("blocked.test"), who);
    REQUIRE(r.kind == DnsRoute::Kind::answered);
    auto refused = dns::parse_question(r.answer);
    REQUIRE(refused);
    CHECK(refused->response);
    CHECK(refused->rcode == dns::kRcodeRefused);

    r = fw.route(query("web.test"), who);
    CHECK(r.kind == DnsRoute::Kind::direct);
    CHECK(r.resolver.to_string() == resolver.to_string());

    r = fw.route(query("secret.test"), who);
    REQUIRE(r.kind == DnsRoute::Kind::upstream);
    CHECK(r.upstream->name == "m");
    CHECK(r.resolver.to_string() == resolver.to_string());
    CHECK(r.router);

    // A response, or bytes with no name: a resolver might read a proxied or
    // blocked name from it, so never direct while domain rules exist.
    std::string response = query("secret.test");
    response[2] = char(0x81);
    CHECK(fw.route(response, who).kind == DnsRoute::Kind::drop);
    CHECK(fw.route("garbage", who).kind == DnsRoute::Kind::drop);
}

TEST_CASE_METHOD(Fixture, "an answer's names are trusted for the process that asked, not for others")
{
    NameMemory names;
    DnsForwarder fw({0, std::nullopt, dns::kRcodeRefused, false}, slot, &names);
    dns::Address a;
    a.bytes = {10, 0, 0, 9};
    const std::string q = query("web.test");
    const DnsRoute r = fw.route(q, who);
    CHECK(r.asker == who.pid);
    fw.remember(dns::address_answer(q, &a, 60), r.asker);
    const SockAddr dst = *SockAddr::parse_ip("10.0.0.9", 22);
    CHECK(names.lookup(dst, who.pid).name == "web.test");
    CHECK(names.lookup(dst, who.pid).trusted);
    CHECK_FALSE(names.lookup(dst, who.pid + 1).trusted);
}

TEST_CASE_METHOD(Fixture, "--dns-resolver takes proxied queries, not direct ones")
{
    DnsForwarder fw({0, SockAddr::parse_ip("198.51.100.1", 5353), dns::kRcodeNxdomain, false}, slot, nullptr);
    DnsRoute r = fw.route(query("secret.test"), who);
    REQUIRE(r.kind == DnsRoute::Kind::upstream);
    CHECK(r.resolver.to_string() == "198.51.100.1:5353");
    CHECK(fw.route(query("web.test"), who).resolver.to_string() == resolver.to_string());
    CHECK(dns::parse_question(fw.route(query("blocked.test"), who).answer)->rcode == dns::kRcodeNxdomain);
}

TEST_CASE_METHOD(Fixture, "fake mode answers A for proxied names, NODATA for AAAA without IPv6")
{
    FakePool fake("198.18.0.0/15", "fd6b:7470:726f:7879::/64");
    NameMemory names(&fake);
    DnsForwarder fw({0, std::nullopt, dns::kRcodeRefused, false}, slot, &names);

    DnsRoute r = fw.route(query("secret.test"), who);
    REQUIRE(r.kind == DnsRoute::Kind::answered);
    auto a = dns::parse_answer(r.answer);
    REQUIRE(a);
    REQUIRE(a->addresses.size() == 1);
    CHECK(a->addresses[0].bytes[0] == 198);

    r = fw.route(query("secret.test", dns::kTypeAaaa), who);
    REQUIRE(r.kind == DnsRoute::Kind::answered);
    a = dns::parse_answer(r.answer);
    REQUIRE(a);
    CHECK(a->addresses.empty());

    // Direct names and other types keep real DNS.
    CHECK(fw.route(query("web.test"), who).kind == DnsRoute::Kind::direct);
    CHECK(fw.route(query("secret.test", 16), who).kind == DnsRoute::Kind::upstream);
}
