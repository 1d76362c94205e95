// Rule compilation for the kernel. The LPM trie returns only the longest
// matching prefix, so first-match order across nested prefixes is kept by
// copying every containing rule into each prefix's entry: the prefixes that
// contain an address form a chain, and the longest one sees them all.
#include "kernel/route_compiler.h"

#include "base/error.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace ktp {

namespace {

Cidr masked(const Cidr& c)
{
    Cidr m = c;
    for (int w = 0; w < 4; ++w) {
        int bits = std::clamp(static_cast<int>(c.prefix) - 32 * w, 0, 32);
        uint32_t mask = bits == 0 ? 0 : bits == 32 ? 0xffffffffu : ~((1u << (32 - bits)) - 1);
        m.addr[w] = htonl(ntohl(c.addr[w]) & mask);
    }
    return m;
}

bool same(const Cidr& a, const Cidr& b)
{
    return a.prefix == b.prefix && std::memcmp(a.addr, b.addr, sizeof(a.addr)) == 0;
}

}  // namespace

bool prefix_contains(const Cidr& outer, const Cidr& inner)
{
    if (outer.prefix > inner.prefix)
        return false;
    Cidr narrowed = inner;
    narrowed.prefix = outer.prefix;
    return same(masked(narrowed), masked(outer));
}

uint32_t to_kernel_action(const Action& a)
{
    switch (a.kind) {
    case ActionKind::direct: return KTP_ACT_DIRECT;
    case ActionKind::block: return KTP_ACT_BLOCK;
    case ActionKind::proxy: return KTP_ACT_PROXY;
    }
    return KTP_ACT_PROXY;
}

std::vector<CompiledRoute> compile_routes(const std::vector<Rule>& rules)
{
    std::vector<Cidr> prefixes;
    bool need_any = false;
    for (const Rule& r : rules) {
        if (!r.cidr) {
            need_any = true;
            continue;
        }
        Cidr m = masked(*r.cidr);
        if (std::none_of(prefixes.begin(), prefixes.end(), [&](const Cidr& p) { return same(p, m); }))
            prefixes.push_back(m);
    }
    if (need_any && std::none_of(prefixes.begin(), prefixes.end(), [](const Cidr& p) { return p.prefix == 0; }))
        prefixes.push_back(Cidr{{0, 0, 0, 0}, 0});

    std::vector<CompiledRoute> out;
    for (const Cidr& p : prefixes) {
        CompiledRoute cr{};
        cr.key.prefixlen = p.prefix;
        std::memcpy(cr.key.addr, p.addr, sizeof(cr.key.addr));
        for (size_t i = 0; i < rules.size(); ++i) {
            const Rule& r = rules[i];
            if (r.cidr && !prefix_contains(*r.cidr, p))
                continue;
            if (cr.set.count >= KTP_ROUTE_MAX)
                fail("rule {} ('{}'): more than {} rules apply to the same addresses; merge some", i + 1, r.text,
                     KTP_ROUTE_MAX);
            ktp_route_entry& e = cr.set.entries[cr.set.count++];
            e.port_lo = r.ports ? r.ports->lo : 0;
            e.port_hi = r.ports ? r.ports->hi : 65535;
            e.action = static_cast<uint8_t>(to_kernel_action(r.action));
            e.flags = r.domain ? KTP_ROUTE_F_DOMAIN : 0;
            e.rule = static_cast<uint16_t>(i);
        }
        out.push_back(cr);
    }
    return out;
}

}  // namespace ktp
