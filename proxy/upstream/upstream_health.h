// What ktproxy knows of each upstream proxy's health, shared by the workers:
// set down for a back-off after it refused, timed out or failed a warm
// session's greeting (the pool's refills are its health probes), up again
// after a success. Upstream groups (--upstream-group) pick their first
// member that is up; status and metrics show each upstream's state.
//
// Failover has to beat the next connection to a dead member, so a member is
// also skipped while merely suspect: one of its idle warm sessions was closed
// by the far end (a restart or kill closes them all at once, half a round
// trip after the fact), until the pool's refill, sent at once, settles it
// either way. And a member's connect is bounded by what its connects usually
// take (connect_bound), not by --connect-timeout: a member that swallows
// SYNs must not hold every connection for the full timeout.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace ktp {

struct UpstreamHealth {
    // How long a failed upstream is skipped before it is tried (probed) again.
    static constexpr std::chrono::seconds kBackoff{3};
    // How long a suspect one is skipped at most if no probe settles it.
    static constexpr std::chrono::seconds kSuspect{1};

    std::atomic<int64_t> down_until{0};     // steady_clock ns; 0 = up
    std::atomic<int64_t> suspect_until{0};  // steady_clock ns; 0 = not suspect
    std::atomic<int64_t> srtt_ns{0};        // smoothed TCP connect time to it; 0 = none seen yet
    std::atomic<uint32_t> failures{0};      // in a row
    std::atomic<uint64_t> failed_total{0}, retried_total{0};
    // Set by the router before it is published: the upstream is a group's
    // member, and its connects are bounded by connect_bound.
    std::atomic<bool> grouped{false};

    static int64_t ns(std::chrono::steady_clock::time_point t)
    {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }
    bool up(std::chrono::steady_clock::time_point now) const
    {
        const int64_t t = ns(now);
        return down_until.load(std::memory_order_relaxed) <= t && suspect_until.load(std::memory_order_relaxed) <= t;
    }
    // When it may be tried again (0: now); a group with every member down
    // picks the soonest.
    int64_t usable_at() const
    {
        return std::max(down_until.load(std::memory_order_relaxed), suspect_until.load(std::memory_order_relaxed));
    }
    void failed(std::chrono::steady_clock::time_point now)
    {
        failures.fetch_add(1, std::memory_order_relaxed);
        failed_total.fetch_add(1, std::memory_order_relaxed);
        down_until.store(ns(now + kBackoff), std::memory_order_relaxed);
    }
    void suspect(std::chrono::steady_clock::time_point now)
    {
        suspect_until.store(ns(now + kSuspect), std::memory_order_relaxed);
    }
    void succeeded()
    {
        if (suspect_until.load(std::memory_order_relaxed) != 0)
            suspect_until.store(0, std::memory_order_relaxed);
        if (failures.load(std::memory_order_relaxed) == 0)
            return;  // the common case: no write to a shared line
        failures.store(0, std::memory_order_relaxed);
        down_until.store(0, std::memory_order_relaxed);
    }
    // A TCP connect to it took d (a sample for connect_bound).
    void connected_in(std::chrono::steady_clock::duration d)
    {
        const int64_t x = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
        const int64_t s = srtt_ns.load(std::memory_order_relaxed);
        srtt_ns.store(s == 0 ? x : s + (x - s) / 8, std::memory_order_relaxed);
    }
    // How long a connect to a group member may take before the connection
    // goes to the next member: twice its usual connect time plus a margin
    // for a loaded host, at least kMinBound, at most the configured timeout;
    // one second before any connect was seen (TCP's first SYN retransmission
    // comes then: a member that needs it is as good as down).
    double connect_bound(double configured) const
    {
        if (!grouped.load(std::memory_order_relaxed))
            return configured;
        const int64_t s = srtt_ns.load(std::memory_order_relaxed);
        const double b = s == 0 ? 1.0 : std::max(kMinBound, 2e-9 * static_cast<double>(s) + kMargin);
        return std::min(configured, b);
    }
    static constexpr double kMinBound = 0.1, kMargin = 0.05;  // seconds
};

}  // namespace ktp
