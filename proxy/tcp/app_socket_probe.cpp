// Asked only of relays that are half-closed and quiet, once per sweep.
#include "tcp/app_socket_probe.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstring>

namespace ktp {

AppSocketProbe::Holder AppSocketProbe::holder(const SockAddr& app, const SockAddr& peer, const Netns* ns)
{
    if (app.family() != peer.family() || (app.family() != AF_INET && app.family() != AF_INET6))
        return Holder::unknown;
    // A wildcard listener does not say which of the host's addresses the
    // app reached: a lookup would find nothing and be misread as gone.
    const sockaddr* sa = peer.get();
    static const in6_addr any6{};
    if (sa->sa_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr == INADDR_ANY
                                 : std::memcmp(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, &any6, 16) == 0)
        return Holder::unknown;
    // TCP: src is the socket's own end, the app's.
    SockDiagAnswer a = ns ? ns->diag_lookup(IPPROTO_TCP, app, peer) : diag_.lookup(IPPROTO_TCP, app, peer);
    if (a.status == SockDiagAnswer::failed)
        return Holder::unknown;
    // No inode: no file refers to the socket any more (closed, orphaned, or
    // a timewait entry). A listener answering for the 4-tuple means the
    // connection itself is gone.
    if (a.status == SockDiagAnswer::none || a.inode == 0 || a.state == TCP_LISTEN)
        return Holder::none;
    return Holder::app;
}

}  // namespace ktp
