// Command-line parsing: defaults, values, and one-line errors for bad input.
#include "config/options.h"

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <utility>
#include <vector>

using namespace ktp;

static ParseResult parse(std::vector<const char*> args, Options& o)
{
    args.insert(args.begin(), "ktproxy");
    return parse_command_line(static_cast<int>(args.size()), args.data(), o);
}

static bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == std::string::npos; }

TEST_CASE("--cgroup alone runs with the documented defaults")
{
    Options o;
    auto r = parse({"--cgroup", "/sys/fs/cgroup/app"}, o);
    REQUIRE(r.run);
    CHECK(o.cgroup == "/sys/fs/cgroup/app");
    CHECK(o.listen4 == "127.0.0.1");
    CHECK(o.listen6 == "::1");
    CHECK(o.port == 0);
    CHECK(o.mark == 0x6b74);
    CHECK(o.log_level == log::Level::info);
}

TEST_CASE("every flag takes its value")
{
    Options o;
    auto r = parse({"--cgroup", "app", "--port", "15001", "--mark", "0x100", "--listen4", "127.0.0.2",
                    "--listen6", "", "--log-level", "debug", "--connect-timeout", "2.5"},
                   o);
    REQUIRE(r.run);
    CHECK(o.port == 15001);
    CHECK(o.mark == 0x100);
    CHECK(o.listen4 == "127.0.0.2");
    CHECK(o.listen6.empty());
    CHECK(o.log_level == log::Level::debug);
    CHECK(o.connect_timeout == Approx(2.5));
}

TEST_CASE("bad input gives one line and a non-zero exit")
{
    Options o;
    std::vector<std::vector<const char*>> bad = {
        {},                                           // --cgroup missing
        {"--cgroup", "x", "--bogus"},                 // unknown flag
        {"--cgroup", "x", "--port", "70000"},         // out of range
        {"--cgroup", "x", "--port", "http"},          // not a number
        {"--cgroup", "x", "--log-level", "loud"},     // not a level
        {"--cgroup", "x", "--listen4", "::1"},        // wrong family
        {"--cgroup", "x", "--listen6", "10.0.0.1"},   // wrong family
        {"--cgroup", "x", "--listen4", "localhost"},  // names are not resolved
        {"--cgroup", "x", "--mark", "0"},             // every socket has mark 0
        {"--cgroup", "x", "--connect-timeout", "0"},
        {"--cgroup", "x", "stray"},
    };
    for (auto& args : bad) {
        Options fresh;
        auto r = parse(args, fresh);
        INFO("args: " << (args.empty() ? "(none)" : args.back()) << " -> " << r.message);
        CHECK_FALSE(r.run);
        CHECK(r.exit_code != 0);
        CHECK(one_line(r.message));
    }
}

TEST_CASE("--help prints usage and exits 0")
{
    Options o;
    auto r = parse({"--help"}, o);
    CHECK_FALSE(r.run);
    CHECK(r.exit_code == 0);
    CHECK(r.message.find("--cgroup") != std::string::npos);
}

TEST_CASE("listen addresses no connection can be made to and accepted on are refused")
{
    // The hooks rewrite connects to the listener and ktproxy asks for the
    // destination of sockets whose local end is that address: with any of
    // these, ktproxy said ready and reset every connection.
    std::vector<std::pair<const char*, const char*>> bad = {
        {"--listen4", "0.0.0.0"},         {"--listen4", "224.0.0.1"},      {"--listen4", "239.255.255.250"},
        {"--listen4", "255.255.255.255"}, {"--listen6", "::"},             {"--listen6", "ff02::1"},
        {"--listen6", "ff05::2"},         {"--listen6", "::ffff:127.0.0.1"},
    };
    for (auto [flag, addr] : bad) {
        Options o;
        auto r = parse({"--cgroup", "x", flag, addr}, o);
        INFO(flag << " " << addr << " -> " << r.message);
        CHECK_FALSE(r.run);
        CHECK(r.exit_code == 2);
        CHECK(one_line(r.message));
        CHECK(r.message.find(flag) != std::string::npos);
    }
    for (auto [flag, addr] : std::vector<std::pair<const char*, const char*>>{
             {"--listen4", "127.0.0.2"}, {"--listen4", "10.0.0.1"}, {"--listen6", "fd00::1"}, {"--listen6", "::1"}}) {
        Options o;
        INFO(flag << " " << addr);
        CHECK(parse({"--cgroup", "x", flag, addr}, o).run);
    }
}

TEST_CASE("--cgroup-match alone hooks the patterns' literal parent; --egress takes container or host")
{
    Options o;
    auto r = parse({"--cgroup-match", "system.slice/docker-*.scope", "--cgroup-match", "system.slice/libpod-*.scope",
                    "--egress", "host"},
                   o);
    REQUIRE(r.run);
    CHECK(o.cgroup == "system.slice");
    CHECK(o.cgroup_match.size() == 2);
    CHECK(o.egress == "host");
    Options bad;
    auto b = parse({"--cgroup-match", "*.scope"}, bad);
    CHECK_FALSE(b.run);
    CHECK(b.exit_code == 2);
    Options d;
    REQUIRE(parse({"--cgroup", "app"}, d).run);
    CHECK(d.egress == "container");
    CHECK(d.cgroup_match.empty());
}

TEST_CASE("--dry-run is refused where forwarded traffic would still be proxied for real")
{
    // The gateway's TC program has no dry run: beside --cgroup it would go on
    // redirecting and blocking forwarded connections while the log says "dry run".
    for (std::vector<const char*> args : {std::vector<const char*>{"--gateway-iface", "br0", "--dry-run"},
                                          std::vector<const char*>{"--cgroup", "app", "--gateway-iface", "br0",
                                                                   "--dry-run"}}) {
        Options o;
        auto r = parse(args, o);
        INFO(r.message);
        CHECK_FALSE(r.run);
        CHECK(r.exit_code == 2);
        CHECK(one_line(r.message));
        CHECK(r.message.find("--dry-run") != std::string::npos);
        CHECK(r.message.find("--gateway-iface") != std::string::npos);
    }
    Options o;
    CHECK(parse({"--cgroup", "app", "--dry-run"}, o).run);
}

TEST_CASE("UDP and DNS are intercepted by default; --no-udp turns them off, --udp is accepted")
{
    // Off by default, `run --default proxy=s` would send every DNS query out
    // directly (issue 13's first user story).
    // The last one given wins, as for any flag said twice.
    const std::pair<std::vector<const char*>, bool> cases[] = {
        {{"--cgroup", "app"}, true},
        {{"--cgroup", "app", "--no-udp"}, false},
        {{"--cgroup", "app", "--udp"}, true},
        {{"run", "--no-udp", "--", "true"}, false},
        {{"run", "--", "true"}, true},
        {{"--cgroup", "app", "--udp", "--no-udp"}, false},
        {{"--cgroup", "app", "--no-udp", "--udp"}, true},
    };
    for (const auto& [args, udp] : cases) {
        Options o;
        INFO(fmt::format("{}", fmt::join(args, " ")));
        REQUIRE(parse(args, o).run);
        CHECK(o.udp == udp);
    }
    Options bad;
    auto r = parse({"--cgroup", "app", "--no-udp=maybe"}, bad);
    CHECK_FALSE(r.run);
    CHECK(r.exit_code != 0);
}
