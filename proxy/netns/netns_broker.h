// What makes sockets inside the network namespaces of the intercepted
// cgroup's processes (containers). It runs where entering a namespace is
// allowed: in the privileged helper of a dropped instance (proxy/daemon/
// priv_helper.cpp), or in the relay itself when it keeps root. It acts only
// on namespaces its own scan of the cgroup tree found: a request names one
// by the cookie that scan returned, never by a path or a pid, so a relay
// that is taken over can get sockets in no other namespace.
#pragma once

#include "base/unique_fd.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ktp {

enum class NetnsSocketKind : uint32_t {
    listen4 = 1,  // bound to 127.0.0.1:port (0: any free port) and listening, SO_MARK set
    listen6 = 2,  // the same on ::1
    egress4 = 3,  // a fresh TCP socket (AF_INET), non-blocking, for a connection leaving from there
    egress6 = 4,
    diag = 5,     // a NETLINK_SOCK_DIAG socket: that namespace's socket table
    udp4 = 6,     // the UDP relay socket: bound to 0.0.0.0:port (0: any), IP_PKTINFO, SO_MARK
    udp6 = 7,     // the same on [::1]:port, IPV6_V6ONLY
    egress_udp4 = 8,  // a fresh UDP socket (AF_INET), non-blocking, for a flow leaving from there
    egress_udp6 = 9,
};

// A namespace the scan found: its cookie (what the hooks see) and the
// cgroup directory of the first of its processes met.
struct NetnsFound {
    uint64_t cookie = 0;
    std::string cgroup;
};

// The interface the relay uses (NetnsListeners, the egress sockets): the
// broker itself, or the helper's client that forwards to it.
class NetnsSockets {
public:
    virtual ~NetnsSockets() = default;
    // The namespaces (other than ktproxy's) of the cgroup tree's processes now.
    virtual std::vector<NetnsFound> scan() = 0;
    // Up to `count` sockets of `kind` made in namespace `cookie` (count is 1
    // for listeners); throws Error with the reason if none could be made.
    virtual std::vector<UniqueFd> make(uint64_t cookie, NetnsSocketKind kind, uint16_t port, unsigned count) = 0;

    static constexpr unsigned kMaxBatch = 32;
};

// Whether the text of /proc/PID/cgroup puts the process in `root` or below
// (absolute paths under `mount`); its directory in *dir.
bool cgroup_file_in_tree(std::string_view proc_pid_cgroup, const std::string& mount, const std::string& root,
                         std::string* dir);

struct NetnsBrokerConfig {
    std::string cgroup_path;  // the intercepted cgroup (its whole subtree)
    std::string mount;        // the cgroup2 mount (to read /proc/PID/cgroup against)
    uint32_t mark = 0;        // SO_MARK of the listeners
    // --egress host: connections leave from ktproxy's namespace, so no TCP
    // socket is made in a container's (UDP ones still are: the direct
    // exchange with a container's own loopback resolver).
    bool egress_host = false;
    // --cgroup-match: which cgroup directories are intercepted (null: all);
    // and, at each scan, every directory of the tree, to keep the hooks'
    // set of intercepted cgroups (daemon/cgroup_match.h). The set is
    // written here, where the scan runs (the privileged helper of a dropped
    // relay): a relay that could write it could add any cgroup below the
    // hooks' one to the interception.
    std::function<bool(const std::string&)> wanted;
    std::function<void(const std::set<std::string>&)> on_tree;
};

// Every cgroup directory of the tree (absolute). A cgroup removed while we
// walk it just ends its part of the walk.
std::set<std::string> cgroup_tree_dirs(const std::string& root);

class NetnsBroker final : public NetnsSockets {
public:
    explicit NetnsBroker(NetnsBrokerConfig cfg);

    std::vector<NetnsFound> scan() override;
    std::vector<UniqueFd> make(uint64_t cookie, NetnsSocketKind kind, uint16_t port, unsigned count) override;

    // Is the process's cgroup (per /proc/PID/cgroup) inside the intercepted
    // tree and wanted? Read after its namespace was opened: a pid reused by
    // a process outside the tree between the two reads is refused.
    bool in_tree(int pid) const;

private:
    struct Entry {
        UniqueFd fd;  // keeps the namespace (and so its inode and cookie) alive
        uint64_t cookie = 0;
        std::string cgroup;
        int misses = 0;
        std::set<std::pair<bool, uint16_t>> ports;  // (tcp, port) of the IPv4 listeners made here
        std::chrono::steady_clock::time_point seen;  // the last scan that found a process in it
    };
    static constexpr std::chrono::seconds kStale{2};

    // count_misses: a namespace not found counts toward its drop (the
    // relay's scans); a look made for make() does not.
    std::vector<NetnsFound> scan_locked(bool count_misses);

    NetnsBrokerConfig cfg_;
    uint64_t host_inode_ = 0;
    // In a relay that kept root, the namespace thread scans while workers
    // ask for egress sockets.
    std::mutex mu_;
    std::map<uint64_t, Entry> known_;  // by nsfs inode
};

}  // namespace ktp
