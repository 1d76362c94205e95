// The dry run's event lines: every field an operator rolls rules out with,
// and the rate limit that keeps a busy cgroup from flooding the log.
#include "ops/dry_run_log.h"

#include "base/log.h"

#include <arpa/inet.h>
#include <catch2/catch.hpp>

#include <cstring>

using namespace ktp;

namespace {

ktp_dry_event event(uint16_t rule, uint8_t action, uint8_t would)
{
    ktp_dry_event ev{};
    ev.cgroup_id = 4242;
    ev.pid = 100;
    ev.tid = 101;
    ev.uid = 1000;
    ev.addr[2] = htonl(0xffff);
    ev.addr[3] = htonl(0x0ac90002);  // 10.201.0.2
    ev.port = htons(443);
    ev.family = KTP_AF_INET;
    ev.rule = rule;
    ev.action = action;
    ev.would = would;
    std::strcpy(ev.comm, "curl");
    return ev;
}

}  // namespace

TEST_CASE("a dry-run event line names the process, the destination, the rule and what would have happened")
{
    std::vector<Rule> rules;
    rules.push_back(std::get<Rule>(parse_rule("port=9000 block")));
    rules.push_back(std::get<Rule>(parse_rule("port=443 proxy=direct")));
    CHECK(format_dry_event_text(event(1, KTP_ACT_PROXY, KTP_WOULD_REDIRECT), &rules) ==
          "would=redirect dst=10.201.0.2:443 rule=2 action=proxy pid=100 tid=101 uid=1000 comm=curl cgroup=4242 "
          "rule_text=\"port=443 proxy=direct\"");
    CHECK(format_dry_event_text(event(KTP_RULE_DEFAULT, KTP_ACT_DIRECT, KTP_WOULD_PASS), &rules) ==
          "would=pass dst=10.201.0.2:443 rule=default action=direct pid=100 tid=101 uid=1000 comm=curl cgroup=4242");
    // Rules reloaded since: the index is kept, the text is not guessed.
    CHECK(format_dry_event_text(event(7, KTP_ACT_BLOCK, KTP_WOULD_BLOCK), &rules).find("rule=8 action=block") !=
          std::string::npos);
    CHECK(format_dry_event_json(event(0, KTP_ACT_BLOCK, KTP_WOULD_BLOCK), &rules) ==
          "\"would\":\"block\",\"dst\":\"10.201.0.2:443\",\"rule\":1,\"action\":\"block\",\"rule_text\":\"port=9000 "
          "block\",\"pid\":100,\"tid\":101,\"uid\":1000,\"comm\":\"curl\",\"cgroup\":4242");
    // A comm with a space or quote stays one token.
    ktp_dry_event odd = event(KTP_RULE_DEFAULT, KTP_ACT_PROXY, KTP_WOULD_REFUSE);
    std::strcpy(odd.comm, "a b\"c");
    CHECK(format_dry_event_text(odd, nullptr).find(" comm=a?b?c ") != std::string::npos);
}

TEST_CASE("the dry-run log counts what its rate limit leaves out")
{
    log::set_level(log::Level::error);  // keep the test's output clean; counting does not depend on it
    DryRunLog dl(3);
    auto t0 = DryRunLog::Clock::now();
    for (int i = 0; i < 5; ++i)
        dl.on_event(event(0, KTP_ACT_BLOCK, KTP_WOULD_BLOCK), nullptr, t0);
    CHECK(dl.events() == 5);
    CHECK(dl.unlogged() == 2);
    CHECK(dl.pending());
    // The next second: the summary is written and the budget is back.
    dl.tick(t0 + std::chrono::milliseconds(1001), 0);
    CHECK_FALSE(dl.pending());
    for (int i = 0; i < 3; ++i)
        dl.on_event(event(0, KTP_ACT_BLOCK, KTP_WOULD_BLOCK), nullptr, t0 + std::chrono::milliseconds(1002));
    CHECK(dl.unlogged() == 2);
    log::set_level(log::Level::info);
}
