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

// Does the socket that sends from `local` to `remote` (a relay token, IPv4)
// have this cookie? A failed lookup (no sock_diag) answers yes: the check
// guards against borrowed tokens, it must not stop the relay.
bool udp4_sender_is(const SockAddr& local, const SockAddr& remote, uint64_t cookie);

}  // namespace ktp
