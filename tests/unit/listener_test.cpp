// The listener's socket options reach what it accepts: no root needed, a
// loopback listener with an ephemeral port.
#include "loop/listener.h"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>

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

TEST_CASE("/proc/net/tcp listeners are parsed with their address, port and inode")
{
    const char* v4 =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:3AEB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 "
        "0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:3AEB 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 "
        "0000000000000000 20 4 30 10 -1\n";
    auto l = ktp::parse_proc_net_listeners(v4, false);
    REQUIRE(l.size() == 1);
    uint32_t want[4];
    SockAddr::parse_ip("127.0.0.1", 15083)->to_mapped(want);
    CHECK(std::memcmp(l[0].addr, want, sizeof(want)) == 0);
    CHECK(l[0].port == 15083);
    CHECK(l[0].inode == 123456);

    const char* v6 =
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr "
        "tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000000000000000000001000000:3AEB 00000000000000000000000000000000:0000 0A 00000000:00000000 "
        "00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0\n";
    l = ktp::parse_proc_net_listeners(v6, true);
    REQUIRE(l.size() == 1);
    SockAddr::parse_ip("::1", 15083)->to_mapped(want);
    CHECK(std::memcmp(l[0].addr, want, sizeof(want)) == 0);
    CHECK(l[0].inode == 99);
}

TEST_CASE("a port shared with another SO_REUSEPORT listener is refused")
{
    // Another process of the same user may join a port ktproxy's workers
    // share, and would get part of the cgroup's connections.
    UniqueFd other(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    REQUIRE(::setsockopt(other.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0);
    SockAddr any = *SockAddr::parse_ip("127.0.0.1", 0);
    REQUIRE(::bind(other.get(), any.get(), any.size()) == 0);
    REQUIRE(::listen(other.get(), 8) == 0);
    SockAddr taken = SockAddr::local_of(other.get());

    Listener a = ktp::listen_tcp(taken, "--listen4", true);
    Listener b = ktp::listen_tcp(taken, "--listen4", true);
    CHECK_THROWS_WITH(ktp::refuse_shared_listeners({&a, &b}), Catch::Contains("another socket listens there too"));
    other.reset();
    CHECK_NOTHROW(ktp::refuse_shared_listeners({&a, &b}));
}
