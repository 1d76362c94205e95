// Notices that the intercepted cgroup was removed, and that a cgroup of the
// same path exists again: systemd removes and re-creates a service's cgroup
// on every restart, and the hooks go with the removed one.
#pragma once

#include "base/unique_fd.h"

#include <cstdint>
#include <string>

namespace ktp {

class CgroupWatch {
public:
    // path: the cgroup directory the hooks are attached to; id: its cgroup id.
    CgroupWatch(std::string path, uint64_t id);

    // Readable when the cgroup's parent directory changed (inotify: cgroup2
    // reports a child's mkdir/rmdir to the parent, never IN_DELETE_SELF).
    int fd() const { return fd_.get(); }

    enum class State {
        attached,  // the path is still the cgroup the hooks are on
        gone,      // nothing at the path
        replaced,  // another cgroup at the path: attach to it
    };
    // Drains the inotify events and looks at the path. Watches the parent
    // again if it was itself re-created.
    State check();
    // The hooks are now on the cgroup with this id.
    void attached_to(uint64_t id) { id_ = id; }

private:
    void watch_parent();

    std::string path_, parent_;
    uint64_t id_;
    UniqueFd fd_;
    int wd_ = -1;
    uint64_t parent_ino_ = 0;
};

}  // namespace ktp
