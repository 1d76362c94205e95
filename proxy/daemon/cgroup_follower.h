// Keeps the hooks on the app cgroup across its removal and re-creation at
// the same path (systemctl restart): the hooks go with the removed cgroup,
// so the new one gets fresh links (and, fail-closed, the pins move to them).
#pragma once

#include "daemon/cgroup.h"
#include "daemon/cgroup_watch.h"
#include "kernel/sock_hooks.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

namespace ktp {

class CgroupFollower {
public:
    CgroupFollower(const Cgroup& app, bool fail_closed);

    int fd() const { return watch_.fd(); }
    // How long the main thread may sleep before the next look (inotify
    // wakes it sooner; the timeout catches what inotify cannot see).
    int poll_timeout_ms() const { return waiting_ ? 50 : 2000; }

    // Looks at the cgroup and re-attaches if it was created again. False:
    // it cannot be followed (logged, with fail-closed semantics kept); the
    // instance must exit.
    // reattach moves the hooks from the old cgroup to the fresh one (in
    // this process, or through the privileged helper); it throws Error.
    using Reattach = std::function<void(const Cgroup& old, const Cgroup& fresh)>;
    bool follow(std::optional<Cgroup>& app, const Reattach& reattach);

    uint32_t reattached() const { return reattached_; }
    double since_last_reattach_s() const;

private:
    CgroupWatch watch_;
    bool fail_closed_;
    uint32_t reattached_ = 0;
    bool waiting_ = false;
    std::chrono::steady_clock::time_point gone_since_, last_reattach_;
};

}  // namespace ktp
