// `ktproxy --cgroup` and `ktproxy run`: an instance's startup sequence and
// its orderly shutdown. Each step is a part that owns what it made
// (instance_cgroups, listeners, kernel_side, workers, supervisor); their
// destructors undo the steps in reverse on every path.
#include "daemon/instance.h"

#include "base/error.h"
#include "base/log.h"
#include "base/text_file.h"
#include "daemon/cgroup_match.h"
#include "daemon/dns_config.h"
#include "daemon/instance_cgroups.h"
#include "daemon/kernel_side.h"
#include "daemon/listeners.h"
#include "daemon/ownership.h"
#include "daemon/preflight.h"
#include "daemon/priv_helper.h"
#include "daemon/privileges.h"
#include "daemon/seccomp_filter.h"
#include "daemon/routing.h"
#include "dns/name_memory.h"
#include "udp/udp_relay.h"
#include "dns/dns_forwarder.h"
#include "dns/dns_tcp.h"
#include "dns/fake_pool.h"
#include "daemon/signals.h"
#include "daemon/supervisor.h"
#include "daemon/workers.h"
#include "netns/netns_listeners.h"

#include <fmt/ranges.h>
#include <linux/capability.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace ktp {
namespace {

void log_ready(const Options& o, const ListenerPlan& listeners, const InstanceCgroups& cgroups, size_t workers,
               const Routing& routing, const KernelSide& kernel)
{
    log::info("ready: {}, {} workers, relay {}, {}{}{}{}",
              listeners.where(o, cgroups.app ? cgroups.app->path : std::string()), workers, o.relay,
              routing.router->describe(),
              o.fail_closed ? (kernel.took_over() ? ", fail-closed (took over pinned hooks)" : ", fail-closed") : "",
              o.metrics.empty() ? "" : ", metrics on " + o.metrics,
              kernel.dry_run() ? ", dry run (connects are reported, not redirected)" : "");
}

// Order matters: leftovers of `run`'s command die while the hooks still hold
// them (no direct connection can slip out), then the hooks go, then the
// cgroup is free for the next instance.
void shut_down(const Options& o, InstanceCgroups& cgroups, Workers& workers, KernelSide& kernel, int exit_code,
               int stop_sig, PrivHelper* priv)
{
    const bool run_mode = o.command == Command::run;
    if (cgroups.transient) {
        if (!priv)
            cgroups.transient->kill_leftovers();
        else
            try {
                priv->kill_leftovers();
            } catch (const Error& e) {
                log::warn("kill what is left of the command: {}", e.what());
            }
    }
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
    // Dropped, the helper undoes setup (it holds the same links: both
    // copies must close for fail-open hooks to go).
    if (!priv) {
        if (cgroups.lock)
            cgroups.lock->remove();
        return;
    }
    try {
        priv->finish();
    } catch (const Error& e) {
        log::warn("{}: pins, routes, lock or cgroup may be left for `ktproxy cleanup`", e.what());
    }
}

}  // namespace

int run_instance(const Options& o, int argc, const char* const* argv)
{
    log::set_level(o.log_level);
    log::set_json(o.log_format == LogFormat::json);
    require_privileges();
    // A bad --proxy-user stops here, before anything is made.
    const DropTarget drop_to = resolve_proxy_user(o.proxy_user, o.proxy_user != "ktproxy");
    bool drop = geteuid() == 0 && drop_to.uid != 0;
    warn_if_config_exposed(o);
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    SignalFd signals({SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGQUIT});

    InstanceCgroups cgroups = InstanceCgroups::resolve(o);
    Routing routing = build_routing(o);
    const unsigned nworkers = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
    ListenerPlan listeners = open_listeners(o, nworkers, cgroups.app.has_value(), !o.gateway_ifaces.empty());

    RouterSlot router(routing.router);
    // Fake mode: built (and its ranges checked) before anything is attached.
    std::unique_ptr<FakePool> fake;
    if (o.dns_mode == "fake") {
        if (!o.udp)
            fail("--dns-mode fake: not with --no-udp (the cgroup's DNS queries are answered by the UDP relay)");
        fake = std::make_unique<FakePool>(o.fake_range4, o.fake_range6);
    }
    NameMemory names(fake.get());
    std::unique_ptr<DnsForwarder> dns;
    std::unique_ptr<UdpRelay> udp;
    std::unique_ptr<DnsTcp> dns_tcp;
    if (o.udp && cgroups.app && listeners.listen4) {
        DnsForwarderConfig dc = dns_forwarder_config(o, listeners.listen6.has_value());
        dns = std::make_unique<DnsForwarder>(dc, router, &names);
        UdpConfig uc{listeners.listen4->port(), o.mark, listeners.listen6, o.udp_timeout};
        udp = std::make_unique<UdpRelay>(uc, router, &names, *dns);
        listeners.udp_port = udp->port();
        dns_tcp = std::make_unique<DnsTcp>(*dns);
    }

    KernelSide kernel(o, listeners, cgroups.name, cgroups.own ? cgroup_id_of(cgroups.own->fd.get()) : 0,
                      drop ? pid_as_the_kernel_sees_it() : 0);
    kernel.set_routes(routing);
    kernel.attach_gateway();

    // Containers (processes of the cgroup in another network namespace) are
    // served by sockets made inside their namespaces: by the privileged
    // helper once dropped, else by the relay itself. Whichever makes them
    // outlives the workers (their connections ask it for sockets).
    std::optional<NetnsBrokerConfig> broker_cfg;
    if (cgroups.app && kernel.sock()) {
        std::string mount = cgroup2_mount();
        while (mount.size() > 1 && mount.back() == '/')
            mount.pop_back();
        broker_cfg = NetnsBrokerConfig{cgroups.app->path, mount, o.mark, o.egress == "host", nullptr, nullptr};
        if (!o.cgroup_match.empty()) {
            // Kept by the broker's scans: in the helper when the relay drops.
            auto match = std::make_shared<CgroupMatch>(mount, o.cgroup_match, kernel.sock()->cgroups_fd());
            broker_cfg->wanted = [match](const std::string& d) { return match->wanted(d); };
            broker_cfg->on_tree = [match](const std::set<std::string>& dirs) { match->sync(dirs); };
            // Every cgroup of the tree classified before the hooks attach:
            // with --fail-closed an unclassified one is intercepted.
            broker_cfg->on_tree(cgroup_tree_dirs(cgroups.app->path));
        }
    }
    std::unique_ptr<NetnsBroker> local_broker;
    if (broker_cfg && !drop)
        local_broker = std::make_unique<NetnsBroker>(*broker_cfg);
    LoopConfig lc = loop_config(o, kernel.sock() ? kernel.sock()->dead_dst_fd() : -1);
    lc.own_netns_cookie = listeners.netns_cookie;
    lc.names = udp ? &names : nullptr;
    lc.dns_tcp = dns_tcp.get();
    Workers workers(lc, std::move(listeners.sets), router);
    Supervisor supervisor({o, argc, argv, signals, kernel, router, workers, cgroups, listeners.listening(o),
                           listeners.udp_port, listeners.udp_state(o)});
    // Connects queue on the listeners until the workers start.
    if (cgroups.app)
        kernel.attach_sockets(*cgroups.app, *cgroups.own);
    if (o.fail_closed && kernel.sock())
        write_legacy_pin_owner(bpffs_name(cgroups.name));
    // Loading the BPF objects parsed the kernel's BTF (megabytes of heap,
    // freed by now but still resident): hand those pages back.
    malloc_trim(0);
    // Setup is done: from here the process that parses untrusted bytes has
    // no root; before the workers start, as capabilities are per thread.
    std::unique_ptr<PrivHelper> priv;
    if (drop) {
        priv = PrivHelper::start(
            {kernel, cgroups, supervisor.control_path(), supervisor.command_pidfd(), o.config_file, broker_cfg});
        // The helper (forked above) keeps the writable fd of the set of
        // intercepted cgroups; the relay only reads it from here on.
        if (kernel.sock())
            kernel.sock()->make_cgroups_read_only();
        drop_privileges(drop_to);
        install_seccomp(SeccompProfile::relay);
        supervisor.use_helper(priv.get());
        log::debug("privileges: relay runs as {} (uid {}) with only {}, NoNewPrivs, seccomp; helper pid {} stays uid 0 with the capabilities of its requests",
                   drop_to.name, drop_to.uid, std::string(mark_capability() == CAP_NET_RAW ? "CAP_NET_RAW" : "CAP_NET_ADMIN") +
                       (bpf_capability_needed() ? " and CAP_BPF" : ""),
                   priv->pid());
    }
    workers.start();
    if (udp)
        udp->start(kernel.sock()->udp_flows_fd(), kernel.sock()->udp_conn6_fd());
    if (dns_tcp)
        dns_tcp->start();
    // Containers of the cgroup (other network namespaces) get listeners of
    // their own, made by the helper (dropped) or the relay (root).
    std::unique_ptr<NetnsListeners> netns;
    if (broker_cfg) {
        netns = std::make_unique<NetnsListeners>(NetnsListenersConfig{
            cgroups.app->path, listeners.netns_cookie, listeners.listen4->port(), listeners.listen6.has_value(),
            o.mark, o.egress == "host", kernel.sock()->netns_listeners_fd(), kernel.sock()->netns_events_fd(),
            kernel.sock()->netns_pending_fd(), priv ? static_cast<NetnsSockets*>(priv.get()) : local_broker.get(),
            [&workers](std::vector<Listener> ls) { workers.add_listeners(std::move(ls)); },
            [&workers](uint64_t cookie) { workers.remove_listeners(cookie); },
            udp ? std::function<void(NetnsRef, UniqueFd, UniqueFd)>(
                      [&udp, host = o.egress == "host"](NetnsRef ns, UniqueFd fd4, UniqueFd fd6) {
                          udp->add_netns(std::move(ns), std::move(fd4), std::move(fd6), host);
                      })
                : nullptr,
            udp ? std::function<void(uint64_t)>([&udp](uint64_t cookie) { udp->remove_netns(cookie); }) : nullptr});
        netns->start();
        netns_self_test(priv ? static_cast<NetnsSockets&>(*priv) : *local_broker);
    }
    log_ready(o, listeners, cgroups, workers.count(), routing, kernel);

    int exit_code = supervisor.run();
    shut_down(o, cgroups, workers, kernel, exit_code, supervisor.stop_signal(), priv.get());
    // After the hooks are off: no new datagram comes its way. The UDP relay
    // stops the forwarder's pool, the last to hand DNS over TCP answers.
    if (udp)
        udp->stop();
    if (dns_tcp)
        dns_tcp->stop();
    // Dropped, what setup made is undone already and its owners here could
    // only fail at it (EPERM): the process ends without their destructors.
    if (priv)
        _exit(exit_code);
    return exit_code;
}

}  // namespace ktp
