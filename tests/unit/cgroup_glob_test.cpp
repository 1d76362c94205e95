// --cgroup-match patterns.
#include "config/cgroup_glob.h"

#include <catch2/catch.hpp>

using namespace ktp;

TEST_CASE("cgroup globs match one level with *, any depth with **")
{
    CHECK(cgroup_glob_match("system.slice/docker-*.scope", "system.slice/docker-ab12.scope"));
    CHECK_FALSE(cgroup_glob_match("system.slice/docker-*.scope", "system.slice/docker-ab12.scope/init"));
    CHECK_FALSE(cgroup_glob_match("system.slice/docker-*.scope", "user.slice/docker-ab12.scope"));
    CHECK_FALSE(cgroup_glob_match("system.slice/*", "system.slice"));
    CHECK(cgroup_glob_match("kubepods.slice/**", "kubepods.slice"));
    CHECK(cgroup_glob_match("kubepods.slice/**", "kubepods.slice/a/b/c"));
    CHECK(cgroup_glob_match("**/app-*.scope", "user.slice/user-1000.slice/app-x.scope"));
    CHECK(cgroup_glob_match("/a//b/", "a/b"));
}

TEST_CASE("cgroup globs share the literal parent before any wildcard")
{
    CHECK(cgroup_glob_prefix({"system.slice/docker-*.scope"}) == "system.slice");
    CHECK(cgroup_glob_prefix({"system.slice/docker-*.scope", "system.slice/libpod-*.scope"}) == "system.slice");
    CHECK(cgroup_glob_prefix({"kubepods.slice/**"}) == "kubepods.slice");
    CHECK(cgroup_glob_prefix({"a/b/c"}) == "a/b");
    CHECK(cgroup_glob_prefix({"system.slice/x", "user.slice/y"}).empty());
    CHECK(cgroup_glob_prefix({"*.scope"}).empty());
}
