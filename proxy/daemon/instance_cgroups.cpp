// Finding and locking an instance's cgroups.
#include "daemon/instance_cgroups.h"

#include "base/error.h"
#include "base/text_file.h"

#include <unistd.h>


namespace ktp {

InstanceCgroups InstanceCgroups::resolve(const Options& o)
{
    InstanceCgroups c;
    const bool run_mode = o.command == Command::run;
    // Only a cgroup to intercept needs the hierarchy (a gateway does not);
    // ktproxy mounts it when its mount namespace has none (ip netns exec).
    if (run_mode || !o.cgroup.empty())
        c.mount = cgroup2_mount(true);
    std::string app_path;
    if (run_mode) {
        c.creds = resolve_run_user(o.run_user);
        c.transient = std::make_unique<TransientCgroup>(c.mount, getpid());
        app_path = c.transient->path();
    } else if (!o.cgroup.empty()) {
        app_path = resolve_cgroup_path(c.mount, o.cgroup);
    }
    if (app_path.empty()) {
        c.name = "gateway";
        return c;
    }
    c.app = open_cgroup2_dir(app_path);
    auto self = cgroup2_path_of_self(read_text_file("/proc/self/cgroup"));
    if (!self)
        fail("cannot find ktproxy's own cgroup2 path in /proc/self/cgroup");
    // /proc/self/cgroup gives a path inside the hierarchy ("/a/b"), not a
    // filesystem path: it is relative to the cgroup2 mount.
    c.own = open_cgroup2_dir(hierarchy_to_fs_path(c.mount, *self));
    c.name = instance_name(c.mount, c.app->path);
    c.lock = InstanceLock::acquire(bpffs_name(c.name));
    c.lock->record_owner();
    return c;
}

}  // namespace ktp
