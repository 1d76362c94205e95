// The UDP side of kernel/sock_diag.h.
#include "udp/sock_diag.h"

#include "kernel/sock_diag.h"

#include <netinet/in.h>
#include <sys/socket.h>

namespace ktp {

std::optional<uint64_t> udp6_socket_cookie(const SockAddr& local, const SockAddr& remote)
{
    if (local.family() != AF_INET6 || remote.family() != AF_INET6)
        return std::nullopt;
    // UDP looks the socket up as for a packet from src to dst: from the
    // remote end to the local one.
    SockDiagAnswer a = SockDiag().lookup(IPPROTO_UDP, remote, local);
    if (a.status != SockDiagAnswer::found)
        return std::nullopt;
    return a.cookie;
}

bool udp4_sender_is(const SockAddr& local, const SockAddr& remote, uint64_t cookie)
{
    SockDiagAnswer a = SockDiag().lookup(IPPROTO_UDP, remote, local);
    return a.status == SockDiagAnswer::failed || (a.status == SockDiagAnswer::found && a.cookie == cookie);
}

}  // namespace ktp
