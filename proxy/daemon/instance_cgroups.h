// The cgroups an instance works with: the app cgroup (given with --cgroup,
// or a transient one for `ktproxy run`), ktproxy's own (where the
// getsockopt hook and the listener side's sockops go), the instance's name
// and the lock that makes it the cgroup's only owner.
#pragma once

#include "config/options.h"
#include "daemon/cgroup.h"
#include "daemon/ownership.h"
#include "daemon/run_command.h"

#include <memory>
#include <optional>
#include <string>

namespace ktp {

struct InstanceCgroups {
    std::string mount;                            // the cgroup2 mount ("" for a gateway alone)
    std::unique_ptr<TransientCgroup> transient;   // `run` only
    std::optional<Credentials> creds;             // `run` only: whom CMD runs as
    std::optional<Cgroup> app, own;               // both, or neither (gateway alone)
    std::string name;                             // pins, lock, default control socket
    std::optional<InstanceLock> lock;

    // Resolves and opens everything, and takes the lock before anything of
    // the cgroup's (pins, control socket, hooks) is touched.
    static InstanceCgroups resolve(const Options& o);
};

}  // namespace ktp
