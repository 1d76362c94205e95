// Gateway mode: owner of the TC program (tc_gateway skeleton), its filters on
// the named interfaces, and the policy route that delivers marked packets
// locally. Everything it adds to the host is removed by its destructor, and,
// after a crash, by remove_leftovers() (next start or `ktproxy cleanup`).
#pragma once

#include "kernel/policy_route.h"
#include "kernel/route_compiler.h"
#include "base/sock_addr.h"
#include "kernel/sock_hooks.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

struct tc_gateway;

namespace ktp {

struct GatewayConfig {
    std::vector<std::string> ifaces;
    SockAddr listen4;                 // transparent listener, port included
    std::optional<SockAddr> listen6;
    uint32_t mark = 0x6b75;           // fwmark of packets handed to ktproxy
    uint32_t table = 27509;           // routing table with the local route
};

class GatewayHooks {
public:
    explicit GatewayHooks(const GatewayConfig& cfg);
    ~GatewayHooks();
    GatewayHooks(const GatewayHooks&) = delete;
    GatewayHooks& operator=(const GatewayHooks&) = delete;

    // Attaches the filters to the interfaces; call after set_routes.
    void attach();
    void set_routes(const std::vector<CompiledRoute>& routes, uint32_t default_action);
    Counters counters() const;

    // Filters, qdiscs, rules and routes a killed gateway left behind.
    // Returns how many things were removed.
    static int remove_leftovers(uint32_t mark, uint32_t table);

private:
    struct Attached {
        std::string name;
        int ifindex;
        bool created_qdisc;
    };
    void detach_all();

    std::vector<std::string> ifaces_;
    tc_gateway* skel_ = nullptr;
    std::vector<Attached> attached_;
    std::unique_ptr<PolicyRoute> route_;
};

}  // namespace ktp
