// A socket address (IPv4 or IPv6) with parsing, printing and the conversions
// between the BPF maps' v4-mapped form and what sockets want.
#pragma once

#include <fmt/format.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

struct ktp_orig_dst;

namespace ktp {

class SockAddr {
public:
    SockAddr() = default;
    SockAddr(const sockaddr* sa, socklen_t len);

    // Numeric address only ("10.0.0.1", "fd00::1"); no name resolution.
    static std::optional<SockAddr> parse_ip(std::string_view ip, uint16_t port);
    static SockAddr from_orig_dst(const ktp_orig_dst& od);
    // An address as the hooks write it (16 bytes, IPv4 v4-mapped; port in
    // network order; KTP_AF_*). unmap: an IPv6-family address that is
    // v4-mapped (an AF_INET6 socket's connect to ::ffff:a.b.c.d) becomes
    // AF_INET too, as the relay dials it.
    static SockAddr from_wire(const uint32_t (&addr)[4], uint16_t port, uint16_t family, bool unmap);
    static SockAddr peer_of(int fd);
    static SockAddr local_of(int fd);

    int family() const { return storage_.sin6_family; }
    uint16_t port() const;
    bool empty() const { return len_ == 0; }
    // IPv4 as 4 network-order bytes mapped into 16 (::ffff:a.b.c.d); IPv6 as is.
    void to_mapped(uint32_t out[4]) const;
    // An AF_INET6 address that is v4-mapped becomes AF_INET; others unchanged.
    SockAddr unmapped() const;
    // 127/8, ::1 or a v4-mapped 127/8 address (not the unspecified one).
    bool is_loopback() const;

    const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage_); }
    socklen_t size() const { return len_; }

    // "10.0.0.1:80", "[fd00::1]:443"
    std::string to_string() const;
    // The same into a caller's buffer, without allocating (log lines).
    static constexpr size_t kTextMax = 64;
    std::string_view text(char (&buf)[kTextMax]) const;
    std::string ip_string() const;

private:
    // The numeric address into buf ("?" for neither family).
    void ip_text(char (&buf)[INET6_ADDRSTRLEN]) const;

    // IPv4 or IPv6 only, so the larger of the two rather than
    // sockaddr_storage: a connection holds three of these.
    sockaddr_in6 storage_{};
    socklen_t len_ = 0;
};

}  // namespace ktp

// fmt::format("{}", addr) prints addr.text(): no heap allocation per
// connection log line.
template <>
struct fmt::formatter<ktp::SockAddr> : fmt::formatter<std::string_view> {
    template <typename FormatContext>
    auto format(const ktp::SockAddr& a, FormatContext& ctx) const -> decltype(ctx.out())
    {
        char buf[ktp::SockAddr::kTextMax];
        return fmt::formatter<std::string_view>::format(a.text(buf), ctx);
    }
};
