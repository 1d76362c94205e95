// The kernel side of an instance: the socket hooks on a cgroup and/or the
// gateway's TC program, loaded from the options; the same rules go to both.
#pragma once

#include "config/options.h"
#include "daemon/cgroup.h"
#include "daemon/listeners.h"
#include "kernel/bpf_maps.h"
#include "kernel/gateway.h"
#include "kernel/sock_hooks.h"

#include <memory>
#include <string>

namespace ktp {

struct Routing;

class KernelSide {
public:
    // Loads (does not attach) the socket hooks when `name` has a cgroup
    // (pinned under its name with --fail-closed), and the gateway program.
    // own_cgroup: the id of ktproxy's own cgroup (whose marked sockets the
    // hooks leave alone); relay_tgid: the relay's pid if it drops root
    // (its setsockopt is guarded), else 0.
    KernelSide(const Options& o, const ListenerPlan& listeners, const std::string& name, uint64_t own_cgroup,
               uint32_t relay_tgid);

    // Publishes the rules to both programs at once (publish_routes).
    void set_routes(const Routing& r);
    // Attaches what was loaded: the gateway after its rules are in place,
    // the socket hooks to the app cgroup (and ktproxy's own).
    void attach_gateway();
    void attach_sockets(const Cgroup& app, const Cgroup& own);

    // The socket hooks' dry run (no-op without them: a gateway alone has none).
    void set_dry_run(bool on);
    // Why this instance cannot dry-run ("" if it can): no connect hooks, a
    // gateway that would go on proxying, or pinned hooks (--fail-closed)
    // that would go on letting connections out if ktproxy died.
    std::string dry_run_refusal() const;
    bool dry_run() const { return sock_ && sock_->dry_run(); }

    Counters counters() const;
    MapOccupancy occupancy() const;
    std::string counters_line() const { return format_counters(counters(), occupancy()); }

    SockHooks* sock() { return sock_.get(); }
    const SockHooks* sock() const { return sock_.get(); }
    bool took_over() const { return sock_ && sock_->took_over(); }
    // Destroys both programs' owners now (detaches, removes gateway routes):
    // what the privileged helper does when the instance stops.
    void release()
    {
        sock_.reset();
        gateway_.reset();
    }

private:
    std::unique_ptr<SockHooks> sock_;
    std::unique_ptr<GatewayHooks> gateway_;
    bool fail_closed_ = false;
};

}  // namespace ktp
