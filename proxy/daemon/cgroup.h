// Finding the cgroup2 hierarchy (pure v2 or hybrid) and opening directories in it.
#pragma once

#include "base/unique_fd.h"

#include <optional>
#include <string>
#include <string_view>

namespace ktp {

// Mount point of the cgroup2 filesystem from the text of /proc/self/mounts.
// Prefers /sys/fs/cgroup, then /sys/fs/cgroup/unified (hybrid), then any.
std::optional<std::string> find_cgroup2_mount(std::string_view proc_mounts);

// The v2 path ("0::/a/b" line) from the text of /proc/self/cgroup.
std::optional<std::string> cgroup2_path_of_self(std::string_view proc_self_cgroup);

// "app" -> "<mount>/app"; absolute paths are kept. Normalises trailing '/'.
std::string resolve_cgroup_path(std::string_view mount, std::string_view user_path);

// A path inside the hierarchy, as /proc/PID/cgroup gives it ("/a/b", "/"),
// to the directory under the mount ("/sys/fs/cgroup/a/b").
std::string hierarchy_to_fs_path(std::string_view mount, std::string_view hierarchy_path);

struct Cgroup {
    std::string path;
    UniqueFd fd;  // O_DIRECTORY, for BPF attach
};

// Opens and checks that path is a directory on cgroup2; throws Error with a
// one-line reason otherwise.
Cgroup open_cgroup2_dir(const std::string& path);

// The cgroup2 mount of this machine, read from /proc/self/mounts. With
// mount_if_missing, if this mount namespace has none and /sys/fs/cgroup is a
// bare sysfs directory with nothing mounted at or below it (under
// `ip netns exec`), mounts the hierarchy there first.
std::string cgroup2_mount(bool mount_if_missing = false);

// Is anything mounted at dir or below it (text of /proc/self/mounts)?
bool mounted_at_or_below(std::string_view proc_mounts, std::string_view dir);

// Did cgroup2_mount() have to mount the hierarchy (a fresh /sys)?
bool cgroup2_mounted_here();

}  // namespace ktp
