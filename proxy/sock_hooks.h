// Owner of the loaded socket hooks (sock_redirect skeleton) and their links.
// Destroying it detaches every program: ktproxy fails open by construction.
#pragma once

#include "bpf_maps.h"
#include "route_compiler.h"
#include "sock_addr.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ktproxy_shared.h"

struct sock_redirect;
struct bpf_link;
struct bpf_program;

namespace ktp {

struct HookConfig {
    SockAddr listen4;            // port included
    std::optional<SockAddr> listen6;
    uint32_t mark = 0;
    uint64_t netns_cookie = 0;
    uint32_t max_conns = 65536;
    // Non-empty: --fail-closed. Maps and links are pinned here, outlive the
    // process, and a later instance with the same dir takes them over.
    std::string pin_dir;
};


struct MapOccupancy {
    uint64_t orig_dst = 0;
    uint64_t tuples = 0;
};

class SockHooks {
public:
    // Opens and loads the programs with the config baked into rodata.
    explicit SockHooks(const HookConfig& cfg);
    ~SockHooks();
    SockHooks(const SockHooks&) = delete;
    SockHooks& operator=(const SockHooks&) = delete;

    // connect4/connect6/sockops on the app's cgroup, getsockopt on ktproxy's own.
    void attach(int app_cgroup_fd, const std::string& app_cgroup_path, int own_cgroup_fd,
                const std::string& own_cgroup_path);
    // Without pinning: detaches every program. With pinning the hooks stay
    // (fail-closed); only `ktproxy cleanup` (unpin_all) removes them.
    void detach();
    bool took_over() const { return took_over_; }

    // Removes every pin under dir (links detach once unpinned and unused).
    static int unpin_all(const std::string& dir);

    // Replaces the routing rules the connect hooks apply, and the action
    // taken when none matches (enum ktp_action). Each prefix's entry is
    // swapped atomically; stale prefixes are deleted afterwards.
    void set_routes(const std::vector<CompiledRoute>& routes, uint32_t default_action);

    Counters counters() const;
    MapOccupancy occupancy() const;
    // The connect hooks' negative cache of dead destinations
    // (bpf/sock_deadcache.h), which the event loops write.
    int dead_dst_fd() const;

private:
    void attach_one(const char* what, ::bpf_program* prog, int cgroup_fd, const std::string& path);

    std::string pin_dir_;
    bool took_over_ = false;
    sock_redirect* skel_ = nullptr;
    std::vector<bpf_link*> links_;
};

std::string format_counters(const Counters& c, const MapOccupancy& m);

}  // namespace ktp
