// Instance names: one file name per cgroup, never shared by two cgroups.
#include "daemon/ownership.h"

#include <catch2/catch.hpp>

using ktp::instance_name;

TEST_CASE("instance names keep '/' and '_' apart")
{
    const char* m = "/sys/fs/cgroup";
    // x/y and x_y shared one pin directory: one cgroup got no hooks.
    CHECK(instance_name(m, "/sys/fs/cgroup/x/y") == "x_y");
    CHECK(instance_name(m, "/sys/fs/cgroup/x_y") == "x%5Fy");
    CHECK(instance_name(m, "/sys/fs/cgroup/x%5Fy") == "x%255Fy");
    CHECK(instance_name(m, "/sys/fs/cgroup/x_/y") != instance_name(m, "/sys/fs/cgroup/x/_y"));
    // Names without '_' or '%' are what older versions used: their pins and
    // control sockets are found again.
    CHECK(instance_name(m, "/sys/fs/cgroup/system.slice/app.service") == "system.slice_app.service");
    CHECK(instance_name(m, "/sys/fs/cgroup") == "root");
    CHECK(instance_name(m, "/sys/fs/cgroup/") == "root");
    CHECK(instance_name(m, "/sys/fs/cgroup/app/") == "app");
}

TEST_CASE("bpffs names have no dots")
{
    // bpffs answers EPERM for any name with a dot: every systemd unit's
    // cgroup ("app.service") could not be pinned.
    CHECK(ktp::bpffs_name("system.slice_app.service") == "system%2Eslice_app%2Eservice");
    CHECK(ktp::bpffs_name("x%5Fy") == "x%5Fy");
    CHECK(ktp::bpffs_name("app") == "app");
}
