// `ktproxy --cgroup` and `ktproxy run`: an instance's startup sequence and
// its orderly shutdown. Each step is a part that owns what it made
// (instance_cgroups, listeners, kernel_side, workers, supervisor); their
// destructors undo the steps in reverse on every path.
#include "daemon/instance.h"

#include "base/log.h"
#include "daemon/cgroup_match.h"
#include "daemon/instance_cgroups.h"
#include "daemon/kernel_side.h"
#include "daemon/listeners.h"
#include "daemon/ownership.h"
#include "daemon/preflight.h"
#include "daemon/routing.h"
#include "daemon/signals.h"
#include "daemon/supervisor.h"
#include "daemon/workers.h"
#include "netns/netns_listeners.h"

#include <malloc.h>
#include <signal.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace ktp {
namespace {

void log_ready(const Options& o, const ListenerPlan& listeners, const InstanceCgroups& cgroups, size_t workers,
               const Routing& routing, const KernelSide& kernel)
{
    log::info("ready: {}, {} workers, relay {}, {}{}{}",
              listeners.where(o, cgroups.app ? cgroups.app->path : std::string()), workers, o.relay,
              routing.router->describe(),
              o.fail_closed ? (kernel.took_over() ? ", fail-closed (took over pinned hooks)" : ", fail-closed") : "",
              o.metrics.empty() ? "" : ", metrics on " + o.metrics);
}

// Order matters: leftovers of `run`'s command die while the hooks still hold
// them (no direct connection can slip out), then the hooks go, then the
// cgroup is free for the next instance.
void shut_down(const Options& o, InstanceCgroups& cgroups, Workers& workers, KernelSide& kernel, int exit_code,
               int stop_sig)
{
    const bool run_mode = o.command == Command::run;
    if (cgroups.transient)
        cgroups.transient->kill_leftovers();
    // The command's sockets are closed now; give their relays a moment to
    // see it, so that every connection is finished and logged.
    if (run_mode)
        workers.drain(std::chrono::seconds(2));
    if (kernel.sock())
        kernel.sock()->detach();
    size_t open = workers.live_connections();
    log::info("{}", kernel.counters_line());
    if (run_mode)
        log::debug("command exited with status {}, {} connections were open", exit_code, open);
    else
        log::info("stopped by {}, {} connections were open{}",
                  stop_sig ? sigabbrev_np(stop_sig) : "the loss of its cgroup", open,
                  o.fail_closed ? "; hooks stay pinned (fail-closed) until restart or `ktproxy cleanup`" : "");
    // The hooks are off (or pinned): the next instance may have the cgroup.
    if (cgroups.lock)
        cgroups.lock->remove();
}

}  // namespace

int run_instance(const Options& o, int argc, const char* const* argv)
{
    log::set_level(o.log_level);
    log::set_json(o.log_format == LogFormat::json);
    require_privileges();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    SignalFd signals({SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGQUIT});

    InstanceCgroups cgroups = InstanceCgroups::resolve(o);
    Routing routing = build_routing(o);
    const unsigned nworkers = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
    ListenerPlan listeners = open_listeners(o, nworkers, cgroups.app.has_value(), !o.gateway_ifaces.empty());

    KernelSide kernel(o, listeners, cgroups.name);
    kernel.set_routes(routing);
    kernel.attach_gateway();

    RouterSlot router(routing.router);
    Workers workers(loop_config(o, kernel.sock() ? kernel.sock()->dead_dst_fd() : -1), std::move(listeners.sets),
                    router);
    Supervisor supervisor({o, argc, argv, signals, kernel, router, workers, cgroups, listeners.listening(o)});
    workers.start();
    // Containers of the cgroup (other network namespaces): their listeners
    // exist before the hooks send anything there.
    std::unique_ptr<NetnsListeners> netns;
    std::unique_ptr<CgroupMatch> match;
    if (cgroups.app && kernel.sock() && !o.cgroup_match.empty())
        match = std::make_unique<CgroupMatch>(cgroup2_mount(), o.cgroup_match, kernel.sock()->cgroups_fd());
    if (cgroups.app && kernel.sock()) {
        netns = std::make_unique<NetnsListeners>(NetnsListenersConfig{
            cgroups.app->path, listeners.netns_cookie, listeners.listen4->port(), listeners.listen6.has_value(),
            o.mark, o.egress == "host", kernel.sock()->netns_listeners_fd(), kernel.sock()->netns_events_fd(),
            [&workers](std::vector<Listener> ls) { workers.add_listeners(std::move(ls)); },
            [&workers](uint64_t cookie) { workers.remove_listeners(cookie); },
            match ? std::function<void(const std::set<std::string>&)>(
                        [&match](const std::set<std::string>& dirs) { match->sync(dirs); })
                  : nullptr,
            match ? std::function<bool(const std::string&)>(
                        [&match](const std::string& d) { return match->wanted(d); })
                  : nullptr});
        netns->start();
    }
    if (cgroups.app)
        kernel.attach_sockets(*cgroups.app, *cgroups.own);
    // Loading the BPF objects parsed the kernel's BTF (megabytes of heap,
    // freed by now but still resident): hand those pages back.
    malloc_trim(0);
    log_ready(o, listeners, cgroups, workers.count(), routing, kernel);
    if (o.fail_closed && kernel.sock())
        write_legacy_pin_owner(bpffs_name(cgroups.name));

    int exit_code = supervisor.run();
    shut_down(o, cgroups, workers, kernel, exit_code, supervisor.stop_signal());
    return exit_code;
}

}  // namespace ktp
