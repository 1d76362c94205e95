// The fake address table: slot i is base + 1 + i in each range.
#include "dns/fake_pool.h"

#include "base/error.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace ktp {
namespace {

// "ADDR/N": the address bytes and N, or Error naming the flag.
int parse_range(const std::string& text, int family, void* addr, int min_len, int max_len, const char* flag)
{
    auto slash = text.find('/');
    if (slash == std::string::npos)
        fail("{} {}: expected ADDRESS/PREFIX", flag, text);
    std::string ip = text.substr(0, slash), len = text.substr(slash + 1);
    if (inet_pton(family, ip.c_str(), addr) != 1)
        fail("{} {}: '{}' is not an IPv{} address", flag, text, ip, family == AF_INET ? 4 : 6);
    if (len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), ::isdigit))
        fail("{} {}: bad prefix length '{}'", flag, text, len);
    int n = std::stoi(len);
    if (n < min_len || n > max_len)
        fail("{} {}: prefix length must be {} to {}", flag, text, min_len, max_len);
    return n;
}

}  // namespace

FakePool::FakePool(const std::string& range4, const std::string& range6)
{
    in_addr a4{};
    int n4 = parse_range(range4, AF_INET, &a4, 8, 30, "--fake-range4");
    mask4_ = n4 == 0 ? 0 : ~uint32_t(0) << (32 - n4);
    base4_ = ntohl(a4.s_addr) & mask4_;
    prefix6_ = parse_range(range6, AF_INET6, base6_.data(), 64, 120, "--fake-range6");
    for (int bit = prefix6_; bit < 128; ++bit)
        base6_[bit / 8] &= uint8_t(~(0x80 >> (bit % 8)));
    // Both ranges hold every slot, without the network and the last address.
    size_t size4 = (size_t(1) << (32 - n4)) - 2;
    size_t size6 = prefix6_ > 100 ? (size_t(1) << (128 - prefix6_)) - 2 : kCapacity;
    slots_ = std::min({kCapacity, size4, size6});
    by_slot_.resize(slots_);
    taken_.assign(slots_, false);
}

std::optional<dns::Address> FakePool::address_for(const std::string& name, bool v6, Clock::time_point now)
{
    std::lock_guard lock(mu_);
    uint32_t slot;
    if (auto it = by_name_.find(name); it != by_name_.end()) {
        it->second->used = now;
        lru_.splice(lru_.begin(), lru_, it->second);
        slot = it->second->slot;
    } else {
        while (next_free_ < slots_ && taken_[next_free_])
            ++next_free_;
        if (next_free_ < slots_) {
            slot = next_free_++;
        } else {
            // Full: the oldest gives its slot up only if nothing used it lately
            // (a connection may still be open to it).
            Entry& old = lru_.back();
            if (now - old.used < kHold)
                return std::nullopt;
            slot = old.slot;
            by_name_.erase(old.name);
            lru_.pop_back();
        }
        lru_.push_front(Entry{name, slot, now});
        by_name_[name] = lru_.begin();
        by_slot_[slot] = lru_.begin();
        taken_[slot] = true;
    }
    dns::Address a;
    a.v6 = v6;
    a.ttl = kTtl;
    const uint64_t host = uint64_t(slot) + 1;
    if (!v6) {
        uint32_t ip = htonl(base4_ + uint32_t(host));
        std::memcpy(a.bytes.data(), &ip, 4);
    } else {
        a.bytes = base6_;
        for (int i = 0; i < 8; ++i)
            a.bytes[15 - i] |= uint8_t(host >> (8 * i));
    }
    return a;
}

std::optional<uint32_t> FakePool::slot_of(const SockAddr& addr) const
{
    uint32_t m[4];
    addr.to_mapped(m);
    uint8_t b[16];
    std::memcpy(b, m, 16);
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint64_t host;
    if (std::memcmp(b, mapped, 12) == 0) {
        uint32_t ip;
        std::memcpy(&ip, b + 12, 4);
        ip = ntohl(ip);
        if ((ip & mask4_) != base4_)
            return std::nullopt;
        host = ip - base4_;
    } else {
        for (int bit = 0; bit < prefix6_; ++bit) {
            const uint8_t m1 = uint8_t(0x80 >> (bit % 8));
            if ((b[bit / 8] & m1) != (base6_[bit / 8] & m1))
                return std::nullopt;
        }
        host = 0;
        for (int i = 8; i < 16; ++i)
            host = host << 8 | b[i];
        host &= prefix6_ == 64 ? ~uint64_t(0) : (uint64_t(1) << (128 - prefix6_)) - 1;
    }
    // In the range: a slot number, or a number no slot has (still fake).
    return host >= 1 && host <= slots_ ? uint32_t(host - 1) : UINT32_MAX;
}

bool FakePool::contains(const SockAddr& addr) const { return slot_of(addr).has_value(); }

std::string FakePool::lookup(const SockAddr& addr, Clock::time_point now)
{
    auto slot = slot_of(addr);
    if (!slot || *slot == UINT32_MAX)
        return {};
    std::lock_guard lock(mu_);
    if (!taken_[*slot])
        return {};
    auto it = by_slot_[*slot];
    it->used = now;
    lru_.splice(lru_.begin(), lru_, it);
    return it->name;
}

size_t FakePool::size() const
{
    std::lock_guard lock(mu_);
    return lru_.size();
}

}  // namespace ktp
