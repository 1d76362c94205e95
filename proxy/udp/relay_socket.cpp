// The UDP relay's sockets, ktproxy's own and those the privileged helper
// makes inside containers' namespaces (proxy/netns/netns_broker.cpp).
#include "udp/relay_socket.h"

#include "base/error.h"

#include <netinet/in.h>
#include <sys/socket.h>

namespace ktp {

UniqueFd udp_relay_socket(const SockAddr& bind_to, uint32_t mark)
{
    const int family = bind_to.family();
    UniqueFd fd(socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd)
        fail_errno("UDP relay: socket");
    int one = 1;
    if (mark && setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
        fail_errno("UDP relay: SO_MARK {:#x}", mark);
    if (family == AF_INET) {
        // The token address each datagram was sent to names its flow.
        if (setsockopt(fd.get(), IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) != 0)
            fail_errno("UDP relay: IP_PKTINFO");
    } else if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
        fail_errno("UDP relay: IPV6_V6ONLY");
    }
    if (bind(fd.get(), bind_to.get(), bind_to.size()) != 0)
        return UniqueFd();
    return fd;
}

}  // namespace ktp
