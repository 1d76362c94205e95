// The name memory's LRU.
#include "dns/name_memory.h"

#include "dns/fake_pool.h"
#include "dns/name_text.h"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace ktp {
namespace {

std::array<uint8_t, 16> key_of(const dns::Address& a)
{
    std::array<uint8_t, 16> k{};
    if (a.v6) {
        std::memcpy(k.data(), a.bytes.data(), 16);
    } else {
        k[10] = k[11] = 0xff;
        std::memcpy(k.data() + 12, a.bytes.data(), 4);
    }
    return k;
}

}  // namespace

size_t NameMemory::KeyHash::operator()(const Key& k) const noexcept
{
    return std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(k.data()), k.size()));
}

namespace {

// The slot an answer to `asker` for `name` goes to: the asker's own (a
// process's latest answer replaces its earlier one), else a free or
// expired one, else the one remembered first.
template <typename Names>
auto& slot_for(Names& names, uint32_t asker, const std::string& name, std::chrono::steady_clock::time_point now)
{
    auto* pick = &names[0];
    for (auto& n : names) {
        if (!n.name.empty() && (asker ? n.asker == asker : (n.asker == 0 && n.name == name)))
            return n;
        if (n.name.empty() || n.until < now)
            pick = &n;
        else if (!pick->name.empty() && pick->until >= now && n.order < pick->order)
            pick = &n;
    }
    return *pick;
}

}  // namespace

void NameMemory::remember(const dns::Answer& a, uint32_t asker, Clock::time_point now)
{
    // Not plain text (dns/name_text.h): not remembered, so a connection's
    // log line never carries it.
    if (a.question.name.empty() || !dns::plain_name(a.question.name))
        return;
    std::lock_guard lock(mu_);
    for (const dns::Address& ad : a.addresses) {
        Key k = key_of(ad);
        // A TTL is the answering server's word, up to 2^32 s: an hour at most.
        Clock::time_point until = now + std::chrono::seconds(std::min<uint32_t>(ad.ttl, kMaxTtl)) + kGrace;
        auto it = index_.find(k);
        if (it != index_.end()) {
            lru_.splice(lru_.begin(), lru_, it->second);
        } else {
            lru_.push_front(Entry{k, {}, until});
            index_[k] = lru_.begin();
            if (lru_.size() > kCapacity) {
                index_.erase(lru_.back().key);
                lru_.pop_back();
            }
        }
        Entry& e = lru_.front();
        slot_for(e.names, asker, a.question.name, now) = Named{a.question.name, until, ++remembered_, asker};
        e.until = std::max(e.until, until);
    }
}

NameMemory::Name NameMemory::lookup(const SockAddr& addr, uint32_t pid, Clock::time_point now) const
{
    if (fake_ && fake_->contains(addr))
        return {fake_->lookup(addr, now), true};
    uint32_t m[4];
    addr.to_mapped(m);
    Key k;
    std::memcpy(k.data(), m, k.size());
    std::lock_guard lock(mu_);
    auto it = index_.find(k);
    if (it == index_.end() || it->second->until < now)
        return {};
    lru_.splice(lru_.begin(), lru_, it->second);
    const Named* latest = nullptr;
    for (const Named& n : it->second->names) {
        if (n.name.empty() || n.until < now)
            continue;
        if (pid != 0 && n.asker == pid)
            return {n.name, true};
        if (!latest || n.order > latest->order)
            latest = &n;
    }
    if (!latest)
        return {};
    return {latest->name, false};
}

bool NameMemory::is_fake(const SockAddr& addr) const { return fake_ && fake_->contains(addr); }

size_t NameMemory::size() const
{
    std::lock_guard lock(mu_);
    return lru_.size();
}

}  // namespace ktp
