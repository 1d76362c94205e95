// Loading the TC program, attaching it with clsact filters, and keeping a
// state file so that a crash leaves nothing that cannot be found again.
#include "kernel/gateway.h"

#include "base/error.h"
#include "base/log.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "tc_gateway.skel.h"

namespace ktp {

namespace {

// Our filter on clsact ingress, recognisable by handle and priority.
constexpr uint32_t kHandle = 0x6b74;
constexpr uint32_t kPriority = 0x6b74;
constexpr const char* kStateFile = "/run/ktproxy/gateway.state";

void write_state(const std::vector<std::pair<std::string, bool>>& ifaces)
{
    mkdir("/run/ktproxy", 0700);
    std::ofstream f(kStateFile, std::ios::trunc);
    f << getpid() << "\n";
    for (const auto& [name, created] : ifaces)
        f << name << " " << (created ? 1 : 0) << "\n";
}

bool detach_filter(int ifindex, bool destroy_qdisc)
{
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kHandle, .priority = kPriority);
    bool removed = bpf_tc_detach(&hook, &opts) == 0;
    if (destroy_qdisc) {
        // Destroying the hook removes the clsact qdisc (which we created).
        hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
        removed |= bpf_tc_hook_destroy(&hook) == 0;
    }
    return removed;
}

}  // namespace

GatewayHooks::GatewayHooks(const GatewayConfig& cfg)
{
    if (cfg.ifaces.empty())
        fail("gateway: no interface given");
    remove_leftovers(cfg.mark, cfg.table);

    skel_ = tc_gateway__open();
    if (!skel_)
        fail_errno("open BPF object tc_gateway");
    uint32_t a[4];
    cfg.listen4.to_mapped(a);
    skel_->rodata->ktp_gw_listen4 = a[3];
    skel_->rodata->ktp_gw_port = htons(cfg.listen4.port());
    if (cfg.listen6) {
        cfg.listen6->to_mapped(a);
        for (int i = 0; i < 4; ++i)
            skel_->rodata->ktp_gw_listen6[i] = a[i];
        skel_->rodata->ktp_gw_have6 = 1;
    }
    skel_->rodata->ktp_gw_mark = cfg.mark;
    if (int err = tc_gateway__load(skel_); err) {
        tc_gateway__destroy(skel_);
        skel_ = nullptr;
        fail("load the gateway TC program (needs Linux >= 5.7 with BTF): {}", errno_text(-err));
    }

    // Route first, then filters: a marked packet must never find no route.
    route_ = std::make_unique<PolicyRoute>(cfg.mark, cfg.table);
    ifaces_ = cfg.ifaces;
    for (const std::string& name : ifaces_)
        if (if_nametoindex(name.c_str()) == 0)
            fail("--gateway-iface {}: no such interface in this network namespace", name);
}

void GatewayHooks::attach()
{
    std::vector<std::pair<std::string, bool>> state;
    try {
        for (const std::string& name : ifaces_) {
            int ifindex = static_cast<int>(if_nametoindex(name.c_str()));
            if (ifindex == 0)
                fail("--gateway-iface {}: no such interface in this network namespace", name);
            LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
            int err = bpf_tc_hook_create(&hook);
            if (err && err != -EEXIST)
                fail("--gateway-iface {}: create clsact qdisc: {}", name, errno_text(-err));
            bool created = err == 0;
            attached_.push_back({name, ifindex, created});
            state.emplace_back(name, created);
            write_state(state);
            LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(skel_->progs.ktp_gateway),
                        .flags = BPF_TC_F_REPLACE, .handle = kHandle, .priority = kPriority);
            if (int e = bpf_tc_attach(&hook, &opts); e)
                fail("--gateway-iface {}: attach TC filter: {}", name, errno_text(-e));
        }
    } catch (...) {
        detach_all();
        throw;
    }
}

GatewayHooks::~GatewayHooks()
{
    detach_all();
    route_.reset();
    if (skel_)
        tc_gateway__destroy(skel_);
}

void GatewayHooks::detach_all()
{
    for (const auto& a : attached_)
        detach_filter(a.ifindex, a.created_qdisc);
    attached_.clear();
    ::unlink(kStateFile);
}

void GatewayHooks::set_routes(const std::vector<CompiledRoute>& routes, uint32_t default_action)
{
    publish_routes(skel_, routes, default_action, "the gateway");
}

Counters GatewayHooks::counters() const { return read_counters(bpf_map__fd(skel_->maps.ktp_counters)); }

int GatewayHooks::remove_leftovers(uint32_t mark, uint32_t table)
{
    int removed = 0;
    std::ifstream f(kStateFile);
    pid_t owner = 0;
    if (f >> owner) {
        if (owner != getpid() && kill(owner, 0) == 0)
            fail("gateway state {} belongs to running ktproxy pid {}; one gateway per host", kStateFile, owner);
        std::string name;
        int created = 0;
        while (f >> name >> created) {
            int ifindex = static_cast<int>(if_nametoindex(name.c_str()));
            if (ifindex && detach_filter(ifindex, created != 0))
                ++removed;
        }
        ::unlink(kStateFile);
    }
    if (PolicyRoute::remove(mark, table))
        ++removed;
    if (removed)
        log::info("gateway: removed {} leftovers of a previous run", removed);
    return removed;
}

}  // namespace ktp
