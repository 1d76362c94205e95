// What ktproxy knows of each upstream proxy's health, shared by the workers:
// set down for a back-off after it refused, timed out or failed a warm
// session's greeting (the pool's refills are its health probes), up again
// after a success. Upstream groups (--upstream-group) pick their first
// member that is up; status and metrics show each upstream's state.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace ktp {

struct UpstreamHealth {
    // How long a failed upstream is skipped before it is tried (probed) again.
    static constexpr std::chrono::seconds kBackoff{3};

    std::atomic<int64_t> down_until{0};  // steady_clock ns; 0 = up
    std::atomic<uint32_t> failures{0};   // in a row
    std::atomic<uint64_t> failed_total{0}, retried_total{0};

    static int64_t ns(std::chrono::steady_clock::time_point t)
    {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }
    bool up(std::chrono::steady_clock::time_point now) const
    {
        return down_until.load(std::memory_order_relaxed) <= ns(now);
    }
    void failed(std::chrono::steady_clock::time_point now)
    {
        failures.fetch_add(1, std::memory_order_relaxed);
        failed_total.fetch_add(1, std::memory_order_relaxed);
        down_until.store(ns(now + kBackoff), std::memory_order_relaxed);
    }
    void succeeded()
    {
        if (failures.load(std::memory_order_relaxed) == 0)
            return;  // the common case: no write to a shared line
        failures.store(0, std::memory_order_relaxed);
        down_until.store(0, std::memory_order_relaxed);
    }
};

}  // namespace ktp
