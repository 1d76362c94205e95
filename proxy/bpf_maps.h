// Map operations shared by the two BPF owners (SockHooks, GatewayHooks):
// both carry a ktp_routes trie and a ktp_counters array of the same layout.
#pragma once

#include "route_compiler.h"

#include <array>
#include <cstdint>
#include <vector>

#include "ktproxy_shared.h"

namespace ktp {

using Counters = std::array<uint64_t, KTP_CTR_MAX>;

// Writes every compiled prefix (each entry swapped atomically), then deletes
// the prefixes that are no longer there. Throws Error naming `what`.
void replace_routes(int routes_fd, const std::vector<CompiledRoute>& routes, const char* what);

// Sums the per-CPU values of every counter.
Counters read_counters(int counters_fd);

}  // namespace ktp
