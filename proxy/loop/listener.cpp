// Listening sockets: bind errors become one clear line ("port in use").
#include "loop/listener.h"

#include "base/error.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace ktp {

Listener listen_tcp(const SockAddr& addr, const char* what, bool reuseport, bool transparent, uint32_t mark)
{
    Listener l;
    l.fd = UniqueFd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l.fd)
        fail_errno("{} {}: socket", what, addr.to_string());
    int one = 1;
    setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // Accepted sockets inherit TCP_NODELAY from the listener (the child is a
    // copy of it): one setsockopt per connection fewer. The relay forwards
    // whole chunks as they arrive; Nagle would only add latency.
    setsockopt(l.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (reuseport && setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        fail_errno("{} {}: SO_REUSEPORT", what, addr.to_string());
    if (addr.family() == AF_INET6)
        setsockopt(l.fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    // The connect hooks deliver only to a listener with this mark, which an
    // unprivileged user cannot set: a dead ktproxy's port, taken over by
    // someone else, gets none of the cgroup's connections.
    if (mark != 0 && setsockopt(l.fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
        fail_errno("{} {}: SO_MARK {:#x}", what, addr.to_string(), mark);
    if (transparent) {
        // Accept connections whose destination is not a local address.
        int rc = addr.family() == AF_INET6 ? setsockopt(l.fd.get(), SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
                                           : setsockopt(l.fd.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
        if (rc != 0)
            fail_errno("{} {}: IP_TRANSPARENT", what, addr.to_string());
        l.transparent = true;
    }
    if (::bind(l.fd.get(), addr.get(), addr.size()) != 0) {
        if (errno == EADDRINUSE)
            fail("{} {}: port {} is already in use (pick another with --port)", what, addr.to_string(),
                 addr.port());
        if (errno == EADDRNOTAVAIL)
            fail("{} {}: address not available in this network namespace", what, addr.to_string());
        fail_errno("{} {}: bind", what, addr.to_string());
    }
    if (::listen(l.fd.get(), 4096) != 0)
        fail_errno("{} {}: listen", what, addr.to_string());
    l.addr = SockAddr::local_of(l.fd.get());
    l.transparent = transparent;
    l.orig_dst_level = addr.family() == AF_INET6 ? SOL_IPV6 : SOL_IP;
    return l;
}

uint64_t netns_cookie_of(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
        fail_errno("read the network namespace cookie (SO_NETNS_COOKIE needs Linux >= 5.14)");
    return cookie;
}

}  // namespace ktp
