// Route replacement and counter reading on map fds.
#include "kernel/bpf_maps.h"

#include "base/error.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cstring>

namespace ktp {

void replace_routes(int fd, const std::vector<CompiledRoute>& routes, const char* what)
{
    std::vector<ktp_lpm_key> stale;
    ktp_lpm_key key{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        bool kept = std::any_of(routes.begin(), routes.end(),
                                [&](const CompiledRoute& r) { return std::memcmp(&r.key, &next, sizeof(next)) == 0; });
        if (!kept)
            stale.push_back(next);
        key = next;
        prev = &key;
    }
    for (const auto& r : routes)
        if (bpf_map_update_elem(fd, &r.key, &r.set, BPF_ANY) != 0)
            fail_errno("update BPF map ktp_routes of {}", what);
    for (const auto& k : stale)
        bpf_map_delete_elem(fd, &k);
}

Counters read_counters(int fd)
{
    Counters total{};
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return total;
    std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
    for (uint32_t i = 0; i < KTP_CTR_MAX; ++i)
        if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) == 0)
            for (auto v : per_cpu)
                total[i] += v;
    return total;
}

}  // namespace ktp
