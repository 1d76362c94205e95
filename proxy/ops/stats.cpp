// Merging worker snapshots into one process-wide view.
#include "ops/stats.h"

namespace ktp {

void WorkerSnapshot::merge(const WorkerSnapshot& o)
{
    for (const auto& [name, r] : o.routes) {
        auto& mine = routes[name];
        mine.total += r.total;
        mine.active += r.active;
        mine.bytes_c2s += r.bytes_c2s;
        mine.bytes_s2c += r.bytes_s2c;
    }
    for (const auto& [key, n] : o.failures)
        failures[key] += n;
    conns.insert(conns.end(), o.conns.begin(), o.conns.end());
    netns_listeners.insert(netns_listeners.end(), o.netns_listeners.begin(), o.netns_listeners.end());
    fixed_files_in_use += o.fixed_files_in_use;
    pipes_in_use += o.pipes_in_use;
    pipes_pooled += o.pipes_pooled;
}

}  // namespace ktp
