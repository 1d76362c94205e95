// The namespace broker's checks that need no root: which processes count as
// the intercepted cgroup's, and that a namespace it did not find is refused.
#include "base/error.h"
#include "netns/netns_broker.h"

#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace ktp;

TEST_CASE("a process is in the tree when its 0:: cgroup is the root or below it")
{
    const std::string mnt = "/sys/fs/cgroup", root = "/sys/fs/cgroup/system.slice/docker-ab.scope";
    std::string dir;
    CHECK(cgroup_file_in_tree("0::/system.slice/docker-ab.scope\n", mnt, root, &dir));
    CHECK(dir == root);
    CHECK(cgroup_file_in_tree("1:name=systemd:/x\n0::/system.slice/docker-ab.scope/init\n", mnt, root, &dir));
    CHECK(dir == root + "/init");
    // A sibling whose name starts the same is not below it.
    CHECK_FALSE(cgroup_file_in_tree("0::/system.slice/docker-ab.scope2\n", mnt, root, nullptr));
    CHECK_FALSE(cgroup_file_in_tree("0::/system.slice\n", mnt, root, nullptr));
    CHECK_FALSE(cgroup_file_in_tree("0::/\n", mnt, root, nullptr));
    CHECK_FALSE(cgroup_file_in_tree("", mnt, root, nullptr));
    CHECK_FALSE(cgroup_file_in_tree("garbage", mnt, root, nullptr));
}

TEST_CASE("a namespace the broker's scan did not find gets no socket")
{
    // An empty tree: the scan finds nothing, so every cookie (this
    // process's own namespace's included) is refused, whatever the kind.
    char tmpl[] = "/tmp/ktp-broker-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    std::set<std::string> tree;
    REQUIRE(mkdir((std::string(tmpl) + "/a").c_str(), 0700) == 0);
    REQUIRE(mkdir((std::string(tmpl) + "/a/b").c_str(), 0700) == 0);
    NetnsBroker b({tmpl, "/sys/fs/cgroup", 0, false, nullptr, [&](const std::set<std::string>& d) { tree = d; }});
    CHECK(b.scan().empty());
    // --cgroup-match's set is kept from the broker's own walk of the tree
    // (in the helper, when the relay drops), not from the relay's.
    CHECK(tree == std::set<std::string>{tmpl, std::string(tmpl) + "/a", std::string(tmpl) + "/a/b"});
    rmdir((std::string(tmpl) + "/a/b").c_str());
    rmdir((std::string(tmpl) + "/a").c_str());
    for (auto kind : {NetnsSocketKind::listen4, NetnsSocketKind::egress4, NetnsSocketKind::diag})
        for (uint64_t cookie : {uint64_t(0), uint64_t(1), uint64_t(4096)})
            CHECK_THROWS_AS(b.make(cookie, kind, 0, 1), Error);
    rmdir(tmpl);
}
