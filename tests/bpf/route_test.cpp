// Rules compiled by the real compiler into the real LPM map, decided by the
// kernel's routing step through BPF_PROG_RUN: first match wins across nested
// prefixes, ports and families, domain rules send to the proxy.
#include "kernel/bpf_maps.h"
#include "kernel/route_compiler.h"
#include "route/rules.h"
#include "base/sock_addr.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "route_case.h"
#include "route_test.skel.h"

using namespace ktp;

namespace {

struct SkelDeleter {
    void operator()(route_test* s) const { route_test__destroy(s); }
};

constexpr int kDirect = 1, kBlock = 0, kProxy = -1;

struct Case {
    const char* ip;
    uint16_t port;
    int verdict;
};

std::vector<int> run_routes(const std::vector<std::string>& rule_texts, uint32_t default_action,
                            const std::vector<Case>& cases)
{
    std::vector<Rule> rules;
    for (const auto& t : rule_texts) {
        auto r = parse_rule(t);
        REQUIRE(std::holds_alternative<Rule>(r));
        rules.push_back(std::get<Rule>(r));
    }
    std::unique_ptr<route_test, SkelDeleter> skel(route_test__open_and_load());
    REQUIRE(skel);
    publish_routes(skel.get(), compile_routes(rules), default_action, "the test");
    REQUIRE(cases.size() <= KTP_MAX_ROUTE_CASES);
    for (size_t i = 0; i < cases.size(); ++i) {
        auto a = SockAddr::parse_ip(cases[i].ip, cases[i].port);
        REQUIRE(a);
        a->to_mapped(skel->bss->ktp_route_cases[i].addr);
        skel->bss->ktp_route_cases[i].port_net = htons(cases[i].port);
    }
    skel->bss->ktp_route_ncases = static_cast<__u32>(cases.size());
    unsigned char pkt[64] = {};
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(pkt), .repeat = 1);
    REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.ktp_test_route), &opts) == 0);
    std::vector<int> out;
    for (size_t i = 0; i < cases.size(); ++i)
        out.push_back(skel->bss->ktp_route_cases[i].verdict);
    return out;
}

void check(const std::vector<std::string>& rules, uint32_t def, const std::vector<Case>& cases)
{
    auto got = run_routes(rules, def, cases);
    for (size_t i = 0; i < cases.size(); ++i) {
        INFO(cases[i].ip << " port " << cases[i].port);
        CHECK(got[i] == cases[i].verdict);
    }
}

}  // namespace

TEST_CASE("no rules: everything goes to the default action")
{
    check({}, KTP_ACT_PROXY, {{"10.1.2.3", 80, kProxy}, {"fd00::1", 443, kProxy}});
    check({}, KTP_ACT_DIRECT, {{"10.1.2.3", 80, kDirect}});
    check({}, KTP_ACT_BLOCK, {{"10.1.2.3", 80, kBlock}});
}

TEST_CASE("first match wins even when a later rule has a longer prefix")
{
    check({"cidr=10.0.0.0/8 block", "cidr=10.1.0.0/16 direct"}, KTP_ACT_PROXY,
          {{"10.1.2.3", 80, kBlock}, {"10.2.0.1", 80, kBlock}, {"11.0.0.1", 80, kProxy}});
    check({"cidr=10.1.0.0/16 direct", "cidr=10.0.0.0/8 block"}, KTP_ACT_PROXY,
          {{"10.1.2.3", 80, kDirect}, {"10.2.0.1", 80, kBlock}});
}

TEST_CASE("ports and port ranges narrow a rule; a non-matching port falls through")
{
    check({"cidr=10.0.0.0/8 port=80 direct", "port=8000-8100 block", "cidr=10.0.0.0/8 proxy=direct"}, KTP_ACT_DIRECT,
          {{"10.0.0.1", 80, kDirect},
           {"10.0.0.1", 81, kProxy},
           {"10.0.0.1", 8050, kBlock},
           {"192.0.2.1", 8000, kBlock},
           {"192.0.2.1", 8100, kBlock},
           {"192.0.2.1", 8101, kDirect}});
}

TEST_CASE("IPv6 prefixes do not match IPv4 destinations and vice versa")
{
    check({"cidr=fd00:201::/64 block", "cidr=10.201.0.0/24 direct"}, KTP_ACT_PROXY,
          {{"fd00:201::2", 80, kBlock}, {"fd00:202::2", 80, kProxy}, {"10.201.0.2", 80, kDirect},
           {"10.202.0.2", 80, kProxy}});
}

TEST_CASE("a rule with a domain sends matching addresses to the proxy, whatever its action")
{
    check({"domain=*.example.com direct", "cidr=10.0.0.0/8 block"}, KTP_ACT_DIRECT,
          {{"10.0.0.1", 443, kProxy}, {"fd00::1", 443, kProxy}});
    check({"cidr=10.0.0.0/8 port=443 domain=a.example block", "cidr=10.0.0.0/8 direct"}, KTP_ACT_PROXY,
          {{"10.0.0.1", 443, kProxy}, {"10.0.0.1", 80, kDirect}});
}

TEST_CASE("host addresses are /32 and /128 prefixes")
{
    check({"cidr=10.201.0.2 block", "cidr=fd00::2 block"}, KTP_ACT_DIRECT,
          {{"10.201.0.2", 80, kBlock}, {"10.201.0.3", 80, kDirect}, {"fd00::2", 1, kBlock}, {"fd00::3", 1, kDirect}});
}
