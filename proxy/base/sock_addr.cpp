// SockAddr: parsing, printing, v4-mapped conversions.
#include "base/sock_addr.h"

#include "ktproxy_shared.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace ktp {

SockAddr::SockAddr(const sockaddr* sa, socklen_t len)
{
    if (len > sizeof(storage_))
        len = sizeof(storage_);
    std::memcpy(&storage_, sa, len);
    len_ = len;
}

std::optional<SockAddr> SockAddr::parse_ip(std::string_view ip, uint16_t port)
{
    std::string s(ip);
    if (s.size() > 2 && s.front() == '[' && s.back() == ']')
        s = s.substr(1, s.size() - 2);
    sockaddr_in sin{};
    if (inet_pton(AF_INET, s.c_str(), &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        return SockAddr(reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
    }
    sockaddr_in6 sin6{};
    if (inet_pton(AF_INET6, s.c_str(), &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        return SockAddr(reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6));
    }
    return std::nullopt;
}

SockAddr SockAddr::from_wire(const uint32_t (&addr)[4], uint16_t port, uint16_t family, bool unmap)
{
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = port;
    std::memcpy(&sin6.sin6_addr, addr, sizeof(addr));
    SockAddr a(reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6));
    return family == KTP_AF_INET || unmap ? a.unmapped() : a;
}

SockAddr SockAddr::from_orig_dst(const ktp_orig_dst& od)
{
    return from_wire(od.addr, od.port, od.family, false);
}

SockAddr SockAddr::peer_of(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
        return SockAddr(reinterpret_cast<sockaddr*>(&ss), len);
    if (errno != ENOTCONN)
        return {};
    // Reset before it was accepted: getpeername refuses a closed socket, but
    // the socket still knows its peer, and SO_PEERNAME (as accept itself)
    // reports it anyway. The length must be exactly the family's.
    sockaddr_storage local{};
    socklen_t llen = sizeof(local);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0)
        return {};
    len = local.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERNAME, &ss, &len) != 0)
        return {};
    return SockAddr(reinterpret_cast<sockaddr*>(&ss), len);
}

SockAddr SockAddr::local_of(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return {};
    return SockAddr(reinterpret_cast<sockaddr*>(&ss), len);
}

uint16_t SockAddr::port() const
{
    if (family() == AF_INET)
        return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (family() == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

void SockAddr::to_mapped(uint32_t out[4]) const
{
    std::memset(out, 0, 16);
    if (family() == AF_INET) {
        out[2] = htonl(0xffff);
        out[3] = reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr;
    } else if (family() == AF_INET6) {
        std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, 16);
    }
}

SockAddr SockAddr::unmapped() const
{
    if (family() != AF_INET6)
        return *this;
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
    if (!IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
        return *this;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = sin6->sin6_port;
    std::memcpy(&sin.sin_addr, &sin6->sin6_addr.s6_addr[12], 4);
    return SockAddr(reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
}

void SockAddr::ip_text(char (&buf)[INET6_ADDRSTRLEN]) const
{
    std::strcpy(buf, "?");
    if (family() == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof(buf));
    else if (family() == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof(buf));
}

std::string SockAddr::ip_string() const
{
    char buf[INET6_ADDRSTRLEN];
    ip_text(buf);
    return buf;
}

std::string_view SockAddr::text(char (&buf)[kTextMax]) const
{
    if (family() != AF_INET && family() != AF_INET6)
        return "-";
    char ip[INET6_ADDRSTRLEN];
    ip_text(ip);
    auto r = family() == AF_INET6 ? fmt::format_to_n(buf, kTextMax, "[{}]:{}", ip, port())
                                  : fmt::format_to_n(buf, kTextMax, "{}:{}", ip, port());
    return {buf, std::min(r.size, kTextMax)};
}

std::string SockAddr::to_string() const
{
    char buf[kTextMax];
    return std::string(text(buf));
}

bool SockAddr::is_loopback() const
{
    if (empty())
        return false;
    uint32_t m[4];
    to_mapped(m);
    if (m[0] == 0 && m[1] == 0 && ntohl(m[2]) == 0xffff)
        return (ntohl(m[3]) >> 24) == 127;
    return family() == AF_INET6 && m[0] == 0 && m[1] == 0 && m[2] == 0 && ntohl(m[3]) == 1;
}

}  // namespace ktp
