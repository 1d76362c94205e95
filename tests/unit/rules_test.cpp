// Routing rules: the text syntax, the v4-mapped prefixes the kernel shares,
// and first-match evaluation with and without a sniffed domain.
#include "route/rules.h"

#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <string>
#include <vector>

using namespace ktp;

namespace {

Rule rule(std::string_view text)
{
    auto r = parse_rule(text);
    if (auto* f = std::get_if<ParseFailure>(&r))
        FAIL("unexpected failure: " << f->message);
    return std::get<Rule>(r);
}

std::string rule_err(std::string_view text)
{
    auto r = parse_rule(text);
    auto* f = std::get_if<ParseFailure>(&r);
    REQUIRE(f);
    CHECK(!f->message.empty());
    CHECK(f->message.find('\n') == std::string::npos);
    return f->message;
}

SockAddr ip(const char* s, uint16_t port) { return *SockAddr::parse_ip(s, port); }

DomainPattern pattern(std::string_view text) { return *rule(fmt::format("domain={} direct", text)).domain; }

}  // namespace

TEST_CASE("an IPv4 cidr is stored v4-mapped with 96 added to its prefix")
{
    Rule r = rule("cidr=10.0.0.0/8 direct");
    REQUIRE(r.cidr);
    CHECK(r.cidr->prefix == 104);
    CHECK(r.cidr->addr[0] == 0);
    CHECK(r.cidr->addr[1] == 0);
    CHECK(r.cidr->addr[2] == htonl(0xffff));
    CHECK(r.cidr->addr[3] == htonl(0x0a000000));
    CHECK(to_string(*r.cidr) == "10.0.0.0/8");
}

TEST_CASE("a bare address is a host prefix")
{
    CHECK(rule("cidr=1.2.3.4 block").cidr->prefix == 128);
    CHECK(rule("cidr=fd00::1 block").cidr->prefix == 128);
    CHECK(to_string(*rule("cidr=1.2.3.4 block").cidr) == "1.2.3.4/32");
}

TEST_CASE("an IPv6 cidr is stored as written")
{
    Rule r = rule("cidr=fd00::/8 proxy=corp");
    CHECK(r.cidr->prefix == 8);
    CHECK(r.cidr->addr[0] == htonl(0xfd000000));
    CHECK(to_string(*r.cidr) == "fd00::/8");
}

TEST_CASE("host bits below the prefix are cleared")
{
    CHECK(to_string(*rule("cidr=10.1.2.3/8 direct").cidr) == "10.0.0.0/8");
    CHECK(to_string(*rule("cidr=fd00::1:2/16 direct").cidr) == "fd00::/16");
    CHECK(to_string(*rule("cidr=10.1.2.3/0 direct").cidr) == "0.0.0.0/0");
}

TEST_CASE("bad cidrs are errors naming the text")
{
    CHECK(rule_err("cidr=10.0.0.0/33 direct") == "bad prefix length in '10.0.0.0/33' (0-32 for IPv4)");
    CHECK(rule_err("cidr=fd00::/129 direct") == "bad prefix length in 'fd00::/129' (0-128 for IPv6)");
    for (const char* bad : {"cidr=10.0.0/8 direct", "cidr=example.com direct", "cidr= direct", "cidr=10.0.0.0/ direct",
                            "cidr=10.0.0.0/-1 direct", "cidr=10.0.0.0/8/8 direct", "cidr=[fd00::]/8 direct"})
        CHECK(rule_err(bad).find("'") != std::string::npos);
}

TEST_CASE("ports are one port or an inclusive range")
{
    Rule one = rule("port=443 direct");
    CHECK(one.ports->lo == 443);
    CHECK(one.ports->hi == 443);
    Rule range = rule("port=8000-8100 direct");
    CHECK(range.ports->lo == 8000);
    CHECK(range.ports->hi == 8100);
    CHECK(rule("port=1-65535 direct").ports->hi == 65535);
}

TEST_CASE("bad ports are errors")
{
    CHECK(rule_err("port=8100-8000 direct") == "bad port range '8100-8000': 8100 is above 8000");
    for (const char* bad : {"port=0 direct", "port=65536 direct", "port=http direct", "port= direct", "port=80- direct",
                            "port=-80 direct", "port=80,443 direct", "port=+80 direct"})
        CHECK(rule_err(bad).find("bad port") != std::string::npos);
}

TEST_CASE("domain patterns: exact names and *. for subdomains, lowercased, trailing dot dropped")
{
    DomainPattern exact = pattern("Example.COM.");
    CHECK(exact.name == "example.com");
    CHECK_FALSE(exact.subdomains_only);
    DomainPattern sub = pattern("*.example.com");
    CHECK(sub.name == "example.com");
    CHECK(sub.subdomains_only);
}

TEST_CASE("bad domain patterns are errors")
{
    for (const char* bad : {"domain=* direct", "domain=*. direct", "domain=a.*.com direct", "domain=ex%ample direct",
                            "domain=a..b direct", "domain=.a direct", "domain= direct", "domain=**.a direct",
                            "domain=exa/mple.com direct"})
        CHECK(rule_err(bad).find("bad domain") != std::string::npos);
    CHECK(rule_err("domain=" + std::string(64, 'a') + ".com direct").find("bad domain") != std::string::npos);
}

TEST_CASE("matchers come in any order, separated by any spaces or tabs")
{
    Rule a = rule("cidr=10.0.0.0/8 port=443 domain=*.corp.example proxy=corp");
    Rule b = rule("  domain=*.corp.example\tport=443   cidr=10.0.0.0/8 proxy=corp  ");
    CHECK(b.cidr->prefix == a.cidr->prefix);
    CHECK(b.ports->lo == a.ports->lo);
    CHECK(b.domain->name == a.domain->name);
    CHECK(b.action.upstream == "corp");
    CHECK(b.text == "domain=*.corp.example\tport=443   cidr=10.0.0.0/8 proxy=corp");
}

TEST_CASE("actions: direct, block and proxy=NAME, where proxy=direct goes through ktproxy")
{
    CHECK(rule("any direct").action.kind == ActionKind::direct);
    CHECK(rule("any block").action.kind == ActionKind::block);
    Rule p = rule("any proxy=corp-1");
    CHECK(p.action.kind == ActionKind::proxy);
    CHECK(p.action.upstream == "corp-1");
    Rule d = rule("port=443 proxy=direct");
    CHECK(d.action.kind == ActionKind::proxy);
    CHECK(d.action.upstream == "direct");
    CHECK(to_string(d.action) == "proxy=direct");
}

TEST_CASE("the action must come last and only once")
{
    CHECK(rule_err("direct cidr=10.0.0.0/8").find("must end with its action") != std::string::npos);
    CHECK(rule_err("cidr=10.0.0.0/8 direct block").find("only one action") != std::string::npos);
    CHECK(rule_err("cidr=10.0.0.0/8").find("must end with its action") != std::string::npos);
}

TEST_CASE("a rule without matchers is an error unless written 'any ACTION'")
{
    CHECK(rule_err("direct") == "no matcher (write 'any direct' for a catch-all)");
    Rule any = rule("any proxy=corp");
    CHECK_FALSE(any.cidr);
    CHECK_FALSE(any.ports);
    CHECK_FALSE(any.domain);
    CHECK(rule_err("any port=80 direct").find("'any'") != std::string::npos);
    CHECK(rule_err("any any direct").find("twice") != std::string::npos);
}

TEST_CASE("unknown words, repeated matchers and empty rules are errors")
{
    CHECK(rule_err("host=example.com direct") ==
          "unknown matcher 'host=example.com' (use cidr=, port=, domain= or any)");
    CHECK(rule_err("cidr direct").find("unknown matcher") != std::string::npos);
    CHECK(rule_err("port=80 port=443 direct") == "'port' is given twice");
    CHECK(rule_err("cidr=1.2.3.4 cidr=1.2.3.5 direct").find("twice") != std::string::npos);
    CHECK(rule_err("domain=a.com domain=b.com direct").find("twice") != std::string::npos);
    CHECK(rule_err("").find("empty rule") != std::string::npos);
    CHECK(rule_err(" \t ").find("empty rule") != std::string::npos);
    CHECK(rule_err("any proxy=").find("bad upstream name") != std::string::npos);
    CHECK(rule_err("any proxy=a/b").find("bad upstream name") != std::string::npos);
    CHECK(rule_err("any reject").find("must end with its action") != std::string::npos);
}

TEST_CASE("parse_action reads the --default flag")
{
    CHECK(std::get<Action>(parse_action("direct")).kind == ActionKind::direct);
    CHECK(std::get<Action>(parse_action("block")).kind == ActionKind::block);
    CHECK(std::get<Action>(parse_action("proxy=corp")).upstream == "corp");
    auto bad = parse_action("proxy");
    REQUIRE(std::holds_alternative<ParseFailure>(bad));
    CHECK(std::get<ParseFailure>(bad).message == "unknown action 'proxy' (use direct, block or proxy=NAME)");
}

TEST_CASE("cidr matching covers exactly the prefix, per family")
{
    Rule v4 = rule("cidr=10.0.0.0/8 direct");
    CHECK(matches_address(v4, ip("10.255.1.1", 80)));
    CHECK_FALSE(matches_address(v4, ip("11.0.0.1", 80)));
    CHECK_FALSE(matches_address(v4, ip("fd00::1", 80)));
    CHECK(matches_address(v4, ip("::ffff:10.0.0.1", 80)));  // a v4-mapped destination is IPv4

    Rule v6 = rule("cidr=fd00::/8 direct");
    CHECK(matches_address(v6, ip("fdff::1", 80)));
    CHECK_FALSE(matches_address(v6, ip("fe80::1", 80)));
    CHECK_FALSE(matches_address(v6, ip("10.0.0.1", 80)));

    Rule host = rule("cidr=1.2.3.4 direct");
    CHECK(matches_address(host, ip("1.2.3.4", 1)));
    CHECK_FALSE(matches_address(host, ip("1.2.3.5", 1)));
}

TEST_CASE("0.0.0.0/0 covers all of IPv4 and none of IPv6; ::/0 covers both")
{
    Rule all4 = rule("cidr=0.0.0.0/0 direct");
    CHECK(matches_address(all4, ip("203.0.113.9", 1)));
    CHECK_FALSE(matches_address(all4, ip("2001:db8::1", 1)));
    Rule all6 = rule("cidr=::/0 direct");
    CHECK(matches_address(all6, ip("2001:db8::1", 1)));
    CHECK(matches_address(all6, ip("203.0.113.9", 1)));
}

TEST_CASE("port matching is inclusive at both ends and combines with cidr")
{
    Rule r = rule("cidr=10.0.0.0/8 port=8000-8100 direct");
    CHECK(matches_address(r, ip("10.0.0.1", 8000)));
    CHECK(matches_address(r, ip("10.0.0.1", 8100)));
    CHECK_FALSE(matches_address(r, ip("10.0.0.1", 7999)));
    CHECK_FALSE(matches_address(r, ip("10.0.0.1", 8101)));
    CHECK_FALSE(matches_address(r, ip("11.0.0.1", 8050)));
}

TEST_CASE("an empty destination matches no cidr rule")
{
    CHECK_FALSE(matches_address(rule("cidr=::/0 direct"), SockAddr{}));
}

TEST_CASE("exact domain patterns match the name only, case-insensitively, ignoring a trailing dot")
{
    DomainPattern p = pattern("example.com");
    CHECK(matches_domain(p, "example.com"));
    CHECK(matches_domain(p, "EXAMPLE.com."));
    CHECK_FALSE(matches_domain(p, "www.example.com"));
    CHECK_FALSE(matches_domain(p, "example.co"));
    CHECK_FALSE(matches_domain(p, ""));
}

TEST_CASE("*.example.com matches any subdomain but not example.com itself")
{
    DomainPattern p = pattern("*.example.com");
    CHECK(matches_domain(p, "www.example.com"));
    CHECK(matches_domain(p, "a.b.c.Example.Com."));
    CHECK_FALSE(matches_domain(p, "example.com"));
    CHECK_FALSE(matches_domain(p, "badexample.com"));
    CHECK_FALSE(matches_domain(p, ".example.com"));
    CHECK_FALSE(matches_domain(p, "example.com.evil"));
    CHECK_FALSE(matches_domain(p, "com"));
}

TEST_CASE("first_match returns the first rule in order whose matchers all match")
{
    std::vector<Rule> rules = {rule("cidr=10.0.0.0/8 port=22 block"), rule("cidr=10.0.0.0/8 proxy=corp"),
                               rule("any direct")};
    CHECK(first_match(rules, ip("10.0.0.1", 22), "") == &rules[0]);
    CHECK(first_match(rules, ip("10.0.0.1", 443), "") == &rules[1]);
    CHECK(first_match(rules, ip("192.0.2.1", 22), "") == &rules[2]);
    std::vector<Rule> none = {rule("port=22 block")};
    CHECK(first_match(none, ip("10.0.0.1", 80), "") == nullptr);
}

TEST_CASE("a domain rule matches only when the domain is known and matches")
{
    std::vector<Rule> rules = {rule("domain=*.corp.example port=443 proxy=corp"), rule("any direct")};
    SockAddr dst = ip("10.0.0.1", 443);
    CHECK(first_match(rules, dst, "") == &rules[1]);
    CHECK(first_match(rules, dst, "git.corp.example") == &rules[0]);
    CHECK(first_match(rules, dst, "example.org") == &rules[1]);
    CHECK(first_match(rules, ip("10.0.0.1", 80), "git.corp.example") == &rules[1]);
}

TEST_CASE("CR, LF and tabs separate words like spaces")
{
    Rule r = rule("port=53\tblock\r\n");
    CHECK(r.ports->lo == 53);
    CHECK(r.text == "port=53\tblock");
}

TEST_CASE("the rule text is kept, trimmed, for messages")
{
    CHECK(rule("  port=53  block \t").text == "port=53  block");
}
