// The cookie of a local UDP socket, found by its 4-tuple through
// NETLINK_SOCK_DIAG: the relay's way from a connected IPv6 app socket's
// datagram to what connect6 recorded under that socket's cookie.
#pragma once

#include "base/sock_addr.h"

#include <cstdint>
#include <optional>

namespace ktp {

// The socket bound at `local` and connected to `remote` (both IPv6), in the
// caller's network namespace; nullopt if none or on any failure.
std::optional<uint64_t> udp6_socket_cookie(const SockAddr& local, const SockAddr& remote);

}  // namespace ktp
