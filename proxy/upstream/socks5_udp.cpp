// SOCKS5 UDP request header: build and parse.
#include "upstream/socks5_udp.h"

#include <netinet/in.h>

#include <cstring>

namespace ktp {
namespace {

constexpr uint8_t kAtypV4 = 0x01;
constexpr uint8_t kAtypDomain = 0x03;
constexpr uint8_t kAtypV6 = 0x04;

uint8_t byte(std::string_view s, size_t i) { return static_cast<uint8_t>(s[i]); }

}  // namespace

bool socks5_append_address(std::string& out, const SockAddr& dst)
{
    const SockAddr a = dst.unmapped();
    if (a.family() == AF_INET) {
        out += char(kAtypV4);
        out.append(reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in*>(a.get())->sin_addr), 4);
    } else if (a.family() == AF_INET6) {
        out += char(kAtypV6);
        out.append(reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in6*>(a.get())->sin6_addr), 16);
    } else {
        return false;
    }
    out += char(a.port() >> 8);
    out += char(a.port() & 0xff);
    return true;
}

std::string socks5_udp_header(const SockAddr& dst)
{
    std::string h{0, 0, 0};
    if (!socks5_append_address(h, dst))
        return {};
    return h;
}

std::optional<SockAddr> socks5_parse_address(std::string_view in, size_t& used)
{
    if (in.empty())
        return std::nullopt;
    if (byte(in, 0) == kAtypV4 && in.size() >= 1 + 4 + 2) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        std::memcpy(&sin.sin_addr, in.data() + 1, 4);
        std::memcpy(&sin.sin_port, in.data() + 5, 2);  // both in network order
        used = 7;
        return SockAddr(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
    }
    if (byte(in, 0) == kAtypV6 && in.size() >= 1 + 16 + 2) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        std::memcpy(&sin6.sin6_addr, in.data() + 1, 16);
        std::memcpy(&sin6.sin6_port, in.data() + 17, 2);
        used = 19;
        return SockAddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sin6));
    }
    return std::nullopt;
}

std::optional<Socks5UdpDatagram> socks5_udp_parse(std::string_view d, std::string_view* error)
{
    auto bad = [error](std::string_view why) -> std::optional<Socks5UdpDatagram> {
        if (error)
            *error = why;
        return std::nullopt;
    };
    if (d.size() < 4)
        return bad("shorter than a SOCKS5 UDP header");
    if (byte(d, 0) != 0 || byte(d, 1) != 0)
        return bad("reserved bytes not zero");
    if (byte(d, 2) != 0)
        return bad("a fragment (FRAG != 0)");
    if (byte(d, 3) == kAtypDomain)
        return bad("a domain as the sender (ktproxy sends to addresses only)");
    if (byte(d, 3) != kAtypV4 && byte(d, 3) != kAtypV6)
        return bad("unknown address type");
    size_t used = 0;
    auto from = socks5_parse_address(d.substr(3), used);
    if (!from)
        return bad("shorter than a SOCKS5 UDP header");
    return Socks5UdpDatagram{*from, 3 + used};
}

}  // namespace ktp
