// cgroup2 discovery and validation.
#include "daemon/cgroup.h"

#include "base/error.h"
#include "base/log.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace ktp {

namespace {

struct MountEntry {
    std::string dir, type;
};

// The mount point and filesystem type of each line of /proc/self/mounts.
std::vector<MountEntry> mount_entries(std::string_view proc_mounts)
{
    std::vector<MountEntry> out;
    std::istringstream in{std::string(proc_mounts)};
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string dev, dir, type;
        if (fields >> dev >> dir >> type)
            out.push_back({dir, type});
    }
    return out;
}

}  // namespace

std::optional<std::string> find_cgroup2_mount(std::string_view proc_mounts)
{
    std::vector<std::string> found;
    for (auto& m : mount_entries(proc_mounts))
        if (m.type == "cgroup2")
            found.push_back(m.dir);
    for (const char* preferred : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"})
        for (const auto& f : found)
            if (f == preferred)
                return f;
    if (!found.empty())
        return found.front();
    return std::nullopt;
}

std::optional<std::string> cgroup2_path_of_self(std::string_view text)
{
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("0::", 0) == 0)
            return line.substr(3);
    return std::nullopt;
}

std::string resolve_cgroup_path(std::string_view mount, std::string_view user_path)
{
    std::string p(user_path);
    if (p.empty() || p.front() != '/') {
        std::string m(mount);
        while (!m.empty() && m.back() == '/')
            m.pop_back();
        p = m + "/" + p;
    }
    while (p.size() > 1 && p.back() == '/')
        p.pop_back();
    return p;
}

std::string hierarchy_to_fs_path(std::string_view mount, std::string_view hierarchy_path)
{
    while (!hierarchy_path.empty() && hierarchy_path.front() == '/')
        hierarchy_path.remove_prefix(1);
    return resolve_cgroup_path(mount, hierarchy_path);
}

static std::string slurp(const char* path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static bool g_mounted_here = false;

bool cgroup2_mounted_here() { return g_mounted_here; }

std::string cgroup2_mount(bool mount_if_missing)
{
    const std::string mounts = slurp("/proc/self/mounts");
    if (auto m = find_cgroup2_mount(mounts))
        return *m;
    // No cgroup2 in this mount namespace. Under `ip netns exec` (how many CI
    // harnesses start a daemon in a namespace) /sys is a fresh sysfs mount,
    // which hides the host's cgroup mounts: /sys/fs/cgroup is then sysfs's own
    // empty directory, with nothing mounted at or below it, and mounting the
    // hierarchy there is what systemd does at boot (same hierarchy, gone with
    // the namespace). Anything mounted at or below it (a v1 tmpfs, v1
    // controllers) means a host set up otherwise: nothing is touched then.
    const char* dir = "/sys/fs/cgroup";
    struct statfs st {};
    if (mount_if_missing && !mounted_at_or_below(mounts, dir) && statfs(dir, &st) == 0 &&
        st.f_type == SYSFS_MAGIC) {
        if (mount("cgroup2", dir, "cgroup2", 0, nullptr) != 0)
            fail_errno("no cgroup2 filesystem is mounted (looked in /proc/self/mounts), and mounting one at {} failed",
                       dir);
        log::info("mounted cgroup2 at {}: this mount namespace had none (as under `ip netns exec`)", dir);
        g_mounted_here = true;
        return dir;
    }
    fail("no cgroup2 filesystem is mounted (looked in /proc/self/mounts); mount one at /sys/fs/cgroup");
}

bool mounted_at_or_below(std::string_view proc_mounts, std::string_view dir)
{
    for (const auto& m : mount_entries(proc_mounts)) {
        std::string_view d = m.dir;
        if (d == dir || (d.size() > dir.size() && d.substr(0, dir.size()) == dir && d[dir.size()] == '/'))
            return true;
    }
    return false;
}

Cgroup open_cgroup2_dir(const std::string& path)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOTDIR)
            fail("cgroup {}: not a directory", path);
        fail_errno("cgroup {}", path);
    }
    struct statfs sfs {};
    if (fstatfs(fd.get(), &sfs) != 0)
        fail_errno("cgroup {}: statfs", path);
    if (sfs.f_type != CGROUP2_SUPER_MAGIC)
        fail("cgroup {}: not a cgroup2 directory (cgroup2 is mounted at {})", path, cgroup2_mount());
    return Cgroup{path, std::move(fd)};
}

}  // namespace ktp
