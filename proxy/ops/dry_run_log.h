// The log of the dry run: one line per event the connect hooks reported
// (what a connect would have become, which rule said so, who made it), at
// most `per_second` lines a second; past that, events are counted and one
// summary line says how many went unlogged.
#pragma once

#include "route/rules.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "ktproxy_shared.h"

namespace ktp {

// "redirect", "block", "pass", "refuse" (enum ktp_would).
const char* would_name(uint32_t would);

// The event's fields: text "would=... dst=... rule=... pid=... ..." for the
// text log, or JSON members (no braces) for --log-format json. rules: the
// rules in force, to name the one that matched (nullptr: index only).
std::string format_dry_event_text(const ktp_dry_event& ev, const std::vector<Rule>* rules);
std::string format_dry_event_json(const ktp_dry_event& ev, const std::vector<Rule>* rules);

class DryRunLog {
public:
    using Clock = std::chrono::steady_clock;
    explicit DryRunLog(uint32_t per_second = 100) : per_second_(per_second) {}

    // Logs the event at info level, or counts it once this second's lines are used up.
    void on_event(const ktp_dry_event& ev, const std::vector<Rule>* rules, Clock::time_point now);
    // Logs how many events the ring buffer lost since the last call
    // (lost_total: the kernel's dry_run_events_lost counter), and ends the
    // second if it is over (with how many events went unlogged in it).
    // Called about once a second.
    void tick(Clock::time_point now, uint64_t lost_total);
    // A tick is due (there is something to summarise): the caller's poll
    // then wakes within a second.
    bool pending() const { return unlogged_in_window_ > 0; }

    uint64_t events() const { return events_; }
    uint64_t unlogged() const { return unlogged_; }

private:
    // Starts a new second once the current one is over, logging the
    // summary of the one that ended.
    void roll(Clock::time_point now);

    uint32_t per_second_;
    Clock::time_point window_start_{};
    uint32_t logged_in_window_ = 0;
    uint64_t unlogged_in_window_ = 0;
    uint64_t events_ = 0, unlogged_ = 0;
    uint64_t lost_seen_ = 0;
};

}  // namespace ktp
