// Rendering what an instance knows about itself: Prometheus text for
// --metrics, and the table / JSON that `ktproxy status` prints.
#pragma once

#include "ops/stats.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ktproxy_shared.h"

namespace ktp {

struct InstanceInfo {
    std::string cgroup;
    std::string listen;  // "127.0.0.1:41234 [::1]:41234"
    // The UDP relay's port (0: UDP not intercepted) and the ready line's
    // words for it, which say why when it is off.
    uint16_t udp_port = 0;
    std::string udp;
    // Times the hooks were attached again to a cgroup removed and created
    // again at the same path (systemctl restart), and when last.
    uint32_t reattached = 0;
    double reattached_ago_s = 0;
    int pid = 0;
    double uptime_s = 0;
    std::array<uint64_t, KTP_CTR_MAX> kernel{};
    uint64_t live_tuples = 0;  // hand-off map entries (socket storage is not countable)
    // SIGHUP reloads since start: applied, and refused (the old rules stayed).
    uint64_t reloads_applied = 0, reloads_refused = 0;
    std::string last_reload_error;  // the newest refusal's line, "" if none
    // Dry run: on now; events the hooks reported, and those the log's rate
    // limit left out (the per-action counts are in `kernel`).
    bool dry_run = false;
    uint64_t dry_run_events = 0, dry_run_unlogged = 0;
    // Each proxy upstream's health (upstream/upstream_health.h); a group
    // member once per group, with the group's name.
    struct UpstreamState {
        std::string name, group;
        bool up = true;
        uint32_t failures = 0;  // in a row
        uint64_t failed_total = 0, retried_total = 0;
    };
    std::vector<UpstreamState> upstreams;
};

std::string render_metrics(const InstanceInfo& info, const WorkerSnapshot& snap);
std::string render_status_text(const InstanceInfo& info, const WorkerSnapshot& snap);
std::string render_status_json(const InstanceInfo& info, const WorkerSnapshot& snap);

// Stable names of the kernel counters, as used in logs and metrics.
const char* kernel_counter_name(int idx);

}  // namespace ktp
