// Owner of the loaded socket hooks (sock_redirect skeleton) and their links.
// Destroying it detaches every program: ktproxy fails open by construction.
#pragma once

#include "kernel/bpf_maps.h"
#include "kernel/route_compiler.h"
#include "base/sock_addr.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ktproxy_shared.h"

struct sock_redirect;
struct bpf_link;
struct bpf_program;
struct bpf_map;

namespace ktp {

struct HookConfig {
    SockAddr listen4;            // port included
    std::optional<SockAddr> listen6;
    uint32_t mark = 0;
    uint64_t netns_cookie = 0;
    // ktproxy's own cgroup (its id, cgroup_id_of()): only sockets that its
    // threads connect or send from are exempt by --mark.
    uint64_t own_cgroup = 0;
    // The relay's pid when it drops root (0: it keeps it): its setsockopt of
    // IP(V6)_TRANSPARENT or of a mark other than --mark is refused.
    uint32_t relay_tgid = 0;
    // --fail-closed: a connect from a namespace without a listener yet is
    // refused, not passed; so is a device-bound socket's proxied connect.
    bool netns_refuse = false;
    // --cgroup-match: only the cgroups in ktp_cgroups are intercepted.
    bool cgroup_filter = false;
    uint32_t max_conns = 65536;
    // ktproxy's UDP relay port (0: UDP is not intercepted; proxy/udp/).
    uint16_t udp_port = 0;
    // Non-empty: --fail-closed. Maps and links are pinned here, outlive the
    // process, and a later instance with the same dir takes them over.
    std::string pin_dir;
};


// Entries in the hand-off map: connections between the app's handshake and
// ktproxy's end of it. The destinations kept in socket storage (ktp_app_dst,
// ktp_conn_dst) cannot be counted without walking every socket.
struct MapOccupancy {
    uint64_t tuples = 0;
    uint64_t udp_flows = 0;  // ktp_udp_flows: live UDP flows (bpf/sock_udp.h)
};

class SockHooks {
public:
    // Opens and loads the programs with the config baked into rodata.
    explicit SockHooks(const HookConfig& cfg);
    ~SockHooks();
    SockHooks(const SockHooks&) = delete;
    SockHooks& operator=(const SockHooks&) = delete;

    // connect4/connect6/sockops/getpeername on the app's cgroup; getsockopt
    // and sockops (which hands the destination to the accepted socket) on
    // ktproxy's own.
    void attach(int app_cgroup_fd, const std::string& app_cgroup_path, int own_cgroup_fd,
                const std::string& own_cgroup_path);
    // Without pinning: detaches every program. With pinning the hooks stay
    // (fail-closed); only `ktproxy cleanup` (unpin_all) removes them.
    void detach();
    bool took_over() const { return took_over_; }
    // The app cgroup was removed and created again at the same path: its
    // hooks went with the old one. Attaches every program that was on
    // old_cgroup_fd to the new cgroup (and moves their pins to the new links).
    void reattach(int old_cgroup_fd, int new_cgroup_fd, const std::string& new_path);

    // Removes every pin under dir (links detach once unpinned and unused).
    static int unpin_all(const std::string& dir);

    // Replaces the routing rules the connect hooks apply, and the action
    // taken when none matches (enum ktp_action). Each prefix's entry is
    // swapped atomically; stale prefixes are deleted afterwards.
    void set_routes(const std::vector<CompiledRoute>& routes, uint32_t default_action);

    // Dry run (bpf/sock_events.h): the connect hooks decide and report
    // through the ring buffer events_fd(), and rewrite nothing. One store
    // into ktp_switches: the next connect sees it.
    void set_dry_run(bool on);
    bool dry_run() const;
    int events_fd() const;

    Counters counters() const;
    MapOccupancy occupancy() const;
    // The connect hooks' negative cache of dead destinations
    // (bpf/sock_deadcache.h), which the event loops write.
    int dead_dst_fd() const;
    // The UDP flows the hooks record and the relay reads (bpf/sock_udp.h).
    int udp_flows_fd() const;
    // Connected IPv6 UDP flows by app socket cookie, until the relay files them.
    int udp_conn6_fd() const;
    // Per-namespace listeners (bpf/sock_netns.h): the map the netns
    // registry fills, and the ring buffer of unknown namespaces.
    int netns_listeners_fd() const;
    int netns_events_fd() const;
    int netns_pending_fd() const;
    int cgroups_fd() const;  // ktp_cgroups (bpf/sock_cgmatch.h)
    // Replaces this process's fd of ktp_cgroups by a read-only one (same
    // number): the relay, before it drops root; the helper keeps writing it.
    void make_cgroups_read_only();

private:
    // pin_suffix tells apart two links of one program (--fail-closed pins).
    void attach_one(const char* what, ::bpf_program* prog, int cgroup_fd, const std::string& path,
                    const char* pin_suffix = "");
    // --fail-closed: reuse the pinned map, or load a fresh one if it does not fit.
    void pin_or_replace(::bpf_map* m);
    void replace_map_pins();

    struct Hook {
        const char* what;
        ::bpf_program* prog;
        int cgroup_fd;  // where it is attached (not owned)
        bpf_link* link;
        const char* pin_suffix;
    };

    std::string pin_dir_;
    bool took_over_ = false;
    sock_redirect* skel_ = nullptr;
    std::vector<Hook> hooks_;
    std::vector<::bpf_map*> stale_map_pins_;
};

// The id of the cgroup2 directory open as cgroup_fd (its inode number).
uint64_t cgroup_id_of(int cgroup_fd);

std::string format_counters(const Counters& c, const MapOccupancy& m);

}  // namespace ktp
