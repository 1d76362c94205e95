// Name memory: the names behind the addresses the cgroup's DNS answers gave
// (A/AAAA, CNAME chains followed), so that a later TCP or UDP connection to
// such an address carries the name: domain rules match on it, a SOCKS5
// upstream gets it (ATYP 3) when the connecting process asked for it itself
// (see Name), logs show it. Bounded LRU, per instance; written
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
    // can make a DNS answer say any name for any address (its own resolver,
    // or a zone of its own through the host's): handed to an upstream
    // (SOCKS5 ATYP 3, CONNECT name:port), such a name would send another
    // app's connection to that address wherever the name leads. So a name
    // is `trusted` only for the process that asked for it (the answer it
    // got, the connection it makes); for other processes it still routes by
    // domain rules and shows in logs, and the upstream gets the address.
    struct Name {
        std::string name;      // "" if none is remembered (or it expired)
        bool trusted = false;  // a fake address's name is ktproxy's own: trusted
    };

    // asker: the pid (thread group) of the process the answer went to; 0
    // unknown. An address keeps the names of its last kAskersPerAddress
    // askers: CDN and shared hosting put many names on one address, and one
    // process's answer must not change the name (so the domain rule) of
    // another's connection to it.
    static constexpr size_t kAskersPerAddress = 4;
    void remember(const dns::Answer& a, uint32_t asker, Clock::time_point now = Clock::now());
    // The name for an address, as process pid connecting to it sees it: the
    // one pid asked for itself (trusted), else the latest any process got;
    // for a fake address, the name it was handed out for.
    Name lookup(const SockAddr& addr, uint32_t pid, Clock::time_point now = Clock::now()) const;
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
    struct Named {
        std::string name;  // "": a free slot
        Clock::time_point until;
        uint64_t order = 0;  // remember()'s count when it came: the latest is the largest
        uint32_t asker = 0;
    };
    struct Entry {
        Key key;
        std::array<Named, kAskersPerAddress> names;
        Clock::time_point until;  // the latest of the names' expiries
    };
    mutable std::mutex mu_;
    uint64_t remembered_ = 0;
    mutable std::list<Entry> lru_;  // front: most recently remembered or used
    std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;
};

}  // namespace ktp
