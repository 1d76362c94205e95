// Rule parsing and matching in user space. The kernel applies the cidr and
// port parts of the same rules (route_compiler.cpp); domains are only known
// here, after sniffing the client's first bytes.
#include "route/rules.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace ktp {

namespace {

std::string lower(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// Any ASCII whitespace separates words, so rules read from a file with CRLF
// line endings or tabs parse the same as rules given as flags.
bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

std::vector<std::string_view> split_words(std::string_view s)
{
    std::vector<std::string_view> words;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && is_space(s[i]))
            ++i;
        size_t start = i;
        while (i < s.size() && !is_space(s[i]))
            ++i;
        if (i > start)
            words.push_back(s.substr(start, i - start));
    }
    return words;
}

std::string_view trim(std::string_view s)
{
    while (!s.empty() && is_space(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && is_space(s.back()))
        s.remove_suffix(1);
    return s;
}

// Decimal digits only (no sign, no spaces) that fit in `max`.
std::optional<unsigned> parse_uint(std::string_view s, unsigned max)
{
    if (s.empty() || s.size() > 10 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    unsigned long v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    if (v > max)
        return std::nullopt;
    return static_cast<unsigned>(v);
}

// Zero the host bits so equal prefixes compare equal (the kernel's trie
// masks too; this keeps printing and comparisons honest).
void mask(Cidr& c)
{
    for (int w = 0; w < 4; ++w) {
        int bits = std::clamp(static_cast<int>(c.prefix) - 32 * w, 0, 32);
        uint32_t m = bits == 0 ? 0 : bits == 32 ? 0xffffffffu : ~((1u << (32 - bits)) - 1);
        c.addr[w] = htonl(ntohl(c.addr[w]) & m);
    }
}

bool valid_name_char(char c)
{
    auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) || c == '-' || c == '_';
}

// A DNS name: labels of 1..63 letters, digits, '-' or '_', at most 253 bytes.
bool valid_dns_name(std::string_view s)
{
    if (s.empty() || s.size() > 253)
        return false;
    size_t label = 0;
    for (char c : s) {
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (valid_name_char(c)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

Result<PortRange> parse_ports(std::string_view s)
{
    auto bad = [&] {
        return ParseFailure{fmt::format("bad port '{}' (expected PORT or LO-HI, 1-65535)", s)};
    };
    size_t dash = s.find('-');
    auto lo = parse_uint(s.substr(0, dash), 65535);
    auto hi = dash == std::string_view::npos ? lo : parse_uint(s.substr(dash + 1), 65535);
    if (!lo || !hi || *lo == 0 || *hi == 0)
        return bad();
    if (*lo > *hi)
        return ParseFailure{fmt::format("bad port range '{}': {} is above {}", s, *lo, *hi)};
    return PortRange{static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi)};
}

Result<DomainPattern> parse_domain(std::string_view s)
{
    DomainPattern p{lower(s), false};
    if (p.name.size() >= 2 && p.name.compare(0, 2, "*.") == 0) {
        p.subdomains_only = true;
        p.name.erase(0, 2);
    }
    if (!p.name.empty() && p.name.back() == '.')
        p.name.pop_back();
    if (!valid_dns_name(p.name))
        return ParseFailure{fmt::format(
            "bad domain '{}' (expected a name like example.com, or *.example.com for its subdomains)", s)};
    return p;
}

bool is_action_word(std::string_view w)
{
    return w == "direct" || w == "block" || w.substr(0, 6) == "proxy=";
}

}  // namespace

Result<Cidr> parse_cidr(std::string_view s)
{
    auto bad = [&] {
        return ParseFailure{fmt::format("bad cidr '{}' (expected ADDR or ADDR/LEN, e.g. 10.0.0.0/8 or fd00::/8)", s)};
    };
    size_t slash = s.find('/');
    std::string ip(s.substr(0, slash));
    Cidr c{};
    unsigned max = 0, base = 0;
    in_addr a4{};
    in6_addr a6{};
    if (inet_pton(AF_INET, ip.c_str(), &a4) == 1) {
        c.addr[2] = htonl(0xffff);
        c.addr[3] = a4.s_addr;
        max = 32;
        base = 96;
    } else if (inet_pton(AF_INET6, ip.c_str(), &a6) == 1) {
        std::memcpy(c.addr, &a6, sizeof(c.addr));
        max = 128;
    } else {
        return bad();
    }
    unsigned len = max;
    if (slash != std::string_view::npos) {
        auto l = parse_uint(s.substr(slash + 1), max);
        if (!l)
            return ParseFailure{fmt::format("bad prefix length in '{}' (0-{} for {})", s, max,
                                            max == 32 ? "IPv4" : "IPv6")};
        len = *l;
    }
    c.prefix = static_cast<uint8_t>(base + len);
    mask(c);
    return c;
}

Result<Action> parse_action(std::string_view text)
{
    std::string_view s = trim(text);
    if (s == "direct")
        return Action{ActionKind::direct, ""};
    if (s == "block")
        return Action{ActionKind::block, ""};
    if (s.substr(0, 6) == "proxy=") {
        std::string_view name = s.substr(6);
        if (name.empty() || name.size() > 64 ||
            !std::all_of(name.begin(), name.end(), [](char c) { return valid_name_char(c) || c == '.'; }))
            return ParseFailure{fmt::format(
                "bad upstream name '{}' in '{}' (letters, digits, '-', '_', '.'; at most 64)", name, s)};
        return Action{ActionKind::proxy, std::string(name)};
    }
    return ParseFailure{fmt::format("unknown action '{}' (use direct, block or proxy=NAME)", s)};
}

Result<Rule> parse_rule(std::string_view text)
{
    Rule r;
    r.text = std::string(trim(text));
    std::vector<std::string_view> words = split_words(text);
    if (words.empty())
        return ParseFailure{"empty rule (expected e.g. 'cidr=10.0.0.0/8 proxy=corp' or 'any direct')"};

    std::string_view last = words.back();
    if (!is_action_word(last))
        return ParseFailure{fmt::format("the rule must end with its action (direct, block or proxy=NAME), not '{}'",
                                        last)};
    auto action = parse_action(last);
    if (auto* f = std::get_if<ParseFailure>(&action))
        return *f;
    r.action = std::get<Action>(action);

    bool any = false;
    for (size_t i = 0; i + 1 < words.size(); ++i) {
        std::string_view w = words[i];
        size_t eq = w.find('=');
        std::string_view key = w.substr(0, eq);
        std::string_view value = eq == std::string_view::npos ? std::string_view{} : w.substr(eq + 1);
        auto dup = [&] { return ParseFailure{fmt::format("'{}' is given twice", key)}; };
        if (w == "any") {
            if (any)
                return dup();
            any = true;
        } else if (is_action_word(w)) {
            return ParseFailure{fmt::format("only one action, at the end ('{}' comes before '{}')", w, last)};
        } else if (eq != std::string_view::npos && key == "cidr") {
            if (r.cidr)
                return dup();
            auto c = parse_cidr(value);
            if (auto* f = std::get_if<ParseFailure>(&c))
                return *f;
            r.cidr = std::get<Cidr>(c);
        } else if (eq != std::string_view::npos && key == "port") {
            if (r.ports)
                return dup();
            auto p = parse_ports(value);
            if (auto* f = std::get_if<ParseFailure>(&p))
                return *f;
            r.ports = std::get<PortRange>(p);
        } else if (eq != std::string_view::npos && key == "domain") {
            if (r.domain)
                return dup();
            auto d = parse_domain(value);
            if (auto* f = std::get_if<ParseFailure>(&d))
                return *f;
            r.domain = std::get<DomainPattern>(d);
        } else {
            return ParseFailure{fmt::format("unknown matcher '{}' (use cidr=, port=, domain= or any)", w)};
        }
    }
    bool matchers = r.cidr || r.ports || r.domain;
    if (any && matchers)
        return ParseFailure{"'any' matches everything: drop it or the other matchers"};
    // A bare action as a rule is more likely a mistake than a catch-all.
    if (!any && !matchers)
        return ParseFailure{fmt::format("no matcher (write 'any {}' for a catch-all)", last)};
    return r;
}

bool matches_address(const Rule& r, const SockAddr& dst)
{
    if (r.ports) {
        uint16_t p = dst.port();
        if (p < r.ports->lo || p > r.ports->hi)
            return false;
    }
    if (r.cidr) {
        if (dst.family() != AF_INET && dst.family() != AF_INET6)
            return false;
        Cidr d{};
        dst.to_mapped(d.addr);
        d.prefix = r.cidr->prefix;
        mask(d);
        if (std::memcmp(d.addr, r.cidr->addr, sizeof(d.addr)) != 0)
            return false;
    }
    return true;
}

bool matches_domain(const DomainPattern& p, std::string_view host)
{
    if (!host.empty() && host.back() == '.')
        host.remove_suffix(1);
    auto eq = [](std::string_view a, std::string_view b) {
        return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
                   return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
               });
    };
    if (!p.subdomains_only)
        return eq(host, p.name);
    // "a.example.com" for "*.example.com": longer, and ".example.com" at the end.
    if (host.size() < p.name.size() + 2)
        return false;
    size_t dot = host.size() - p.name.size() - 1;
    return host[dot] == '.' && eq(host.substr(dot + 1), p.name);
}

const Rule* first_match(const std::vector<Rule>& rules, const SockAddr& dst, std::string_view domain_or_empty)
{
    for (const Rule& r : rules) {
        if (!matches_address(r, dst))
            continue;
        if (r.domain && (domain_or_empty.empty() || !matches_domain(*r.domain, domain_or_empty)))
            continue;
        return &r;
    }
    return nullptr;
}

std::string to_string(const Cidr& c)
{
    char buf[INET6_ADDRSTRLEN] = "?";
    bool v4 = c.prefix >= 96 && c.addr[0] == 0 && c.addr[1] == 0 && c.addr[2] == htonl(0xffff);
    if (v4) {
        inet_ntop(AF_INET, &c.addr[3], buf, sizeof(buf));
        return fmt::format("{}/{}", buf, c.prefix - 96);
    }
    inet_ntop(AF_INET6, c.addr, buf, sizeof(buf));
    return fmt::format("{}/{}", buf, c.prefix);
}

std::string to_string(const Action& a)
{
    switch (a.kind) {
    case ActionKind::direct: return "direct";
    case ActionKind::block: return "block";
    case ActionKind::proxy: return "proxy=" + a.upstream;
    }
    return "?";
}

}  // namespace ktp
