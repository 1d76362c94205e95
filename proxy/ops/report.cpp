// Prometheus exposition (text format 0.0.4) and status rendering.
#include "ops/report.h"

#include "base/json.h"

#include <fmt/format.h>

#include <algorithm>

#include <iterator>
#include <set>

namespace ktp {

const char* kernel_counter_name(int idx)
{
    // Sized by its names: a counter added to enum ktp_counter without one
    // fails to build here, instead of handing fmt a null name at run time.
    static constexpr const char* names[] = {
        "redirected", "skipped_mark", "skipped_netns", "skipped_local", "orig_dst_answered",
        "orig_dst_missed", "map_full", "bypassed", "blocked", "gw_assigned", "gw_no_listener",
        "no_listener", "skipped_bound", "dry_run_redirect", "dry_run_block", "dry_run_pass", "dry_run_refuse",
        "dry_run_events_lost", "udp_redirected", "udp_no_relay", "udp_map_full", "foreign_mark", "refused_bound",
        "refused_unscanned",
    };
    static_assert(std::size(names) == KTP_CTR_MAX, "every enum ktp_counter needs a name here");
    return idx >= 0 && idx < KTP_CTR_MAX ? names[idx] : "?";
}

namespace {

std::string label(std::string_view v)
{
    // Prometheus label values escape backslash, quote and newline like JSON.
    return json_escape(v);
}

}  // namespace

std::string render_metrics(const InstanceInfo& info, const WorkerSnapshot& snap)
{
    std::string out;
    auto head = [&](const char* name, const char* type, const char* help) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    };
    head("ktproxy_connections_total", "counter", "Connections handled by the proxy, by route.");
    for (const auto& [route, r] : snap.routes)
        out += fmt::format("ktproxy_connections_total{{route=\"{}\"}} {}\n", label(route), r.total);
    head("ktproxy_connections_active", "gauge", "Connections open now, by route.");
    for (const auto& [route, r] : snap.routes)
        out += fmt::format("ktproxy_connections_active{{route=\"{}\"}} {}\n", label(route), r.active);
    head("ktproxy_bytes_total", "counter", "Bytes relayed, by route and direction.");
    for (const auto& [route, r] : snap.routes) {
        out += fmt::format("ktproxy_bytes_total{{route=\"{}\",direction=\"client_to_server\"}} {}\n", label(route),
                           r.bytes_c2s);
        out += fmt::format("ktproxy_bytes_total{{route=\"{}\",direction=\"server_to_client\"}} {}\n", label(route),
                           r.bytes_s2c);
    }
    head("ktproxy_connection_failures_total", "counter",
         "Connections that did not end in a clean close, by route and reason (upstream-error, refused, timeout, "
         "reset, blocked, idle, error).");
    for (const auto& [key, n] : snap.failures) {
        auto slash = key.find('/');
        out += fmt::format("ktproxy_connection_failures_total{{route=\"{}\",reason=\"{}\"}} {}\n",
                           label(key.substr(0, slash)), label(key.substr(slash + 1)), n);
    }
    head("ktproxy_kernel_events_total", "counter", "Decisions of the BPF socket hooks.");
    for (int i = 0; i < KTP_CTR_MAX; ++i)
        out += fmt::format("ktproxy_kernel_events_total{{event=\"{}\"}} {}\n", kernel_counter_name(i), info.kernel[i]);
    head("ktproxy_kernel_map_entries", "gauge",
         "Entries in the hand-off map of the BPF hooks (connections between the app's handshake and ktproxy's).");
    out += fmt::format("ktproxy_kernel_map_entries{{map=\"tuples\"}} {}\n", info.live_tuples);
    head("ktproxy_fixed_files_in_use", "gauge", "Relayed sockets held in io_uring fixed-file tables.");
    out += fmt::format("ktproxy_fixed_files_in_use {}\n", snap.fixed_files_in_use);
    head("ktproxy_relay_pipes", "gauge", "Pipes of the splice relay: carrying bytes, or kept empty for reuse.");
    out += fmt::format("ktproxy_relay_pipes{{state=\"in_use\"}} {}\n", snap.pipes_in_use);
    out += fmt::format("ktproxy_relay_pipes{{state=\"pooled\"}} {}\n", snap.pipes_pooled);
    head("ktproxy_config_reloads_total", "counter",
         "SIGHUP reloads: applied, or refused (bad configuration; the rules in force stayed).");
    out += fmt::format("ktproxy_config_reloads_total{{result=\"applied\"}} {}\n", info.reloads_applied);
    out += fmt::format("ktproxy_config_reloads_total{{result=\"refused\"}} {}\n", info.reloads_refused);
    head("ktproxy_dry_run", "gauge", "1 while the connect hooks only decide and report (dry run), else 0.");
    out += fmt::format("ktproxy_dry_run {}\n", info.dry_run ? 1 : 0);
    head("ktproxy_dry_run_events_total", "counter",
         "Dry-run events read from the hooks, by whether the log's rate limit let them through (counts per action: "
         "ktproxy_kernel_events_total{event=~\"dry_run_.*\"}).");
    out += fmt::format("ktproxy_dry_run_events_total{{logged=\"yes\"}} {}\n", info.dry_run_events - info.dry_run_unlogged);
    out += fmt::format("ktproxy_dry_run_events_total{{logged=\"no\"}} {}\n", info.dry_run_unlogged);
    head("ktproxy_upstream_up", "gauge",
         "1 while an upstream proxy is up, 0 while it is skipped after a failure; group members carry the group.");
    for (const auto& u : info.upstreams)
        out += fmt::format("ktproxy_upstream_up{{upstream=\"{}\",group=\"{}\"}} {}\n", label(u.name), label(u.group),
                           u.up ? 1 : 0);
    head("ktproxy_upstream_failures_total", "counter",
         "Setup failures counted against an upstream (refused, timed out, failed greeting or health probe).");
    for (const auto& u : info.upstreams)
        if (u.group.empty())
            out += fmt::format("ktproxy_upstream_failures_total{{upstream=\"{}\"}} {}\n", label(u.name), u.failed_total);
    head("ktproxy_upstream_group_retries_total", "counter",
         "Connections set up again on a group's next member after the first failed before any byte reached the app.");
    for (const auto& u : info.upstreams)
        if (!u.group.empty() && u.name == u.group)
            out += fmt::format("ktproxy_upstream_group_retries_total{{group=\"{}\"}} {}\n", label(u.name),
                               u.retried_total);
    head("ktproxy_uptime_seconds", "gauge", "Seconds since this ktproxy started.");
    out += fmt::format("ktproxy_uptime_seconds {:.0f}\n", info.uptime_s);
    return out;
}

std::string render_status_text(const InstanceInfo& info, const WorkerSnapshot& snap)
{
    std::string out = fmt::format("ktproxy pid {} cgroup {} listening {} up {:.0f}s\n", info.pid, info.cgroup,
                                  info.listen, info.uptime_s);
    if (info.reattached > 0)
        out += fmt::format("hooks re-attached {} times (cgroup removed and created again), last {:.0f}s ago\n",
                           info.reattached, info.reattached_ago_s);
    out += "kernel:";
    for (int i = 0; i < KTP_CTR_MAX; ++i)
        out += fmt::format(" {}={}", kernel_counter_name(i), info.kernel[i]);
    out += fmt::format(" live_tuples={}\n", info.live_tuples);
    out += fmt::format("reloads: applied={} refused={}{}\n", info.reloads_applied, info.reloads_refused,
                       info.last_reload_error.empty() ? "" : " last refusal: " + info.last_reload_error);
    out += fmt::format("dry-run: {} events={} unlogged={}\n", info.dry_run ? "on" : "off", info.dry_run_events,
                       info.dry_run_unlogged);
    out += fmt::format("udp: {}\n", info.udp);
    for (const auto& [route, r] : snap.routes)
        out += fmt::format("route {}: total={} active={} c2s={} s2c={}\n", route, r.total, r.active, r.bytes_c2s,
                           r.bytes_s2c);
    for (const auto& u : info.upstreams) {
        if (u.name == u.group)
            out += fmt::format("group {}: retried={}\n", u.name, u.retried_total);
        else
            out += fmt::format("upstream {}{}: {} failures={} failed_total={}\n", u.name,
                               u.group.empty() ? "" : " (group " + u.group + ")", u.up ? "up" : "down", u.failures,
                               u.failed_total);
    }
    auto conns = snap.conns;
    std::sort(conns.begin(), conns.end(), [](const ConnInfo& a, const ConnInfo& b) { return a.age_s > b.age_s; });
    out += fmt::format("{} live connections, {} sockets in fixed-file tables, relay pipes {} in use {} pooled\n",
                       conns.size(), snap.fixed_files_in_use, snap.pipes_in_use, snap.pipes_pooled);
    if (!conns.empty())
        out += fmt::format("{:<28} {:<28} {:<12} {:>12} {:>12} {:>9} {:>8} {:<16} {:>6}  {:<24} {}\n", "CLIENT",
                           "DESTINATION", "ROUTE", "C2S", "S2C", "AGE", "PID", "COMM", "UID", "DOMAIN", "NETNS");
    for (const auto& c : conns)
        out += fmt::format("{:<28} {:<28} {:<12} {:>12} {:>12} {:>8.1f}s {:>8} {:<16} {:>6}  {:<24} {}\n", c.client,
                           c.orig, c.route, c.c2s, c.s2c, c.age_s, c.pid ? fmt::to_string(c.pid) : "-", c.comm,
                           c.pid ? fmt::to_string(c.uid) : "-", c.domain.empty() ? "-" : c.domain,
                           c.netns ? fmt::format("{} {}", c.netns, c.container) : "-");
    // Listeners inside containers' namespaces (a worker each; shown once).
    std::set<std::pair<uint64_t, std::string>> seen;
    for (const auto& l : snap.netns_listeners)
        if (seen.emplace(l.netns, l.addr).second)
            out += fmt::format("container netns {} cgroup {} listening {}{}\n", l.netns, l.cgroup, l.addr,
                               l.udp.empty() ? "" : " udp relay " + l.udp);
    return out;
}

std::string render_status_json(const InstanceInfo& info, const WorkerSnapshot& snap)
{
    std::string out = fmt::format(
        "{{\"pid\":{},\"cgroup\":\"{}\",\"listen\":\"{}\",\"udp_port\":{},\"udp\":\"{}\",\"uptime_s\":{:.3f},"
        "\"reattached\":{},\"kernel\":{{",
        info.pid, json_escape(info.cgroup), json_escape(info.listen), info.udp_port, json_escape(info.udp),
        info.uptime_s, info.reattached);
    for (int i = 0; i < KTP_CTR_MAX; ++i)
        out += fmt::format("{}\"{}\":{}", i ? "," : "", kernel_counter_name(i), info.kernel[i]);
    out += fmt::format(",\"live_tuples\":{}}},\"reloads_applied\":{},\"reloads_refused\":{},"
                       "\"last_reload_error\":\"{}\",\"fixed_files_in_use\":{},\"pipes_in_use\":{},"
                       "\"pipes_pooled\":{},\"dry_run\":{},\"dry_run_events\":{},\"dry_run_unlogged\":{},"
                       "\"routes\":{{",
                       info.live_tuples, info.reloads_applied, info.reloads_refused,
                       json_escape(info.last_reload_error), snap.fixed_files_in_use, snap.pipes_in_use,
                       snap.pipes_pooled, info.dry_run, info.dry_run_events, info.dry_run_unlogged);
    bool first = true;
    for (const auto& [route, r] : snap.routes) {
        out += fmt::format("{}\"{}\":{{\"total\":{},\"active\":{},\"c2s\":{},\"s2c\":{}}}", first ? "" : ",",
                           json_escape(route), r.total, r.active, r.bytes_c2s, r.bytes_s2c);
        first = false;
    }
    out += "},\"upstreams\":[";
    first = true;
    for (const auto& u : info.upstreams) {
        if (u.name == u.group)
            continue;
        out += fmt::format("{}{{\"name\":\"{}\",\"group\":\"{}\",\"state\":\"{}\",\"failures\":{},\"failed_total\":{}}}",
                           first ? "" : ",", json_escape(u.name), json_escape(u.group), u.up ? "up" : "down",
                           u.failures, u.failed_total);
        first = false;
    }
    out += "],\"connections\":[";
    first = true;
    for (const auto& c : snap.conns) {
        out += fmt::format(
            "{}{{\"client\":\"{}\",\"orig\":\"{}\",\"route\":\"{}\",\"domain\":\"{}\",\"c2s\":{},\"s2c\":{},"
            "\"age_s\":{:.3f},\"pid\":{},\"comm\":{},\"uid\":{},\"netns\":{},\"container\":{}}}",
            first ? "" : ",", json_escape(c.client), json_escape(c.orig), json_escape(c.route),
            json_escape(c.domain), c.c2s, c.s2c, c.age_s, c.pid ? fmt::to_string(c.pid) : "null",
            c.pid ? "\"" + json_escape(c.comm) + "\"" : "null", c.pid ? fmt::to_string(c.uid) : "null",
            c.netns ? fmt::to_string(c.netns) : "null",
            c.netns ? "\"" + json_escape(c.container) + "\"" : "null");
        first = false;
    }
    out += "],\"netns_listeners\":[";
    first = true;
    std::set<std::pair<uint64_t, std::string>> shown;
    for (const auto& l : snap.netns_listeners) {
        if (!shown.emplace(l.netns, l.addr).second)
            continue;
        out += fmt::format("{}{{\"netns\":{},\"cgroup\":\"{}\",\"listen\":\"{}\",\"udp\":{}}}", first ? "" : ",",
                           l.netns, json_escape(l.cgroup), json_escape(l.addr),
                           l.udp.empty() ? std::string("null") : "\"" + json_escape(l.udp) + "\"");
        first = false;
    }
    out += "]}\n";
    return out;
}

}  // namespace ktp
