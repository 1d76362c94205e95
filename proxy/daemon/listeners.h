// The instance's listening sockets: one set per worker (IPv4 and, unless
// disabled, IPv6) for the cgroup hooks, plus the gateway's transparent ones,
// and how the ready line and status name them.
#pragma once

#include "base/sock_addr.h"
#include "config/options.h"
#include "loop/listener.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ktp {

struct ListenerPlan {
    std::vector<std::vector<Listener>> sets;  // per worker; handed to the workers
    std::optional<SockAddr> listen4, listen6;  // the cgroup hooks' listeners
    std::optional<SockAddr> gw4, gw6;          // the gateway's transparent listeners
    uint64_t netns_cookie = 0;                 // the listeners' network namespace
    uint16_t udp_port = 0;                     // the UDP relay's port (0: no UDP; proxy/udp/)

    // "listening on A and B, cgroup P, gateway on IF via G" for the ready line.
    std::string where(const Options& o, const std::string& cgroup_path) const;
    // "UDP relay on port N", or why UDP is not intercepted: ready line and status.
    std::string udp_state(const Options& o) const;
    // "A B gateway IF via G" for status.
    std::string listening(const Options& o) const;
};

// Opens every listener the options ask for (cgroup: all workers on one port,
// shared with SO_REUSEPORT, refusing a port someone else listens on).
ListenerPlan open_listeners(const Options& o, unsigned workers, bool cgroup_mode, bool gateway_mode);

}  // namespace ktp
