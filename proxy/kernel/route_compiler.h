// Turns the ordered rule list into the ktp_routes LPM trie contents that the
// connect hooks look up (see the map comment in bpf/ktproxy_shared.h).
#pragma once

#include "route/rules.h"

#include <vector>

#include "ktproxy_shared.h"

namespace ktp {

struct CompiledRoute {
    ktp_lpm_key key;
    ktp_route_set set;
};

// One entry per distinct prefix among the rules (plus ::/0 when a rule has no
// prefix), each holding, in rule order, every rule whose prefix contains it.
// Throws Error when more than KTP_ROUTE_MAX rules apply to one prefix.
std::vector<CompiledRoute> compile_routes(const std::vector<Rule>& rules);

uint32_t to_kernel_action(const Action& a);

// Does prefix `outer` contain prefix `inner` (both in the v4-mapped space)?
bool prefix_contains(const Cidr& outer, const Cidr& inner);

}  // namespace ktp
