// Meeting the cgroup's network namespaces, opening a listener in each.
#include "netns/netns_listeners.h"

#include "base/error.h"
#include "base/log.h"
#include "base/sock_addr.h"
#include "kernel/bpf_abi.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

namespace ktp {
namespace {

// Every pid of the cgroup and its descendants, and every cgroup directory
// of the tree. A cgroup removed while we walk it just ends its part of the
// walk.
std::vector<pid_t> cgroup_tree_pids(const std::string& root, std::set<std::string>& dirs,
                                    const std::function<bool(const std::string&)>& wanted)
{
    std::vector<pid_t> out;
    auto read_procs = [&out, &dirs, &wanted](const std::filesystem::path& dir) {
        dirs.insert(dir.string());
        if (wanted && !wanted(dir.string()))
            return;
        std::ifstream in(dir / "cgroup.procs");
        pid_t p;
        while (in >> p)
            out.push_back(p);
    };
    read_procs(root);
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec))
            read_procs(it->path());
    return out;
}

constexpr int kRetryScans = 10;  // a namespace without a usable loopback is tried again after this many scans

}  // namespace

bool cgroup_has_other_netns(const std::string& cgroup_path)
{
    std::set<std::string> dirs;
    const uint64_t self = netns_inode_of_pid(getpid());
    for (pid_t p : cgroup_tree_pids(cgroup_path, dirs, nullptr))
        if (uint64_t ino = netns_inode_of_pid(p); ino && ino != self)
            return true;
    return false;
}

NetnsListeners::NetnsListeners(NetnsListenersConfig cfg) : cfg_(std::move(cfg))
{
    struct stat st {};
    if (::stat("/proc/self/ns/net", &st) != 0)
        fail_errno("stat /proc/self/ns/net");
    host_inode_ = st.st_ino;
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_)
        fail_errno("eventfd for the namespace listeners' thread");
    // A new cgroup (mkdir) and a cgroup's first process (cgroup.events
    // "populated") wake the thread at once: a container runtime does both
    // when it starts a container.
    inotify_ = UniqueFd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!inotify_)
        fail_errno("inotify for the cgroup tree");
    rb_ = ring_buffer__new(cfg_.events_fd, &NetnsListeners::on_event, this, nullptr);
    if (!rb_)
        fail_errno("ring buffer of unknown namespaces (ktp_netns_events)");
}

NetnsListeners::~NetnsListeners()
{
    if (thread_.joinable()) {
        uint64_t one = 1;
        (void)!::write(stop_fd_.get(), &one, sizeof(one));
        thread_.join();
    }
    if (rb_)
        ring_buffer__free(rb_);
    for (auto& [inode, e] : known_)
        if (e.port4)
            bpf_map_delete_elem(cfg_.map_fd, &e.ns->cookie);
}

void NetnsListeners::start()
{
    scan();
    thread_ = std::thread([this] {
        try {
            run();
        } catch (const std::exception& e) {
            log::error("container namespaces: {}; no new namespace is served", e.what());
        }
    });
}

int NetnsListeners::on_event(void* self, void* data, size_t size)
{
    if (size >= sizeof(ktp_netns_event))
        static_cast<NetnsListeners*>(self)->pending_.push_back(static_cast<ktp_netns_event*>(data)->pid);
    return 0;
}

void NetnsListeners::run()
{
    pollfd fds[3] = {{ring_buffer__epoll_fd(rb_), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}, {inotify_.get(), POLLIN, 0}};
    auto next_scan = std::chrono::steady_clock::now();
    auto busy_until = next_scan;  // start() scanned, and watches the tree
    for (;;) {
        // With no container namespace known, nothing can go away and a new
        // one announces itself (a new cgroup, a cgroup's first process, a
        // connect from it); scans go on for a second after such an event
        // (a process may join a new cgroup before its watch is added), then
        // stop: reading the tree every 100 ms would cost a host without
        // containers work (and heap) for nothing.
        const bool scanning = !known_.empty() || std::chrono::steady_clock::now() < busy_until;
        int wait_ms = !scanning ? -1 : static_cast<int>(std::max<int64_t>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(next_scan - std::chrono::steady_clock::now())
                   .count()));
        int n = ::poll(fds, 3, wait_ms);
        if (n < 0 && errno != EINTR)
            fail_errno("poll");
        if (fds[1].revents)
            return;
        if (n > 0 && fds[0].revents) {
            // A connect from a namespace without a listener: serve it now,
            // not at the next scan.
            ring_buffer__consume(rb_);
            std::vector<pid_t> pids;
            pids.swap(pending_);
            for (pid_t p : pids)
                meet(p);
        }
        if (n > 0 && fds[2].revents) {
            char buf[4096];
            while (::read(inotify_.get(), buf, sizeof(buf)) > 0) {
            }
            next_scan = std::chrono::steady_clock::now();
            busy_until = next_scan + std::chrono::seconds(1);
        }
        if ((!known_.empty() || std::chrono::steady_clock::now() < busy_until) &&
            std::chrono::steady_clock::now() >= next_scan) {
            scan();
            next_scan = std::chrono::steady_clock::now() + std::chrono::milliseconds(kScanMs);
        }
    }
}

void NetnsListeners::scan()
{
    std::set<uint64_t> seen;
    std::set<std::string> dirs;
    std::vector<pid_t> pids = cgroup_tree_pids(cfg_.cgroup_path, dirs, cfg_.wanted);
    if (cfg_.on_tree)
        cfg_.on_tree(dirs);
    for (const auto& d : dirs)
        if (!watched_.count(d)) {
            // A removed directory drops its watches by itself.
            inotify_add_watch(inotify_.get(), d.c_str(), IN_CREATE | IN_ONLYDIR);
            inotify_add_watch(inotify_.get(), (d + "/cgroup.events").c_str(), IN_MODIFY);
        }
    watched_ = std::move(dirs);
    for (pid_t p : pids) {
        uint64_t ino = netns_inode_of_pid(p);
        if (!ino || ino == host_inode_ || !seen.insert(ino).second)
            continue;
        auto it = known_.find(ino);
        if (it == known_.end()) {
            meet(p);
        } else if (!it->second.port4 && --it->second.misses <= -kRetryScans) {
            // No listener could be opened there (its loopback was down):
            // forget it, so that this pid meets it afresh.
            known_.erase(it);
            meet(p);
        }
    }
    for (auto it = known_.begin(); it != known_.end();) {
        Entry& e = it->second;
        if (seen.count(it->first) || !e.port4) {
            if (e.port4)
                e.misses = 0;
            if (!e.port4 && !seen.count(it->first)) {
                it = known_.erase(it);
                continue;
            }
            ++it;
            continue;
        }
        // Two scans in a row without a process of the cgroup in it: the
        // container stopped (or left the cgroup).
        if (++e.misses < 2) {
            ++it;
            continue;
        }
        drop(e);
        it = known_.erase(it);
    }
}

void NetnsListeners::meet(pid_t pid)
{
    UniqueFd fd = open_netns_of_pid(pid);
    if (!fd)
        return;  // gone already
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || st.st_ino == host_inode_ || known_.count(st.st_ino))
        return;
    open_in(pid, std::move(fd), st.st_ino);
}

void NetnsListeners::open_in(pid_t pid, UniqueFd fd, uint64_t inode)
{
    auto ns = std::make_shared<Netns>();
    ns->inode = inode;
    std::vector<Listener> ls;
    try {
        NetnsEnter in(fd.get());
        // Ports unique across namespaces: the hand-off map is keyed by the
        // tuple alone (bpf/ktproxy_shared.h, ktp_netns_listener).
        for (int attempt = 0; attempt < 32 && ls.empty(); ++attempt) {
            Listener l4 = listen_tcp(*SockAddr::parse_ip("127.0.0.1", 0), "container listener", false, false,
                                     cfg_.mark);
            uint16_t port = l4.addr.port();
            if (port == cfg_.host_port || ports_.count(port))
                continue;
            ls.push_back(std::move(l4));
        }
        if (ls.empty())
            fail("no port free in all namespaces after 32 tries");
        if (cfg_.want6) {
            // A container without IPv6 (or with that port taken on ::1)
            // keeps its IPv4 listener; its IPv6 connects then go direct.
            try {
                ls.push_back(listen_tcp(*SockAddr::parse_ip("::1", ls[0].addr.port()), "container listener",
                                        false, false, cfg_.mark));
            } catch (const Error& e) {
                log::debug("container namespace of pid {}: no IPv6 listener: {}", pid, e.what());
            }
        }
        ns->cookie = netns_cookie_of(ls[0].fd.get());
    } catch (const Error& e) {
        log::warn("container namespace of pid {}: cannot open ktproxy's listener there ({}); its connects go "
                  "{} until it can (retried every {} ms)",
                  pid, e.what(), "direct (or are refused with --fail-closed)", kScanMs * kRetryScans);
        known_[inode] = Entry{nullptr, 0, 0, 0};
        return;
    }
    ns->fd = std::move(fd);

    ktp_netns_listener v{};
    v.ip4 = htonl(INADDR_LOOPBACK);
    v.port4 = htons(ls[0].addr.port());
    if (ls.size() > 1) {
        ls[1].addr.to_mapped(v.ip6);
        v.port6 = htons(ls[1].addr.port());
        v.flags = KTP_NL_IP6;
    }
    NetnsRef ref = ns;
    for (auto& l : ls) {
        l.netns_cookie = ns->cookie;
        l.egress = cfg_.egress_host ? nullptr : ref;
    }
    const std::string where = ls[0].addr.to_string() + (ls.size() > 1 ? " and " + ls[1].addr.to_string() : "");
    Entry e{ref, ls[0].addr.port(), ls.size() > 1 ? ls[1].addr.port() : uint16_t(0), 0};
    // Listening before the hooks send anything there.
    cfg_.give(std::move(ls));
    if (bpf_map_update_elem(cfg_.map_fd, &ns->cookie, &v, BPF_ANY) != 0) {
        log::warn("container namespace of pid {}: ktp_netns_listeners update: {}; its connects go direct", pid,
                  errno_text(errno));
        cfg_.take_back(ns->cookie);
        return;
    }
    ports_.insert(e.port4);
    {
        known_[inode] = std::move(e);
    }
    log::info("container namespace {} (pid {}): listening on {}, egress {}", ns->cookie, pid, where,
              cfg_.egress_host ? "host" : "container");
}

void NetnsListeners::drop(Entry& e)
{
    bpf_map_delete_elem(cfg_.map_fd, &e.ns->cookie);
    cfg_.take_back(e.ns->cookie);
    ports_.erase(e.port4);
    log::info("container namespace {} gone (no process of the cgroup in it): listener closed", e.ns->cookie);
}

}  // namespace ktp
