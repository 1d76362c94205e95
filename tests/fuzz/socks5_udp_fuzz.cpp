// Fuzzes the parse of datagrams from a SOCKS5 UDP relay (hostile servers):
// any bytes either fail with a reason or name an address and a payload
// offset inside the datagram; a header ktproxy builds parses back to its
// address.
#include "upstream/socks5_udp.h"
#include "fuzz_check.h"

#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>

using namespace ktp;
using ktp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::string_view why;
    auto d = socks5_udp_parse(in, &why);
    if (d) {
        check(d->payload == 10 || d->payload == 22);
        check(d->payload <= in.size());
        check(d->from.family() == AF_INET || d->from.family() == AF_INET6);
        // A header built for that address parses back to it (a v4-mapped
        // IPv6 sender is written as IPv4).
        auto again = socks5_udp_parse(socks5_udp_header(d->from));
        check(again && again->from.to_string() == d->from.unmapped().to_string());
    } else {
        check(!why.empty());
    }
    size_t used = 0;
    if (auto a = socks5_parse_address(in, used))
        check(used <= in.size() && (used == 7 || used == 19));
    return 0;
}
