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

constexpr int kRetryScans = 10;  // a namespace without a usable loopback is tried again after this many scans

}  // namespace

NetnsListeners::NetnsListeners(NetnsListenersConfig cfg) : cfg_(std::move(cfg))
{
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_)
        fail_errno("eventfd for the namespace listeners' thread");
    // A new cgroup (mkdir) and a cgroup's first process (cgroup.events
    // "populated") wake the thread at once: a container runtime does both
    // when it starts a container.
    inotify_ = UniqueFd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!inotify_)
        fail_errno("inotify for the cgroup tree");
    refills_ = std::make_shared<NetnsRefills>();
    if (!refills_->event)
        fail_errno("eventfd for the containers' socket refills");
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
    for (auto& [cookie, e] : known_)
        if (e.port4)
            bpf_map_delete_elem(cfg_.map_fd, &cookie);
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

int NetnsListeners::on_event(void* self, void* /*data*/, size_t size)
{
    if (size >= sizeof(ktp_netns_event))
        static_cast<NetnsListeners*>(self)->event_ = true;
    return 0;
}

void NetnsListeners::run()
{
    pollfd fds[4] = {{ring_buffer__epoll_fd(rb_), POLLIN, 0},
                     {stop_fd_.get(), POLLIN, 0},
                     {inotify_.get(), POLLIN, 0},
                     {refills_->event.get(), POLLIN, 0}};
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
        int n = ::poll(fds, 4, wait_ms);
        if (n < 0 && errno != EINTR)
            fail_errno("poll");
        if (fds[1].revents)
            return;
        if (n > 0 && fds[3].revents)
            for (auto& w : refills_->take())
                if (auto ns = w.lock())
                    ns->refill();
        if (n > 0 && fds[0].revents) {
            // A connect from a namespace without a listener: serve it now,
            // not at the next scan (one scan for a burst of events).
            event_ = false;
            ring_buffer__consume(rb_);
            if (event_) {
                next_scan = std::chrono::steady_clock::now();
                busy_until = next_scan + std::chrono::seconds(1);
            }
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
            // Every 100 ms for a second after an event (a container
            // starting or stopping shows in cgroup.events, a new namespace
            // in the hooks' ring); else once a second, for what announces
            // itself nowhere (a namespace left while its cgroup stays).
            const auto now = std::chrono::steady_clock::now();
            next_scan = now + std::chrono::milliseconds(now < busy_until ? kScanMs : kIdleScanMs);
        }
    }
}

void NetnsListeners::scan()
{
    // The tree's directories for inotify; --cgroup-match's set is kept by
    // the maker's scan below.
    std::set<std::string> dirs = cgroup_tree_dirs(cfg_.cgroup_path);
    for (const auto& d : dirs)
        if (!watched_.count(d)) {
            // A removed directory drops its watches by itself.
            inotify_add_watch(inotify_.get(), d.c_str(), IN_CREATE | IN_ONLYDIR);
            inotify_add_watch(inotify_.get(), (d + "/cgroup.events").c_str(), IN_MODIFY);
        }
    watched_ = std::move(dirs);
    std::vector<NetnsFound> found;
    try {
        found = cfg_.maker->scan();
    } catch (const Error& e) {
        // The helper is gone (or finished: the instance is stopping); the
        // supervisor says so and stops the instance.
        log::debug("container namespaces: {}", e.what());
        return;
    }
    std::set<uint64_t> seen;
    for (const NetnsFound& f : found) {
        seen.insert(f.cookie);
        auto it = known_.find(f.cookie);
        if (it == known_.end()) {
            open_in(f);
        } else if (!it->second.port4 && --it->second.misses <= -kRetryScans) {
            // No listener could be opened there (its loopback was down):
            // try again.
            known_.erase(it);
            open_in(f);
        }
    }
    for (auto it = known_.begin(); it != known_.end();) {
        Entry& e = it->second;
        if (seen.count(it->first)) {
            if (e.port4)
                e.misses = 0;
            ++it;
            continue;
        }
        if (!e.port4) {
            it = known_.erase(it);
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

void NetnsListeners::open_in(const NetnsFound& f)
{
    auto ns = std::make_shared<Netns>(f.cookie, f.cgroup, cfg_.maker);
    std::vector<Listener> ls;
    auto listener = [&](NetnsSocketKind kind, uint16_t port) {
        Listener l;
        l.fd = std::move(cfg_.maker->make(f.cookie, kind, port, 1).at(0));
        l.addr = SockAddr::local_of(l.fd.get());
        return l;
    };
    try {
        // Ports unique across namespaces: the hand-off map is keyed by the
        // tuple alone (bpf/ktproxy_shared.h, ktp_netns_listener).
        for (int attempt = 0; attempt < 32 && ls.empty(); ++attempt) {
            Listener l4 = listener(NetnsSocketKind::listen4, 0);
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
                ls.push_back(listener(NetnsSocketKind::listen6, ls[0].addr.port()));
            } catch (const Error& e) {
                log::debug("container namespace {}: no IPv6 listener: {}", f.cookie, e.what());
            }
        }
        if (netns_cookie_of(ls[0].fd.get()) != f.cookie)
            fail("the listener is not in namespace {}", f.cookie);
    } catch (const Error& e) {
        log::warn("container namespace {} (cgroup {}): cannot open ktproxy's listener there ({}); its connects "
                  "are refused until it can (retried every {} ms; passed after a few seconds without --fail-closed)",
                  f.cookie, f.cgroup, e.what(), kScanMs * kRetryScans);
        known_[f.cookie] = Entry{nullptr, 0, 0, 0};
        return;
    }
    ns->refills = refills_;
    ns->listen4 = ls[0].addr;
    if (ls.size() > 1)
        ns->listen6 = ls[1].addr;

    ktp_netns_listener v{};
    v.ip4 = htonl(INADDR_LOOPBACK);
    v.port4 = htons(ls[0].addr.port());
    if (ls.size() > 1) {
        ls[1].addr.to_mapped(v.ip6);
        v.port6 = htons(ls[1].addr.port());
        v.flags = KTP_NL_IP6;
    }
    // UDP: its relay socket is up (and handed over) before the map entry
    // sends the namespace's datagrams to it.
    if (cfg_.give_udp)
        open_udp_in(ns, v);
    NetnsRef ref = ns;
    for (auto& l : ls) {
        l.netns_cookie = ns->cookie;
        l.ns = ref;
        l.egress = cfg_.egress_host ? nullptr : ref;
    }
    const std::string where = ls[0].addr.to_string() + (ls.size() > 1 ? " and " + ls[1].addr.to_string() : "");
    Entry e{ref, ls[0].addr.port(), ls.size() > 1 ? ls[1].addr.port() : uint16_t(0), 0};
    // Listening before the hooks send anything there.
    cfg_.give(std::move(ls));
    if (bpf_map_update_elem(cfg_.map_fd, &ns->cookie, &v, BPF_ANY) != 0) {
        log::warn("container namespace {}: ktp_netns_listeners update: {}; its connects go direct", f.cookie,
                  errno_text(errno));
        cfg_.take_back(ns->cookie);
        if (cfg_.take_back_udp)
            cfg_.take_back_udp(ns->cookie);
        return;
    }
    if (cfg_.pending_fd >= 0)
        bpf_map_delete_elem(cfg_.pending_fd, &ns->cookie);
    ports_.insert(e.port4);
    known_[f.cookie] = std::move(e);
    log::info("container namespace {} (cgroup {}): listening on {}, egress {}; {}", ns->cookie, f.cgroup, where,
              cfg_.egress_host ? "host" : "container",
              v.udp_port ? fmt::format("UDP relay on {}{}", ns->udp_relay,
                                        (v.flags & KTP_NL_UDP6) ? fmt::format(" and [::1]:{}", ns->udp_relay.port()) : "")
              : cfg_.give_udp ? std::string("no UDP relay (its datagrams to relay are refused; without --fail-closed passed after 3 s)")
                              : std::string("UDP not intercepted (--no-udp)"));
}

void NetnsListeners::open_udp_in(const std::shared_ptr<Netns>& ns, ktp_netns_listener& v)
{
    UniqueFd fd4, fd6;
    try {
        fd4 = std::move(cfg_.maker->make(ns->cookie, NetnsSocketKind::udp4, 0, 1).at(0));
        if (netns_cookie_of(fd4.get()) != ns->cookie)
            fail("the UDP relay socket is not in namespace {}", ns->cookie);
        // Its first flows' sockets (and an association's control socket)
        // ready before the first datagram: the UDP relay's thread never
        // waits for the helper.
        // A few where fewer are needed (the first take asks for a refill).
        ns->prime(AF_INET, true);
        if (!cfg_.egress_host)
            ns->prime(AF_INET, false, 4);  // an association's control connection
        (void)ns->diag_lookup(IPPROTO_UDP, SockAddr::local_of(fd4.get()), SockAddr::local_of(fd4.get()));
    } catch (const Error& e) {
        log::warn("container namespace {}: no UDP relay socket there ({}); its datagrams to relay are refused (without --fail-closed, passed after 3 s)",
                  ns->cookie, e.what());
        return;
    }
    const uint16_t port = SockAddr::local_of(fd4.get()).port();
    if (v.flags & KTP_NL_IP6) {
        try {
            fd6 = std::move(cfg_.maker->make(ns->cookie, NetnsSocketKind::udp6, port, 1).at(0));
            ns->prime(AF_INET6, true, 4);
            v.flags |= KTP_NL_UDP6;
        } catch (const Error& e) {
            fd6.reset();
            log::debug("container namespace {}: no IPv6 UDP relay socket: {}", ns->cookie, e.what());
        }
    }
    ns->udp_relay = *SockAddr::parse_ip("127.0.0.1", port);
    v.udp_port = htons(port);
    cfg_.give_udp(ns, std::move(fd4), std::move(fd6));
}

void NetnsListeners::drop(Entry& e)
{
    bpf_map_delete_elem(cfg_.map_fd, &e.ns->cookie);
    if (cfg_.pending_fd >= 0)
        bpf_map_delete_elem(cfg_.pending_fd, &e.ns->cookie);
    cfg_.take_back(e.ns->cookie);
    if (cfg_.take_back_udp)
        cfg_.take_back_udp(e.ns->cookie);
    ports_.erase(e.port4);
    log::info("container namespace {} gone (no process of the cgroup in it): listener closed", e.ns->cookie);
}

}  // namespace ktp
