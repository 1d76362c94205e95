// The listener's socket options reach what it accepts: no root needed, a
// loopback listener with an ephemeral port.
#include "loop/listener.h"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

using ktp::Listener;
using ktp::SockAddr;
using ktp::UniqueFd;

TEST_CASE("accepted sockets inherit TCP_NODELAY from the listener")
{
    // The event loop no longer sets it per connection; if the kernel stopped
    // copying it to the child, every client-side socket would run Nagle.
    Listener l = ktp::listen_tcp(*SockAddr::parse_ip("127.0.0.1", 0), "--listen4");
    UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(bool(client));
    REQUIRE(::connect(client.get(), l.addr.get(), l.addr.size()) == 0);
    UniqueFd accepted(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(bool(accepted));
    int on = 0;
    socklen_t len = sizeof(on);
    REQUIRE(::getsockopt(accepted.get(), IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0);
    CHECK(on == 1);
}
