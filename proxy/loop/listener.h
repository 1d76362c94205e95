// The proxy's listening sockets (one per address family).
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"

#include <cstdint>

namespace ktp {

struct alignas(32) Listener {
    UniqueFd fd;
    SockAddr addr;  // with the port actually bound
    // getsockopt level for SO_ORIGINAL_DST on sockets accepted here.
    int orig_dst_level = 0;
    // Gateway listener (IP_TRANSPARENT): packets are handed to it by the TC
    // program, and an accepted socket's local address is the destination.
    bool transparent = false;
};

// Binds and listens; `what` names the flag for the error line. Port 0 binds
// an ephemeral port; the bound address is returned in Listener::addr.
// reuseport: several workers listen on the same port and the kernel spreads
// new connections across them. mark (non-zero): SO_MARK on the listener, by
// which the connect hooks recognise ktproxy's own (accepted sockets inherit it).
Listener listen_tcp(const SockAddr& addr, const char* what, bool reuseport = false, bool transparent = false,
                    uint32_t mark = 0);

// The network namespace cookie of a socket (SO_NETNS_COOKIE, Linux >= 5.14).
uint64_t netns_cookie_of(int fd);

}  // namespace ktp
