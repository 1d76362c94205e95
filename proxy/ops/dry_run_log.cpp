// Formatting and rate limiting of the dry run's event lines.
#include "ops/dry_run_log.h"

#include "base/json.h"
#include "base/log.h"
#include "base/sock_addr.h"
#include "tcp/conn_proc.h"

#include <fmt/format.h>

#include <cstring>

namespace ktp {
namespace {

const char* action_name(uint32_t a)
{
    switch (a) {
    case KTP_ACT_DIRECT: return "direct";
    case KTP_ACT_BLOCK: return "block";
    case KTP_ACT_PROXY: return "proxy";
    }
    return "?";
}

SockAddr destination(const ktp_dry_event& ev)
{
    ktp_orig_dst od{};
    std::memcpy(od.addr, ev.addr, sizeof(od.addr));
    od.port = ev.port;
    od.family = ev.family;
    return SockAddr::from_orig_dst(od);
}

// The comm as one token, as the connection log prints it.
std::string comm_of(const ktp_dry_event& ev)
{
    ConnProc p;
    p.pid = ev.pid ? ev.pid : 1;  // comm_text prints "-" for an unknown process
    std::memcpy(p.comm, ev.comm, sizeof(p.comm));
    return std::string(comm_text(p).view());
}

// The rule as written, or "" for the default / an index the rules do not have
// (they were reloaded between the decision and this line).
std::string rule_text(const ktp_dry_event& ev, const std::vector<Rule>* rules)
{
    if (!rules || ev.rule == KTP_RULE_DEFAULT || ev.rule >= rules->size())
        return {};
    return (*rules)[ev.rule].text;
}

std::string rule_number(const ktp_dry_event& ev)
{
    // 1-based, as docs/rules.md and the reload errors number rules.
    return ev.rule == KTP_RULE_DEFAULT ? "default" : fmt::to_string(ev.rule + 1);
}

}  // namespace

const char* would_name(uint32_t would)
{
    switch (would) {
    case KTP_WOULD_PASS: return "pass";
    case KTP_WOULD_BLOCK: return "block";
    case KTP_WOULD_REDIRECT: return "redirect";
    case KTP_WOULD_REFUSE: return "refuse";
    }
    return "?";
}

std::string format_dry_event_text(const ktp_dry_event& ev, const std::vector<Rule>* rules)
{
    std::string text = rule_text(ev, rules);
    return fmt::format("would={} dst={} rule={} action={} pid={} tid={} uid={} comm={} cgroup={}{}",
                       would_name(ev.would), destination(ev).to_string(), rule_number(ev), action_name(ev.action),
                       ev.pid, ev.tid, ev.uid, comm_of(ev), ev.cgroup_id,
                       text.empty() ? "" : fmt::format(" rule_text=\"{}\"", json_escape(text)));
}

std::string format_dry_event_json(const ktp_dry_event& ev, const std::vector<Rule>* rules)
{
    return fmt::format("\"would\":\"{}\",\"dst\":\"{}\",\"rule\":{},\"action\":\"{}\",\"rule_text\":\"{}\","
                       "\"pid\":{},\"tid\":{},\"uid\":{},\"comm\":\"{}\",\"cgroup\":{}",
                       would_name(ev.would), destination(ev).to_string(),
                       ev.rule == KTP_RULE_DEFAULT ? std::string("null") : fmt::to_string(ev.rule + 1),
                       action_name(ev.action), json_escape(rule_text(ev, rules)), ev.pid, ev.tid, ev.uid,
                       comm_of(ev), ev.cgroup_id);
}

void DryRunLog::on_event(const ktp_dry_event& ev, const std::vector<Rule>* rules, Clock::time_point now)
{
    ++events_;
    roll(now);
    if (logged_in_window_ >= per_second_) {
        ++unlogged_in_window_;
        ++unlogged_;
        return;
    }
    ++logged_in_window_;
    if (!log::enabled(log::Level::info))
        return;
    if (log::json())
        log::write_event(log::Level::info, "dry_run", format_dry_event_json(ev, rules));
    else
        log::info("dry-run {}", format_dry_event_text(ev, rules));
}

void DryRunLog::tick(Clock::time_point now, uint64_t lost_total)
{
    if (lost_total > lost_seen_) {
        log::warn("dry-run: {} events lost, the ring buffer was full (counter dry_run_events_lost); the counts "
                  "per action are still exact",
                  lost_total - lost_seen_);
        lost_seen_ = lost_total;
    }
    roll(now);
}

void DryRunLog::roll(Clock::time_point now)
{
    if (now - window_start_ < std::chrono::seconds(1))
        return;
    if (unlogged_in_window_ > 0)
        log::warn("dry-run: {} events not logged in the last second (at most {} lines a second); the counts per "
                  "action are in `ktproxy status`",
                  unlogged_in_window_, per_second_);
    window_start_ = now;
    logged_in_window_ = 0;
    unlogged_in_window_ = 0;
}

}  // namespace ktp
