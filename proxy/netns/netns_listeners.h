// ktproxy's listeners inside the network namespaces of the intercepted
// cgroup's processes (containers): 127.0.0.1 there is the container's own
// loopback, so a connect from it is redirected to a listener opened in that
// same namespace (bpf/sock_netns.h). A dedicated thread meets the
// namespaces (a scan of the cgroup tree, at once on an inotify event of the
// tree: a new cgroup, a cgroup's first process or its last; and
// the hooks' ring buffer events for a connect from an unknown one), has
// their listeners made (proxy/netns/netns_broker.h: by the privileged
// helper, the relay cannot enter a namespace), hands them to the workers,
// and drops a namespace's listener and map entry once no process of the
// cgroup is left in it.
#pragma once

#include "base/unique_fd.h"
#include "loop/listener.h"
#include "netns/netns.h"
#include "netns/netns_broker.h"

#include "ktproxy_shared.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

struct ring_buffer;

namespace ktp {

struct NetnsListenersConfig {
    std::string cgroup_path;   // the intercepted cgroup (its whole subtree is scanned)
    uint64_t host_cookie = 0;  // ktproxy's own namespace: served by the host listeners
    uint16_t host_port = 0;    // never used by a namespace listener (hand-off tuples stay unique)
    bool want6 = true;         // also ::1 (where the namespace has it)
    uint32_t mark = 0;         // SO_MARK of the listeners, as the host's
    bool egress_host = false;  // --egress host: connections leave from ktproxy's namespace
    int map_fd = -1;           // ktp_netns_listeners
    int events_fd = -1;        // ktp_netns_events
    int pending_fd = -1;       // ktp_netns_pending: a namespace's entry goes once its listener is up
    NetnsSockets* maker = nullptr;  // finds the namespaces, makes their sockets; outlives the connections
    // Hands a namespace's listeners to a worker / asks the workers to close
    // every listener of a namespace.
    std::function<void(std::vector<Listener>)> give;
    std::function<void(uint64_t)> take_back;
    // UDP on (null: off): hands a namespace's UDP relay sockets (IPv4, and
    // IPv6 or invalid) to the UDP relay / takes them back when it is gone.
    std::function<void(NetnsRef, UniqueFd, UniqueFd)> give_udp;
    std::function<void(uint64_t)> take_back_udp;
};

class NetnsListeners {
public:
    explicit NetnsListeners(NetnsListenersConfig cfg);
    ~NetnsListeners();  // stops the thread, deletes the map entries
    NetnsListeners(const NetnsListeners&) = delete;
    NetnsListeners& operator=(const NetnsListeners&) = delete;

    // Scans once on the calling thread (the namespaces present at start are
    // served before "ready"), then starts the thread.
    void start();

    // How often the cgroup tree is scanned while a container namespace is
    // known: every kScanMs for a second after an event of the tree or the
    // hooks, else every kIdleScanMs. A namespace whose processes all left
    // is dropped after two scans without one.
    static constexpr int kScanMs = 100;
    static constexpr int kIdleScanMs = 1000;

private:
    struct Entry {
        NetnsRef ns;
        uint16_t port4 = 0, port6 = 0;  // 0: no listener (none could be opened)
        int misses = 0;
    };

    void run();
    void scan();
    void open_in(const NetnsFound& f);
    // The namespace's UDP relay sockets (made by the maker) handed to the
    // UDP relay; its port (0: none, why is logged) into v.
    void open_udp_in(const std::shared_ptr<Netns>& ns, ktp_netns_listener& v);
    void drop(Entry& e);
    static int on_event(void* self, void* data, size_t size);

    NetnsListenersConfig cfg_;
    ring_buffer* rb_ = nullptr;
    UniqueFd stop_fd_;  // eventfd
    UniqueFd inotify_;  // the cgroup tree: new cgroups, populated ones
    std::set<std::string> watched_;  // cgroup directories with watches
    std::thread thread_;
    std::map<uint64_t, Entry> known_;  // by cookie; only the thread (or start(), before it) touches it
    std::set<uint16_t> ports_;         // ports of the namespace listeners
    std::shared_ptr<NetnsRefills> refills_;
    bool event_ = false;               // a ring buffer event: scan now
};

}  // namespace ktp
