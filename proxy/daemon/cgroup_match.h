// --cgroup-match: keeps the connect hooks' set of intercepted cgroups
// (ktp_cgroups, bpf/sock_cgmatch.h) equal to the cgroups of the tree that
// match a pattern, and their descendants. Fed by the NetnsBroker's scan of
// the tree (asked for every 100 ms and on inotify events), which runs in
// the privileged helper when the relay drops: only it may write the map.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace ktp {

class CgroupMatch {
public:
    CgroupMatch(std::string mount, std::vector<std::string> globs, int map_fd);

    // Is this cgroup directory (absolute) intercepted: it or an ancestor
    // matches?
    bool wanted(const std::string& dir) const;
    // dirs: every cgroup directory of the tree, as just walked. Writes each
    // one's id to the map (1: wanted, 0: not), deletes those no longer
    // there. A cgroup with no entry is one the hooks have not been told
    // about: left alone, or intercepted with --fail-closed.
    void sync(const std::set<std::string>& dirs);

private:
    std::string mount_;
    std::vector<std::string> globs_;
    int map_fd_;
    std::map<uint64_t, uint8_t> ids_;  // what the map holds: id -> wanted
};

}  // namespace ktp
