// `ktproxy status --watch`: each second the instance sends its live
// connections as lines (render_watch_sample), and the client turns two
// samples into rates (render_watch_view). Pure: unit-tested.
#pragma once

#include "ops/stats.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ktp {

// One connection per line, tab-separated: client, orig, route, c2s, s2c,
// pid, comm, uid. Tabs cannot occur in any of them (comm is comm_text()'s).
std::string render_watch_sample(const WorkerSnapshot& snap);

struct WatchConn {
    std::string client, orig, route, comm;
    uint64_t c2s = 0, s2c = 0;
    uint32_t pid = 0, uid = 0;
    double c2s_rate = 0, s2c_rate = 0;  // bytes per second since the previous sample
};

// Parses a sample; lines that do not parse are skipped.
std::vector<WatchConn> parse_watch_sample(std::string_view text);

// Rates against prev over dt_s (a connection new since then: its bytes over
// dt_s), sorted by total rate, highest first. tty: a screen (clear, header,
// aligned columns); otherwise one plain key=value line per connection,
// prefixed with the time stamp ts.
std::string render_watch_view(const std::vector<WatchConn>& prev, std::vector<WatchConn> cur, double dt_s, bool tty,
                              std::string_view ts);

}  // namespace ktp
