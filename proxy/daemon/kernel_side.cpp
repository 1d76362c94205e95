// Loading the instance's BPF programs from its options.
#include "daemon/kernel_side.h"

#include "base/error.h"
#include "daemon/instance.h"
#include "daemon/ownership.h"
#include "daemon/routing.h"
#include "kernel/bpffs.h"

#include <sys/stat.h>

namespace ktp {

KernelSide::KernelSide(const Options& o, const ListenerPlan& l, const std::string& name, uint64_t own_cgroup,
                       uint32_t relay_tgid)
    : fail_closed_(o.fail_closed)
{
    if (l.listen4) {
        HookConfig hc;
        hc.listen4 = *l.listen4;
        hc.listen6 = l.listen6;
        hc.mark = o.mark;
        hc.netns_cookie = l.netns_cookie;
        hc.own_cgroup = own_cgroup;
        hc.relay_tgid = relay_tgid;
        hc.netns_refuse = o.fail_closed;
        hc.cgroup_filter = !o.cgroup_match.empty();
        hc.max_conns = o.max_conns;
        hc.udp_port = l.udp_port;
        if (o.fail_closed) {
            ensure_bpffs(kBpffs, cgroup2_mounted_here());
            if (mkdir(kPinRoot, 0700) != 0 && errno != EEXIST)
                fail_errno("--fail-closed: create {}", kPinRoot);
            hc.pin_dir = std::string(kPinRoot) + "/" + bpffs_name(name);
        }
        sock_ = std::make_unique<SockHooks>(hc);
        // Before the hooks are attached: the first connect already obeys it.
        sock_->set_dry_run(o.dry_run);
    }
    if (l.gw4) {
        GatewayConfig gc;
        gc.ifaces = o.gateway_ifaces;
        gc.listen4 = *l.gw4;
        gc.listen6 = l.gw6;
        gc.mark = o.gateway_mark;
        gc.table = o.gateway_table;
        gateway_ = std::make_unique<GatewayHooks>(gc);
    }
}

void KernelSide::set_routes(const Routing& r)
{
    if (sock_)
        sock_->set_routes(r.kernel, r.default_action);
    if (gateway_)
        gateway_->set_routes(r.kernel, r.default_action);
}

void KernelSide::set_dry_run(bool on)
{
    if (sock_)
        sock_->set_dry_run(on);
}

std::string KernelSide::dry_run_refusal() const
{
    if (!sock_)
        return "this instance has no connect hooks (gateway only): no dry run";
    if (gateway_)
        return "this instance also runs a gateway (--gateway-iface), whose forwarded traffic has no dry run: it "
               "would still be proxied and blocked";
    if (fail_closed_)
        return "this instance runs with --fail-closed, and a dry run lets connections out directly";
    return {};
}

void KernelSide::attach_gateway()
{
    // Rules in the maps before the first packet meets the program: attached
    // earlier, SYNs would get the compiled-in default for that instant.
    if (gateway_)
        gateway_->attach();
}

void KernelSide::attach_sockets(const Cgroup& app, const Cgroup& own)
{
    if (sock_)
        sock_->attach(app.fd.get(), app.path, own.fd.get(), own.path);
}

Counters KernelSide::counters() const
{
    Counters c{};
    if (sock_)
        c = sock_->counters();
    if (gateway_) {
        Counters g = gateway_->counters();
        for (size_t i = 0; i < c.size(); ++i)
            c[i] += g[i];
    }
    return c;
}

MapOccupancy KernelSide::occupancy() const { return sock_ ? sock_->occupancy() : MapOccupancy{}; }

}  // namespace ktp
