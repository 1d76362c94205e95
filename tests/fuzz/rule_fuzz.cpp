// Fuzzes rule and action parsing. A parsed rule must be well-formed, parse
// again from its own text to the same rule, and match consistently.
#include "route/rules.h"
#include "fuzz_check.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace ktp;
using ktp::fuzz::check;

namespace {

bool same(const Rule& a, const Rule& b)
{
    if (a.cidr.has_value() != b.cidr.has_value() || a.ports.has_value() != b.ports.has_value() ||
        a.domain.has_value() != b.domain.has_value())
        return false;
    if (a.cidr && (a.cidr->prefix != b.cidr->prefix || std::memcmp(a.cidr->addr, b.cidr->addr, 16) != 0))
        return false;
    if (a.ports && (a.ports->lo != b.ports->lo || a.ports->hi != b.ports->hi))
        return false;
    if (a.domain && (a.domain->name != b.domain->name || a.domain->subdomains_only != b.domain->subdomains_only))
        return false;
    return a.action.kind == b.action.kind && a.action.upstream == b.action.upstream;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view text(reinterpret_cast<const char*>(data), size);

    auto action = parse_action(text);
    if (auto* a = std::get_if<Action>(&action))
        check((a->kind == ActionKind::proxy) == !a->upstream.empty());
    else
        check(!std::get<ParseFailure>(action).message.empty());

    auto parsed = parse_rule(text);
    if (auto* f = std::get_if<ParseFailure>(&parsed)) {
        check(!f->message.empty());
        return 0;
    }
    const Rule& r = std::get<Rule>(parsed);
    check(!r.text.empty());
    if (r.cidr)
        check(r.cidr->prefix <= 128);
    if (r.ports)
        check(r.ports->lo >= 1 && r.ports->lo <= r.ports->hi);
    if (r.domain)
        check(!r.domain->name.empty() && r.domain->name.size() <= 253 && r.domain->name.back() != '.');
    check((r.action.kind == ActionKind::proxy) == !r.action.upstream.empty());

    auto again = parse_rule(r.text);
    check(std::holds_alternative<Rule>(again) && same(r, std::get<Rule>(again)));

    std::vector<Rule> rules{r};
    for (const char* ip : {"10.0.0.1", "0.0.0.0", "255.255.255.255", "fd00::1", "::", "::ffff:10.0.0.1"}) {
        for (uint16_t port : {1, 80, 443, 65535}) {
            SockAddr dst = *SockAddr::parse_ip(ip, port);
            bool addr = matches_address(r, dst);
            for (std::string_view d : {"", "example.com", "a.example.com"}) {
                bool expect = addr && (!r.domain || (!d.empty() && matches_domain(*r.domain, d)));
                check((first_match(rules, dst, d) == &rules[0]) == expect);
            }
        }
    }
    if (r.domain) {
        check(matches_domain(*r.domain, r.domain->name) == !r.domain->subdomains_only);
        check(matches_domain(*r.domain, "x." + r.domain->name) == r.domain->subdomains_only);
    }
    return 0;
}
