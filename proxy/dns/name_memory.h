// Name memory: the names behind the addresses the cgroup's DNS answers gave
// (A/AAAA, CNAME chains followed), so that a later TCP or UDP connection to
// such an address carries the name: domain rules match on it, a SOCKS5
// upstream gets it (ATYP 3) when a resolver the operator chose gave it (see
// Name), logs show it. Bounded LRU, per instance; written
// by the DNS forwarder (UDP and TCP), read by every worker (one mutex: a lookup
// per new connection, not per byte).
#pragma once

#include "base/sock_addr.h"
#include "dns/dns_message.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ktp {

class FakePool;

class NameMemory {
public:
    // fake: the fake address table (--dns-mode fake), consulted first; may be null.
    explicit NameMemory(FakePool* fake = nullptr) : fake_(fake) {}

    // An entry lives for its TTL plus kGrace (resolver caches in the app and
    // the OS keep addresses a little past it), or until kCapacity newer ones
    // push it out.
    static constexpr size_t kCapacity = 16384;
    static constexpr std::chrono::seconds kGrace{300};
    static constexpr uint32_t kMaxTtl = 3600;  // seconds of a TTL believed

    using Clock = std::chrono::steady_clock;

    // A name and whether an upstream may be given it. Any app in the cgroup
    // may ask a DNS server of its own choosing, which can answer any name
    // for any address: handed to an upstream (SOCKS5 ATYP 3, CONNECT
    // name:port), such a name would send another app's connection to that
    // address wherever the name leads. So only answers of a resolver the
    // operator chose (--dns-resolver, or a nameserver of the host's
    // /etc/resolv.conf) are `trusted`; the others still route by domain
    // rules and show in logs, and the upstream gets the address.
    struct Name {
        std::string name;      // "" if none is remembered (or it expired)
        bool trusted = false;  // a fake address's name is ktproxy's own: trusted
    };

    // trusted: the answer came from a resolver the operator chose. The
    // latest answer for an address wins, trusted or not.
    void remember(const dns::Answer& a, bool trusted, Clock::time_point now = Clock::now());
    // The name for an address; for a fake address, the name it was handed
    // out for.
    Name lookup(const SockAddr& addr, Clock::time_point now = Clock::now()) const;
    size_t size() const;
    // Is addr one of the fake ranges' (fake mode)? Such an address is only
    // ever reached through an upstream, by its name.
    bool is_fake(const SockAddr& addr) const;
    FakePool* fake() const { return fake_; }

private:
    // 16 address bytes (IPv4 v4-mapped): one key for both socket families.
    // A fixed array, not a string: lookup() runs for every new TCP
    // connection, and a 16-byte std::string is one heap allocation each
    // (tests/e2e/reliability.sh counts them).
    using Key = std::array<uint8_t, 16>;
    struct KeyHash {
        size_t operator()(const Key& k) const noexcept;
    };
    FakePool* fake_;
    struct Entry {
        Key key;
        std::string name;
        Clock::time_point until;
        bool trusted;
    };
    mutable std::mutex mu_;
    mutable std::list<Entry> lru_;  // front: most recently remembered or used
    std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;
};

}  // namespace ktp
