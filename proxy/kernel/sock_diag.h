// One socket of this network namespace looked up by its addresses through
// NETLINK_SOCK_DIAG (an exact-match request, not a dump): who still holds a
// TCP socket, a UDP socket's cookie.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"

#include <cstdint>

namespace ktp {

struct SockDiagAnswer {
    enum Status : uint8_t {
        found,
        none,    // no such socket (ENOENT)
        failed,  // no netlink socket, a send or receive error, a reply not understood
    } status = failed;
    uint64_t cookie = 0;
    uint32_t inode = 0;  // 0: no file refers to the socket (orphaned, timewait)
    uint8_t state = 0;   // TCP_ESTABLISHED ... as the kernel numbers them
};

class SockDiag {
public:
    // Opens the netlink socket now (setup may still open sockets; a relay
    // that dropped its privileges may not).
    SockDiag();
    // A NETLINK_SOCK_DIAG socket made elsewhere (in a container's namespace,
    // by the privileged helper): lookups then see that namespace's sockets.
    explicit SockDiag(UniqueFd nl);

    // src/dst as the request names them (struct inet_diag_sockid), both of
    // one family. The kernel reads them differently per protocol: TCP looks
    // up src as the socket's own end, UDP as a packet's source (the remote
    // end).
    SockDiagAnswer lookup(int protocol, const SockAddr& src, const SockAddr& dst) const;

private:
    UniqueFd nl_;
};

}  // namespace ktp
