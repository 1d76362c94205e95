// The host's resolver as apps see it (/etc/resolv.conf): a nameserver on a
// loopback address (systemd-resolved's 127.0.0.53, a local dnsmasq) is a
// local service the UDP hooks leave alone, so the cgroup's queries reach it
// unseen and it asks its own servers from outside the cgroup. ktproxy warns
// at start rather than let `--default proxy=NAME` leak names silently.
#pragma once

#include "base/sock_addr.h"

#include <string>
#include <string_view>
#include <vector>

namespace ktp::dns {

// The `nameserver` addresses of a resolv.conf text, in file order, as
// written (an IPv6 one may carry a %scope); bytes in, no I/O.
std::vector<std::string> nameservers(std::string_view resolv_conf);

// The nameservers of a resolv.conf text as addresses (port 53); ones that
// are not numeric addresses are skipped.
std::vector<SockAddr> nameserver_addresses(std::string_view resolv_conf);

// The `nameserver` addresses of a resolv.conf text that are loopback ones
// (127.0.0.0/8, ::1, their v4-mapped forms), in file order; bytes in, no I/O.
std::vector<std::string> loopback_nameservers(std::string_view resolv_conf);

}  // namespace ktp::dns
