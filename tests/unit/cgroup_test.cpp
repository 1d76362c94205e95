// cgroup2 discovery from /proc text, for pure v2 and hybrid hosts.
#include "daemon/cgroup.h"

#include <catch2/catch.hpp>

using namespace ktp;

TEST_CASE("cgroup2 mount is found on a pure v2 host")
{
    const char* mounts =
        "sysfs /sys sysfs rw,nosuid 0 0\n"
        "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n";
    CHECK(find_cgroup2_mount(mounts) == "/sys/fs/cgroup");
}

TEST_CASE("cgroup2 mount is found on a hybrid host under unified/")
{
    const char* mounts =
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    CHECK(find_cgroup2_mount(mounts) == "/sys/fs/cgroup/unified");
}

TEST_CASE("no cgroup2 mount is reported as none")
{
    CHECK_FALSE(find_cgroup2_mount("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"));
    CHECK_FALSE(find_cgroup2_mount(""));
}

TEST_CASE("the process's own v2 cgroup is the 0:: line")
{
    CHECK(cgroup2_path_of_self("12:cpu:/x\n0::/system.slice/ktproxy.service\n") == "/system.slice/ktproxy.service");
    CHECK(cgroup2_path_of_self("0::/\n") == "/");
    CHECK_FALSE(cgroup2_path_of_self("1:name=systemd:/\n"));
}

TEST_CASE("relative cgroup paths resolve under the mount, absolute ones are kept")
{
    CHECK(resolve_cgroup_path("/sys/fs/cgroup", "app") == "/sys/fs/cgroup/app");
    CHECK(resolve_cgroup_path("/sys/fs/cgroup/unified/", "a/b/") == "/sys/fs/cgroup/unified/a/b");
    CHECK(resolve_cgroup_path("/sys/fs/cgroup", "/sys/fs/cgroup/app/") == "/sys/fs/cgroup/app");
    CHECK(resolve_cgroup_path("/sys/fs/cgroup", "") == "/sys/fs/cgroup");
}

TEST_CASE("a path from /proc/self/cgroup is inside the hierarchy, not the filesystem")
{
    CHECK(hierarchy_to_fs_path("/sys/fs/cgroup", "/system.slice/ktproxy.service") ==
          "/sys/fs/cgroup/system.slice/ktproxy.service");
    CHECK(hierarchy_to_fs_path("/sys/fs/cgroup/unified", "/") == "/sys/fs/cgroup/unified");
    CHECK(hierarchy_to_fs_path("/sys/fs/cgroup", "/a/b/") == "/sys/fs/cgroup/a/b");
}

TEST_CASE("the cgroup2 auto-mount only goes where nothing is mounted at or below /sys/fs/cgroup")
{
    // Under `ip netns exec`: a fresh sysfs and nothing below it.
    CHECK_FALSE(ktp::mounted_at_or_below("sysfs /sys sysfs rw 0 0\nproc /proc proc rw 0 0\n", "/sys/fs/cgroup"));
    // A v1 host: the tmpfs, or controllers straight below it.
    CHECK(ktp::mounted_at_or_below("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n", "/sys/fs/cgroup"));
    CHECK(ktp::mounted_at_or_below("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n", "/sys/fs/cgroup"));
    // A sibling whose name only starts the same is not below it.
    CHECK_FALSE(ktp::mounted_at_or_below("x /sys/fs/cgroupfoo tmpfs rw 0 0\n", "/sys/fs/cgroup"));
}
