// Map operations shared by the two BPF owners (SockHooks, GatewayHooks):
// both carry two generations of the ktp_routes trie and a ktp_counters array
// of the same layout.
#pragma once

#include "kernel/route_compiler.h"

#include <bpf/libbpf.h>

#include <array>
#include <cstdint>
#include <vector>

#include "ktproxy_shared.h"

namespace ktp {

using Counters = std::array<uint64_t, KTP_CTR_MAX>;

// Makes the trie hold exactly `routes`: writes every compiled prefix, then
// deletes the prefixes that are no longer there. Throws Error naming `what`.
void replace_routes(int routes_fd, const std::vector<CompiledRoute>& routes, const char* what);

// Makes `routes` and `default_action` the rules in force, all at once: writes
// them into the generation the hooks are not reading, then switches
// generations with one store (see bpf/sock_route.h). A failure leaves the
// rules in force untouched. Skel: any skeleton built with sock_maps.h and
// sock_route.h.
template <typename Skel>
void publish_routes(Skel* skel, const std::vector<CompiledRoute>& routes, uint32_t default_action, const char* what)
{
    uint32_t next = (__atomic_load_n(&skel->data->ktp_route_gen, __ATOMIC_ACQUIRE) & 1) ^ 1;
    replace_routes(bpf_map__fd(next ? skel->maps.ktp_routes_1 : skel->maps.ktp_routes_0), routes, what);
    skel->data->ktp_default_actions[next] = default_action;
    __atomic_store_n(&skel->data->ktp_route_gen, next, __ATOMIC_RELEASE);
}

// Sums the per-CPU values of every counter.
Counters read_counters(int counters_fd);

}  // namespace ktp
