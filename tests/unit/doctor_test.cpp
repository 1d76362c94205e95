// `ktproxy doctor`: its command line, its report in text and JSON, its exit status.
#include "config/options.h"
#include "daemon/doctor.h"

#include <catch2/catch.hpp>

#include <vector>

using namespace ktp;

static ParseResult parse(std::vector<const char*> args, Options& o)
{
    args.insert(args.begin(), "ktproxy");
    return parse_command_line(static_cast<int>(args.size()), args.data(), o);
}

TEST_CASE("doctor takes the flags of the run it checks")
{
    Options o;
    auto r = parse({"doctor", "--cgroup", "app", "--gateway-iface", "br0", "--gateway-iface", "eth1", "--max-conns",
                    "2048", "--mark", "0x10", "--fail-closed", "--json"},
                   o);
    REQUIRE(r.run);
    CHECK(o.command == Command::doctor);
    CHECK(o.cgroup == "app");
    CHECK(o.gateway_ifaces == std::vector<std::string>{"br0", "eth1"});
    CHECK(o.max_conns == 2048);
    CHECK(o.mark == 0x10);
    CHECK(o.fail_closed);
    CHECK(o.doctor_json);
}

TEST_CASE("doctor: bad usage is exit 2 with one line")
{
    for (auto args : {std::vector<const char*>{"doctor", "--bogus"}, {"doctor", "--max-conns", "5"},
                      {"doctor", "--mark", "0"}, {"doctor", "--gateway-mark", "0x6b74"}}) {
        Options o;
        auto r = parse(args, o);
        CHECK_FALSE(r.run);
        CHECK(r.exit_code == 2);
        CHECK(r.message.find('\n') == std::string::npos);
    }
}

TEST_CASE("--list-flags lists every command's flags, marking those that take a value")
{
    Options o;
    auto r = parse({"--list-flags"}, o);
    CHECK_FALSE(r.run);
    CHECK(r.exit_code == 0);
    for (const char* line : {"ktproxy --cgroup=\n", "ktproxy --fail-closed\n", "run --user=\n", "status --json\n",
                             "cleanup --help\n", "doctor --json\n", "doctor --gateway-iface=\n"})
        CHECK(r.message.find(line) != std::string::npos);
    CHECK(r.message.find("cleanup --json") == std::string::npos);
}

TEST_CASE("doctor's report: verdicts, fixes only when not ok, exit 1 only on a failure")
{
    std::vector<CheckResult> checks{
        {"kernel", CheckStatus::ok, "Linux 6.1 (>= 5.19)", "never shown"},
        {"open-files", CheckStatus::warn, "RLIMIT_NOFILE reaches only 1024", "raise it"},
    };
    CHECK(doctor_exit_code(checks) == 0);
    std::string text = render_doctor_text(checks);
    CHECK(text.find("ok    kernel     Linux 6.1 (>= 5.19)\n") != std::string::npos);
    CHECK(text.find("never shown") == std::string::npos);
    CHECK(text.find("fix: raise it\n") != std::string::npos);
    CHECK(text.find("all checks passed (1 warning(s))") != std::string::npos);

    checks.push_back({"io-uring", CheckStatus::fail, "io_uring_setup: \"denied\"", "sysctl -w x=0"});
    CHECK(doctor_exit_code(checks) == 1);
    std::string json = render_doctor_json(checks);
    CHECK(json.rfind("{\"ok\":false,\"failures\":1,\"warnings\":1,\"checks\":[", 0) == 0);
    CHECK(json.find("{\"name\":\"kernel\",\"status\":\"ok\",\"verdict\":\"Linux 6.1 (>= 5.19)\",\"fix\":\"\"}") !=
          std::string::npos);
    CHECK(json.find("\"verdict\":\"io_uring_setup: \\\"denied\\\"\",\"fix\":\"sysctl -w x=0\"") != std::string::npos);
    CHECK(render_doctor_text(checks).find("1 check(s) failed") != std::string::npos);
}
