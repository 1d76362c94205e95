// Choosing a member of an upstream group (--upstream-group NAME=a,b,c): the
// first one that is up, in the order given; when all are down, the one whose
// back-off ends first (trying is better than failing for sure).
#pragma once

#include "route/router.h"

#include <chrono>

namespace ktp {

inline const Upstream* pick_member(const Upstream& group, std::chrono::steady_clock::time_point now,
                                   const Upstream* after = nullptr)
{
    const auto& m = group.members;
    size_t start = 0;
    if (after)
        for (size_t i = 0; i < m.size(); ++i)
            if (m[i] == after)
                start = i + 1;
    const Upstream* soonest = nullptr;
    for (size_t k = 0; k < m.size(); ++k) {
        const Upstream* u = m[(start + k) % m.size()];
        if (u == after)
            continue;
        if (u->health->up(now))
            return u;
        if (!soonest || u->health->usable_at() < soonest->health->usable_at())
            soonest = u;
    }
    return soonest;
}

// The upstream a proxy decision names, a group resolved to its first
// healthy member; null for direct and block. A group's own URL is empty
// (kind direct): read as such, it would send the traffic out direct.
inline const Upstream* proxy_upstream(const Decision& d)
{
    if (d.action.kind != ActionKind::proxy || !d.upstream)
        return nullptr;
    if (!d.upstream->members.empty())
        return pick_member(*d.upstream, std::chrono::steady_clock::now());
    return d.upstream->url.kind == UpstreamUrl::Kind::direct ? nullptr : d.upstream;
}

}  // namespace ktp
