// What a worker reports about itself: per-route totals, failures by reason,
// and (on request) its live connections. Read by `ktproxy status` and the
// metrics endpoint through EventLoop::snapshot().
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ktp {

struct RouteStats {
    uint64_t total = 0;   // connections routed this way since start
    uint64_t active = 0;  // currently open
    uint64_t bytes_c2s = 0;
    uint64_t bytes_s2c = 0;
};

struct ConnInfo {
    std::string client, orig, route, domain;
    uint64_t c2s = 0, s2c = 0;
    double age_s = 0;
    // Who connected (pid 0: no process, a gateway connection); comm as
    // comm_text() prints it.
    uint32_t pid = 0, uid = 0;
    std::string comm = "-";
    // The app's network namespace when it is a container's (0: ktproxy's
    // own), and the cgroup ktproxy met it in.
    uint64_t netns = 0;
    std::string container;
};

// A listener of ktproxy's inside a container's namespace.
struct NetnsListenerInfo {
    uint64_t netns = 0;
    std::string cgroup, addr;
    std::string udp;  // ktproxy's UDP relay socket in that namespace; "" when none
};

struct WorkerSnapshot {
    std::map<std::string, RouteStats> routes;
    // key: "route/reason", e.g. "corp/upstream-error", "direct/refused"
    std::map<std::string, uint64_t> failures;
    std::vector<ConnInfo> conns;
    std::vector<NetnsListenerInfo> netns_listeners;
    // Sockets held only in io_uring's fixed-file tables (not in /proc/PID/fd).
    uint64_t fixed_files_in_use = 0;
    // Splice relay pipes: carrying bytes now, and empty ones kept for reuse
    // (each is two fds in /proc/PID/fd).
    uint64_t pipes_in_use = 0;
    uint64_t pipes_pooled = 0;

    void merge(const WorkerSnapshot& o);
};

}  // namespace ktp
