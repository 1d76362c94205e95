// The host's resolver as apps see it (/etc/resolv.conf): a nameserver on a
// loopback address (systemd-resolved's 127.0.0.53, a local dnsmasq) is a
// local service the UDP hooks leave alone, so the cgroup's queries reach it
// unseen and it asks its own servers from outside the cgroup. ktproxy warns
// at start rather than let `--default proxy=NAME` leak names silently. And
// its nameservers are resolvers the operator chose: names they answer may
// be given to an upstream (dns/name_memory.h).
#pragma once

#include "base/sock_addr.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktp::dns {

// The `nameserver` addresses of a resolv.conf text, in file order, as
// written (an IPv6 one may carry a %scope); bytes in, no I/O.
std::vector<std::string> nameservers(std::string_view resolv_conf);

// The resolvers the operator chose, whose answers' names an upstream may be
// given (NameMemory::Name): the nameservers of resolv_conf (the host's
// /etc/resolv.conf text) and --dns-resolver if given.
std::vector<SockAddr> trusted_resolvers(std::string_view resolv_conf, const std::optional<SockAddr>& dns_resolver);

// The `nameserver` addresses of a resolv.conf text that are loopback ones
// (127.0.0.0/8, ::1, their v4-mapped forms), in file order; bytes in, no I/O.
std::vector<std::string> loopback_nameservers(std::string_view resolv_conf);

}  // namespace ktp::dns
