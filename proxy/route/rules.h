// Routing rules: one line of text each, e.g.
//   cidr=10.0.0.0/8 port=443 domain=*.corp.example proxy=corp
//   any direct
// Matchers (cidr=, port=, domain=) in any order, the action last. A rule
// matches when all its matchers do; the first matching rule wins.
#pragma once

#include "base/result.h"
#include "base/sock_addr.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktp {

// A prefix in the v4-mapped IPv6 space that the kernel's LPM trie uses, so
// one key type serves both families: IPv4 a.b.c.d/n is ::ffff:a.b.c.d/(96+n).
struct Cidr {
    uint32_t addr[4];  // network order; host bits below the prefix are zero
    uint8_t prefix;    // 0..128
};

struct PortRange {
    uint16_t lo, hi;  // inclusive, 1..65535
};

struct DomainPattern {
    std::string name;       // lowercase, no trailing dot, no "*."
    bool subdomains_only;   // "*.example.com": any subdomain, not example.com itself
};

enum class ActionKind { direct, block, proxy };

struct Action {
    ActionKind kind = ActionKind::direct;
    // For proxy: the upstream's name; "direct" = through ktproxy straight to
    // the original destination (so domain rules can still apply).
    std::string upstream;
};

struct Rule {
    std::optional<Cidr> cidr;
    std::optional<PortRange> ports;
    std::optional<DomainPattern> domain;
    Action action;
    std::string text;  // as written, whitespace-trimmed, for messages
};

Result<Rule> parse_rule(std::string_view text);
// "direct", "block" or "proxy=NAME" (the --default flag).
Result<Action> parse_action(std::string_view text);
Result<Cidr> parse_cidr(std::string_view text);

// The cidr and port matchers only (what the kernel can decide alone).
bool matches_address(const Rule& r, const SockAddr& dst);
// Case-insensitive; one trailing dot on host is ignored.
bool matches_domain(const DomainPattern& p, std::string_view host);
// A rule with a domain matcher matches only when the domain is known (not
// empty) and matches. nullptr when no rule matches (use the default).
const Rule* first_match(const std::vector<Rule>& rules, const SockAddr& dst, std::string_view domain_or_empty);

std::string to_string(const Cidr& c);  // "10.0.0.0/8", "fd00::/8"
std::string to_string(const Action& a);

}  // namespace ktp
