// resolv.conf read for loopback resolvers (dns/resolv_conf.h).
#include "dns/resolv_conf.h"

#include <catch2/catch.hpp>

using ktp::dns::loopback_nameservers;
using V = std::vector<std::string>;

TEST_CASE("loopback nameservers of a resolv.conf are found, others and non-nameserver lines are not")
{
    CHECK(loopback_nameservers("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n") == V{"127.0.0.53"});
    CHECK(loopback_nameservers("nameserver 10.255.255.53\n") == V{});
    CHECK(loopback_nameservers("# nameserver 127.0.0.1\n; nameserver ::1\n") == V{});
    CHECK(loopback_nameservers("nameserver 192.0.2.1\nnameserver ::1\n  nameserver\t127.1.2.3 # local\n") ==
          V{"::1", "127.1.2.3"});
    CHECK(loopback_nameservers("nameserver ::ffff:127.0.0.1\r\nnameserver fe80::1%eth0\n") == V{"::ffff:127.0.0.1"});
    CHECK(loopback_nameservers("nameservers 127.0.0.1\nnameserver\nnameserver not-an-ip\n") == V{});
    CHECK(loopback_nameservers("") == V{});
    CHECK(loopback_nameservers("nameserver 127.0.0.1") == V{"127.0.0.1"});
}

TEST_CASE("resolv.conf's nameservers as addresses, non-numeric ones skipped")
{
    using ktp::SockAddr;
    auto ips = [](const std::vector<SockAddr>& v) {
        V out;
        for (const SockAddr& a : v)
            out.push_back(a.to_string());
        return out;
    };
    CHECK(ips(ktp::dns::nameserver_addresses("nameserver 10.0.0.53\nnameserver fd00::53\nnameserver not-an-ip\n")) ==
          V{"10.0.0.53:53", "[fd00::53]:53"});
    CHECK(ktp::dns::nameserver_addresses("search example\n").empty());
}
