// The DNS forwarder's configuration from the options and the host's
// resolver files: where a proxied name goes when the app asked a resolver on
// loopback (systemd-resolved's 127.0.0.53).
#pragma once

#include "config/options.h"
#include "dns/dns_forwarder.h"

namespace ktp {

// Reads /etc/resolv.conf and /run/systemd/resolve/resolv.conf; logs (once,
// at start) what a loopback resolver means for the cgroup's DNS.
DnsForwarderConfig dns_forwarder_config(const Options& o, bool ipv6);

}  // namespace ktp
