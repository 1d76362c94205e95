// A socket the UDP hooks send datagrams to (bpf/sock_udp.h): ktproxy's own,
// or one made inside a container's namespace by the privileged helper.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"

#include <cstdint>

namespace ktp {

// Bound to bind_to (its family; IPv4: IP_PKTINFO, as the token each datagram
// was sent to names its flow; IPv6: IPV6_V6ONLY), SO_MARK mark, non-blocking.
// Invalid fd (errno set) when the bind fails; throws Error on any other
// failure.
UniqueFd udp_relay_socket(const SockAddr& bind_to, uint32_t mark);

}  // namespace ktp
