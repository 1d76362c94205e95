// --upstream-group: parsing into the router, and which member a connection
// goes through as members fail and come back.
#include "base/error.h"
#include "route/router.h"
#include "upstream/upstream_group.h"

#include <catch2/catch.hpp>

using namespace ktp;
using namespace std::chrono_literals;

namespace {

Router group_router()
{
    return Router({}, {"a=socks5://10.0.0.1:1080", "b=socks5://10.0.0.2:1080", "c=http://10.0.0.3:3128"},
                  "proxy=g", {"g=a,b,c"});
}

}  // namespace

TEST_CASE("an upstream group picks its first member that is up")
{
    Router r = group_router();
    const Upstream* g = r.upstream("g");
    REQUIRE(g);
    REQUIRE(g->members.size() == 3);
    auto now = std::chrono::steady_clock::now();
    CHECK(pick_member(*g, now)->name == "a");
    g->members[0]->health->failed(now);
    CHECK(pick_member(*g, now)->name == "b");
    // The retry after b failed goes to the next one, never back to b.
    CHECK(pick_member(*g, now, g->members[1])->name == "c");
    // After the back-off a is tried again (probed); a success clears it.
    CHECK(pick_member(*g, now + UpstreamHealth::kBackoff + 1ms)->name == "a");
    g->members[0]->health->succeeded();
    CHECK(pick_member(*g, now)->name == "a");
}

TEST_CASE("with every member down, the one whose back-off ends first")
{
    Router r = group_router();
    const Upstream* g = r.upstream("g");
    auto now = std::chrono::steady_clock::now();
    g->members[0]->health->failed(now + 2s);
    g->members[1]->health->failed(now);
    g->members[2]->health->failed(now + 1s);
    CHECK(pick_member(*g, now)->name == "b");
}

TEST_CASE("bad upstream groups are refused with one line")
{
    auto err = [](std::vector<std::string> groups) {
        try {
            Router({}, {"a=socks5://10.0.0.1:1080"}, "direct", groups);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK(err({"g"}).find("expected NAME=UPSTREAM") != std::string::npos);
    CHECK(err({"g="}).find("expected NAME=UPSTREAM") != std::string::npos);
    CHECK(err({"g=a,x"}).find("'x' is not a proxy upstream") != std::string::npos);
    CHECK(err({"g=a,direct"}).find("'direct' is not a proxy upstream") != std::string::npos);
    CHECK(err({"g=a,a"}).find("listed twice") != std::string::npos);
    CHECK(err({"a=a"}).find("already an upstream") != std::string::npos);
    CHECK(err({"g=a", "h=g"}).find("'g' is not a proxy upstream") != std::string::npos);
}
