// --cgroup-match patterns.
#include "config/cgroup_glob.h"

#include <catch2/catch.hpp>

#include <string>

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

TEST_CASE("cgroup globs with many wildcards match in bounded time")
{
    // Backtracking over each ** (and each * inside a level) is exponential
    // in their number: a pattern like this once hung every scan.
    std::string glob, path, seg;
    for (int i = 0; i < 12; ++i)
        glob += "**/";
    glob += "x";
    for (int i = 0; i < 48; ++i)
        path += "a/";
    path += "b";
    CHECK_FALSE(cgroup_glob_match(glob, path));
    CHECK(cgroup_glob_match(glob, path + "/x"));

    std::string stars;
    for (int i = 0; i < 20; ++i)
        stars += "*a";
    stars += "*b";
    CHECK_FALSE(cgroup_glob_match(stars, std::string(250, 'a')));
    CHECK(cgroup_glob_match(stars, std::string(250, 'a') + "b"));
}

TEST_CASE("cgroup globs: ? and bracket classes within one level")
{
    CHECK(cgroup_glob_match("pod-?", "pod-1"));
    CHECK_FALSE(cgroup_glob_match("pod-?", "pod-12"));
    CHECK(cgroup_glob_match("pod-[0-9]", "pod-7"));
    CHECK_FALSE(cgroup_glob_match("pod-[0-9]", "pod-x"));
    CHECK(cgroup_glob_match("pod-[!0-9]", "pod-x"));
    CHECK(cgroup_glob_match("pod-[^0-9]", "pod-x"));
    CHECK_FALSE(cgroup_glob_match("pod-[!0-9]", "pod-3"));
    CHECK(cgroup_glob_match("a[]]b", "a]b"));
    CHECK(cgroup_glob_match("a[-x]b", "a-b"));
    CHECK(cgroup_glob_match("a\\*b", "a*b"));
    CHECK_FALSE(cgroup_glob_match("a\\*b", "axb"));
    CHECK_FALSE(cgroup_glob_match("a[b", "ab"));   // an unclosed [ is a literal, as fnmatch has it
    CHECK(cgroup_glob_match("a[b", "a[b"));
    CHECK(cgroup_glob_match("*.scope", ".scope"));
    // POSIX classes and escapes inside brackets, as fnmatch has them.
    CHECK(cgroup_glob_match("pod-[[:digit:]][[:digit:]]", "pod-42"));
    CHECK_FALSE(cgroup_glob_match("pod-[[:digit:]]", "pod-x"));
    CHECK(cgroup_glob_match("docker-[[:xdigit:]]*.scope", "docker-ab12.scope"));
    CHECK_FALSE(cgroup_glob_match("docker-[[:xdigit:]]*.scope", "docker-zz.scope"));
    CHECK(cgroup_glob_match("a[![:upper:]]", "ab"));
    CHECK_FALSE(cgroup_glob_match("a[![:upper:]]", "aB"));
    CHECK(cgroup_glob_match("a[\\]]b", "a]b"));
    CHECK_FALSE(cgroup_glob_match("a[[:nosuch:]]", "an"));  // an unknown class matches nothing there
    CHECK(cgroup_glob_match("docker-*", "docker-"));
}
