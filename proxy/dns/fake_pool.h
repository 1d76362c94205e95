// Fake addresses (--dns-mode fake): ktproxy answers A/AAAA queries for names
// its rules send to a proxy upstream with addresses of its own from reserved
// ranges, one per name, so that the name is resolved only at the upstream
// and a later connect to the address is routed by the name. The table is
// bounded (kCapacity names); the least recently used name gives its address
// up to a new one only once no connect has used it for kHold; a connect to an
// address the table does not hold is refused by the caller, never sent on.
// Shared by the DNS forwarder (allocates, for UDP and TCP queries) and the
// TCP workers (look up): one mutex.
#pragma once

#include "base/sock_addr.h"
#include "dns/dns_message.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace ktp {

class FakePool {
public:
    static constexpr size_t kCapacity = 65536;
    static constexpr std::chrono::seconds kHold{600};
    static constexpr uint32_t kTtl = 1;  // seconds: apps ask again, and the table sees it

    using Clock = std::chrono::steady_clock;

    // "A.B.C.D/N" (N <= 30) and "IPv6/N" (64 <= N <= 120). Throws Error.
    FakePool(const std::string& range4, const std::string& range6);

    // The name's address of that family (the same slot in both ranges),
    // allocating one; nullopt when every slot is held by a name used within kHold.
    std::optional<dns::Address> address_for(const std::string& name, bool v6, Clock::time_point now = Clock::now());
    // Is addr in one of the ranges (whether or not handed out)?
    bool contains(const SockAddr& addr) const;
    // The name behind a fake address, "" if none holds it; marks it used.
    std::string lookup(const SockAddr& addr, Clock::time_point now = Clock::now());
    size_t size() const;
    size_t capacity() const { return slots_; }

private:
    struct Entry {
        std::string name;
        uint32_t slot;
        Clock::time_point used;
    };
    std::optional<uint32_t> slot_of(const SockAddr& addr) const;

    uint32_t base4_ = 0, mask4_ = 0;          // host order
    std::array<uint8_t, 16> base6_{};
    int prefix6_ = 64;
    size_t slots_ = 0;
    mutable std::mutex mu_;
    std::list<Entry> lru_;  // front: most recently handed out or connected to
    std::unordered_map<std::string, std::list<Entry>::iterator> by_name_;
    std::vector<std::list<Entry>::iterator> by_slot_;
    std::vector<bool> taken_;
    uint32_t next_free_ = 0;
};

}  // namespace ktp
