// `ktproxy status --watch`: samples in, rates and views out.
#include "ops/watch.h"

#include <catch2/catch.hpp>

using namespace ktp;

namespace {

WorkerSnapshot sample(uint64_t a_c2s, uint64_t b_s2c)
{
    WorkerSnapshot s;
    ConnInfo a{"127.0.0.1:1000", "10.0.0.1:80", "direct", "", a_c2s, 0, 1.0, 42, 1000, "curl"};
    ConnInfo b{"127.0.0.1:2000", "10.0.0.2:443", "corp", "", 0, b_s2c, 1.0, 0, 0, "-"};
    s.conns = {a, b};
    return s;
}

}  // namespace

TEST_CASE("a sample parses back to what the instance sent")
{
    auto conns = parse_watch_sample(render_watch_sample(sample(5, 7)));
    REQUIRE(conns.size() == 2);
    CHECK(conns[0].client == "127.0.0.1:1000");
    CHECK(conns[0].orig == "10.0.0.1:80");
    CHECK(conns[0].route == "direct");
    CHECK(conns[0].c2s == 5);
    CHECK(conns[0].pid == 42);
    CHECK(conns[0].comm == "curl");
    CHECK(conns[0].uid == 1000);
    CHECK(conns[1].s2c == 7);
    CHECK(parse_watch_sample("garbage\nalso\tbad\n").empty());
}

TEST_CASE("rates are the growth over the interval, fastest first; plain lines when not a terminal")
{
    auto prev = parse_watch_sample(render_watch_sample(sample(1000, 0)));
    auto cur = parse_watch_sample(render_watch_sample(sample(3000, 10000)));
    std::string v = render_watch_view(prev, cur, 2.0, false, "12:00:00");
    CHECK(v == "12:00:00 client=127.0.0.1:2000 orig=10.0.0.2:443 route=corp c2s_bps=0 s2c_bps=5000 pid=- comm=- "
               "uid=-\n"
               "12:00:00 client=127.0.0.1:1000 orig=10.0.0.1:80 route=direct c2s_bps=1000 s2c_bps=0 pid=42 "
               "comm=curl uid=1000\n");
}

TEST_CASE("a terminal gets a cleared screen with a header; a counter that went down is a new connection")
{
    auto prev = parse_watch_sample(render_watch_sample(sample(5000, 0)));
    auto cur = parse_watch_sample(render_watch_sample(sample(100, 0)));
    std::string v = render_watch_view(prev, cur, 1.0, true, "12:00:01");
    CHECK(v.rfind("\x1b[H\x1b[2J", 0) == 0);
    CHECK(v.find("2 live connections") != std::string::npos);
    CHECK(v.find("PID COMM UID") != std::string::npos);
    CHECK(v.find("42 curl 1000") != std::string::npos);
    CHECK(v.find("   100            0") != std::string::npos);
}
