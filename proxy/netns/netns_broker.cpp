// Finding the cgroup tree's namespaces and making sockets inside them.
#include "netns/netns_broker.h"

#include "base/error.h"
#include "base/sock_addr.h"
#include "loop/listener.h"
#include "netns/netns.h"
#include "udp/relay_socket.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace ktp {
namespace {

// (pid, its cgroup directory) of every process of the tree whose cgroup is
// wanted. A cgroup removed while we walk it just ends its part of the walk.
std::vector<std::pair<int, std::string>> tree_pids(const std::string& root,
                                                  const std::function<bool(const std::string&)>& wanted)
{
    std::vector<std::pair<int, std::string>> out;
    auto read_procs = [&](const std::filesystem::path& dir) {
        if (wanted && !wanted(dir.string()))
            return;
        std::ifstream in(dir / "cgroup.procs");
        int p;
        while (in >> p)
            out.emplace_back(p, dir.string());
    };
    read_procs(root);
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec))
            read_procs(it->path());
    return out;
}

// The namespace's cookie: that of a socket made inside it.
uint64_t cookie_in(int ns_fd)
{
    NetnsEnter in(ns_fd);
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s)
        fail_errno("socket in a container namespace");
    return netns_cookie_of(s.get());
}

}  // namespace

bool cgroup_file_in_tree(std::string_view proc_pid_cgroup, const std::string& mount, const std::string& root,
                         std::string* dir)
{
    std::istringstream in{std::string(proc_pid_cgroup)};
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("0::", 0) != 0)
            continue;
        std::string abs = mount + line.substr(3);
        while (abs.size() > 1 && abs.back() == '/')
            abs.pop_back();
        if (abs != root && abs.rfind(root + "/", 0) != 0)
            return false;
        if (dir)
            *dir = abs;
        return true;
    }
    return false;
}

NetnsBroker::NetnsBroker(NetnsBrokerConfig cfg) : cfg_(std::move(cfg))
{
    struct stat st {};
    if (::stat("/proc/self/ns/net", &st) != 0)
        fail_errno("stat /proc/self/ns/net");
    host_inode_ = st.st_ino;
}

bool NetnsBroker::in_tree(int pid) const
{
    std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
    std::stringstream text;
    text << f.rdbuf();
    std::string dir;
    return cgroup_file_in_tree(text.str(), cfg_.mount, cfg_.cgroup_path, &dir) && (!cfg_.wanted || cfg_.wanted(dir));
}

std::set<std::string> cgroup_tree_dirs(const std::string& root)
{
    std::set<std::string> dirs{root};
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec))
            dirs.insert(it->path().string());
    return dirs;
}

std::vector<NetnsFound> NetnsBroker::scan()
{
    std::lock_guard lock(mu_);
    return scan_locked(true);
}

std::vector<NetnsFound> NetnsBroker::scan_locked(bool count_misses)
{
    const auto now = std::chrono::steady_clock::now();
    if (cfg_.on_tree)
        cfg_.on_tree(cgroup_tree_dirs(cfg_.cgroup_path));
    std::set<uint64_t> seen;
    for (auto& [pid, dir] : tree_pids(cfg_.cgroup_path, cfg_.wanted)) {
        uint64_t ino = netns_inode_of_pid(pid);
        if (!ino || ino == host_inode_ || !seen.insert(ino).second)
            continue;
        if (auto it = known_.find(ino); it != known_.end()) {
            it->second.misses = 0;
            it->second.seen = now;
            continue;
        }
        UniqueFd fd = open_netns_of_pid(pid);
        struct stat st {};
        // The pid may have exited and been reused by now: the namespace
        // opened counts only if that process is (still) in the tree.
        if (!fd || ::fstat(fd.get(), &st) != 0 || st.st_ino != ino || !in_tree(pid)) {
            seen.erase(ino);
            continue;
        }
        try {
            Entry e;
            e.cookie = cookie_in(fd.get());
            e.fd = std::move(fd);
            e.cgroup = dir;
            e.seen = now;
            known_.emplace(ino, std::move(e));
        } catch (const Error&) {
            seen.erase(ino);  // gone meanwhile; met again at the next scan if not
        }
    }
    std::vector<NetnsFound> out;
    for (auto it = known_.begin(); it != known_.end();) {
        // Two scans in a row without a process of the tree in it: the
        // container stopped (the relay drops its listener after as many).
        if (!seen.count(it->first) && count_misses && ++it->second.misses >= 2) {
            it = known_.erase(it);
            continue;
        }
        if (seen.count(it->first))
            out.push_back({it->second.cookie, it->second.cgroup});
        ++it;
    }
    return out;
}

std::vector<UniqueFd> NetnsBroker::make(uint64_t cookie, NetnsSocketKind kind, uint16_t port, unsigned count)
{
    std::lock_guard lock(mu_);
    auto find = [&]() -> Entry* {
        for (auto& [ino, k] : known_)
            if (k.cookie == cookie)
                return &k;
        return nullptr;
    };
    Entry* e = find();
    // Scans are the relay's to ask for: one that stopped asking (taken
    // over) must not keep getting sockets in a namespace the cgroup left
    // long ago. A namespace not seen for kStale is looked for again here.
    if (e && std::chrono::steady_clock::now() - e->seen > kStale) {
        scan_locked(false);  // not one of the relay's scans: no misses counted
        e = find();
        if (e && std::chrono::steady_clock::now() - e->seen > kStale)
            e = nullptr;
    }
    if (!e)
        fail("network namespace {} is not one of the intercepted cgroup's (refused)", cookie);
    // The helper picks a namespace's ports: IPv4 from the free ones, IPv6
    // only on the port its IPv4 twin got. A relay taken over could
    // otherwise bind a port a container's own service is about to take
    // (its sockets are made inside the container).
    if (cfg_.egress_host && (kind == NetnsSocketKind::egress4 || kind == NetnsSocketKind::egress6))
        fail("a TCP socket in network namespace {}: with --egress host nothing leaves from a container (refused)",
             cookie);
    const bool v4_listener = kind == NetnsSocketKind::listen4 || kind == NetnsSocketKind::udp4;
    const bool v6_listener = kind == NetnsSocketKind::listen6 || kind == NetnsSocketKind::udp6;
    if (v4_listener && port != 0)
        fail("a listener on port {} in network namespace {}: the helper picks the port (refused)", port, cookie);
    if (v6_listener && !e->ports.count({kind == NetnsSocketKind::listen6, port}))
        fail("an IPv6 listener on port {} in network namespace {}: not its IPv4 listener's (refused)", port, cookie);
    std::vector<UniqueFd> out;
    NetnsEnter in(e->fd.get());
    switch (kind) {
    case NetnsSocketKind::listen4:
    case NetnsSocketKind::listen6: {
        auto addr = SockAddr::parse_ip(kind == NetnsSocketKind::listen4 ? "127.0.0.1" : "::1", port);
        out.push_back(listen_tcp(*addr, "container listener", false, false, cfg_.mark).fd);
        if (v4_listener)
            e->ports.insert({true, SockAddr::local_of(out.back().get()).port()});
        break;
    }
    case NetnsSocketKind::udp4:
    case NetnsSocketKind::udp6: {
        auto addr = SockAddr::parse_ip(kind == NetnsSocketKind::udp4 ? "0.0.0.0" : "::1", port);
        out.push_back(udp_relay_socket(*addr, cfg_.mark));
        if (!out.back())
            fail_errno("bind the UDP relay socket to {} in network namespace {}", *addr, cookie);
        if (v4_listener)
            e->ports.insert({false, SockAddr::local_of(out.back().get()).port()});
        break;
    }
    case NetnsSocketKind::egress4:
    case NetnsSocketKind::egress6:
    case NetnsSocketKind::egress_udp4:
    case NetnsSocketKind::egress_udp6:
        for (unsigned i = 0; i < std::min(std::max(count, 1u), kMaxBatch); ++i) {
            const bool udp = kind == NetnsSocketKind::egress_udp4 || kind == NetnsSocketKind::egress_udp6;
            const bool v4 = kind == NetnsSocketKind::egress4 || kind == NetnsSocketKind::egress_udp4;
            UniqueFd s(::socket(v4 ? AF_INET : AF_INET6, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC | SOCK_NONBLOCK,
                                0));
            if (!s) {
                if (out.empty())
                    fail_errno("socket in network namespace {}", cookie);
                break;
            }
            out.push_back(std::move(s));
        }
        break;
    case NetnsSocketKind::diag:
        out.emplace_back(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
        if (!out.back())
            fail_errno("sock_diag socket in network namespace {}", cookie);
        break;
    default:
        fail("unknown socket kind {}", static_cast<uint32_t>(kind));
    }
    return out;
}

}  // namespace ktp
