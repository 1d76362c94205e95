#include "ops/watch.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>

namespace ktp {

namespace {

template <typename T>
bool number(std::string_view s, T& out)
{
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::string who(const WatchConn& c)
{
    return c.pid ? fmt::format("{} {} {}", c.pid, c.comm, c.uid) : "- - -";
}

}  // namespace

std::string render_watch_sample(const WorkerSnapshot& snap)
{
    std::string out;
    for (const auto& c : snap.conns)
        out += fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n", c.client, c.orig, c.route, c.c2s, c.s2c, c.pid,
                           c.comm, c.uid);
    return out;
}

std::vector<WatchConn> parse_watch_sample(std::string_view text)
{
    std::vector<WatchConn> conns;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        std::string_view f[8];
        size_t n = 0;
        while (n < 8) {
            size_t tab = line.find('\t');
            f[n++] = line.substr(0, tab);
            if (tab == std::string_view::npos)
                break;
            line = line.substr(tab + 1);
        }
        WatchConn c;
        if (n != 8 || !number(f[3], c.c2s) || !number(f[4], c.s2c) || !number(f[5], c.pid) || !number(f[7], c.uid))
            continue;
        c.client = f[0];
        c.orig = f[1];
        c.route = f[2];
        c.comm = f[6];
        conns.push_back(std::move(c));
    }
    return conns;
}

std::string render_watch_view(const std::vector<WatchConn>& prev, std::vector<WatchConn> cur, double dt_s, bool tty,
                              std::string_view ts)
{
    std::map<std::pair<std::string_view, std::string_view>, const WatchConn*> before;
    for (const auto& p : prev)
        before[{p.client, p.orig}] = &p;
    const double dt = dt_s > 0 ? dt_s : 1;
    for (auto& c : cur) {
        auto it = before.find({c.client, c.orig});
        uint64_t c2s0 = 0, s2c0 = 0;
        // Counters only grow on one connection; a smaller one is a new
        // connection on a reused address pair.
        if (it != before.end() && it->second->c2s <= c.c2s && it->second->s2c <= c.s2c) {
            c2s0 = it->second->c2s;
            s2c0 = it->second->s2c;
        }
        c.c2s_rate = static_cast<double>(c.c2s - c2s0) / dt;
        c.s2c_rate = static_cast<double>(c.s2c - s2c0) / dt;
    }
    std::stable_sort(cur.begin(), cur.end(), [](const WatchConn& a, const WatchConn& b) {
        return a.c2s_rate + a.s2c_rate > b.c2s_rate + b.s2c_rate;
    });
    std::string out;
    if (!tty) {
        for (const auto& c : cur)
            out += fmt::format("{} client={} orig={} route={} c2s_bps={:.0f} s2c_bps={:.0f} pid={} comm={} uid={}\n",
                               ts, c.client, c.orig, c.route, c.c2s_rate, c.s2c_rate,
                               c.pid ? fmt::to_string(c.pid) : "-", c.pid ? c.comm : "-",
                               c.pid ? fmt::to_string(c.uid) : "-");
        return out;
    }
    out += "\x1b[H\x1b[2J";  // home, clear: one screen per sample
    out += fmt::format("ktproxy status --watch  {}  {} live connections\n", ts, cur.size());
    out += fmt::format("{:<28} {:<28} {:<12} {:>12} {:>12}  {}\n", "CLIENT", "DESTINATION", "ROUTE", "C2S B/S",
                       "S2C B/S", "PID COMM UID");
    for (const auto& c : cur)
        out += fmt::format("{:<28} {:<28} {:<12} {:>12.0f} {:>12.0f}  {}\n", c.client, c.orig, c.route, c.c2s_rate,
                           c.s2c_rate, who(c));
    return out;
}

}  // namespace ktp
