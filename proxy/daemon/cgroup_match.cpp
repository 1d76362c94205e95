// Following the cgroups that match --cgroup-match.
#include "daemon/cgroup_match.h"

#include "base/error.h"
#include "base/log.h"
#include "config/cgroup_glob.h"

#include <bpf/bpf.h>
#include <sys/stat.h>

namespace ktp {

CgroupMatch::CgroupMatch(std::string mount, std::vector<std::string> globs, int map_fd)
    : mount_(std::move(mount)), globs_(std::move(globs)), map_fd_(map_fd)
{
    while (mount_.size() > 1 && mount_.back() == '/')
        mount_.pop_back();
}

bool CgroupMatch::wanted(const std::string& dir) const
{
    if (dir.compare(0, mount_.size(), mount_) != 0)
        return false;
    std::string rel = dir.substr(mount_.size());
    // It, or any ancestor: the hooks' own rule (descendants included).
    for (;;) {
        std::string_view r(rel);
        while (!r.empty() && r.front() == '/')
            r.remove_prefix(1);
        for (const auto& g : globs_)
            if (cgroup_glob_match(g, r))
                return true;
        size_t slash = rel.rfind('/');
        if (slash == std::string::npos || slash == 0)
            return false;
        rel.resize(slash);
    }
}

void CgroupMatch::sync(const std::set<std::string>& dirs)
{
    std::map<uint64_t, uint8_t> now;
    for (const auto& d : dirs) {
        struct stat st {};
        if (::stat(d.c_str(), &st) != 0)
            continue;  // removed meanwhile
        const uint64_t id = st.st_ino;  // a cgroup2 directory's inode is its id
        const uint8_t in = wanted(d) ? 1 : 0;
        if (auto it = ids_.find(id); it != ids_.end() && it->second == in) {
            now[id] = in;
            continue;
        }
        // Only what the map took is remembered: a failed write (the map
        // full) is tried again at the next scan.
        if (bpf_map_update_elem(map_fd_, &id, &in, BPF_ANY) != 0) {
            log::warn("--cgroup-match: cannot write {} to ktp_cgroups: {}; it is treated as not yet seen", d,
                      errno_text(errno));
            continue;
        }
        now[id] = in;
        if (in)
            log::info("--cgroup-match: intercepting {}", d);
    }
    for (const auto& [id, in] : ids_)
        if (!now.count(id))
            bpf_map_delete_elem(map_fd_, &id);
    ids_ = std::move(now);
}

}  // namespace ktp
