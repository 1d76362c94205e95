// The DNS forwarder's configuration (daemon/dns_config.h).
#include "daemon/dns_config.h"

#include "base/log.h"
#include "base/text_file.h"
#include "dns/dns_message.h"
#include "dns/resolv_conf.h"
#include "udp/dns_upstream.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace ktp {

DnsForwarderConfig dns_forwarder_config(const Options& o, bool ipv6)
{
    DnsForwarderConfig dc{o.mark, std::nullopt,
                          uint8_t(o.dns_block == "nxdomain" ? dns::kRcodeNxdomain : dns::kRcodeRefused), ipv6};
    if (!o.dns_resolver.empty())
        dc.dns_resolver = parse_dns_resolver(o.dns_resolver);
    const std::string resolv_conf = read_text_file("/etc/resolv.conf");
    const auto local = dns::loopback_nameservers(resolv_conf);
    if (local.empty())
        return dc;
    // systemd-resolved keeps the servers it asks in a file of its own:
    // proxied names asked of it go there through the upstream.
    for (const SockAddr& a : dns::nameserver_addresses(read_text_file("/run/systemd/resolve/resolv.conf")))
        if (!a.is_loopback())
            dc.loopback_fallback.push_back(a);
    if (dc.dns_resolver)
        log::info("DNS: /etc/resolv.conf names a resolver on loopback ({}): the cgroup's queries to it go through "
                  "the forwarder; names routed to an upstream go to --dns-resolver {}",
                  fmt::join(local, ", "), *dc.dns_resolver);
    else if (!dc.loopback_fallback.empty())
        log::info("DNS: /etc/resolv.conf names a resolver on loopback ({}): the cgroup's queries to it go through "
                  "the forwarder; names routed to an upstream go to {} (its servers), or to --dns-resolver if given",
                  fmt::join(local, ", "), dc.loopback_fallback.front());
    else
        log::warn("DNS: /etc/resolv.conf names a resolver on loopback ({}), which an upstream cannot reach: names "
                  "routed to an upstream will be answered SERVFAIL; give --dns-resolver ADDR (docs/dns.md)",
                  fmt::join(local, ", "));
    return dc;
}

}  // namespace ktp
