// SOCKS5 UDP relaying (RFC 1928 section 7) as bytes in, result out: the
// header ktproxy puts before each datagram it hands the upstream's relay,
// and the parse of what the relay sends back. The I/O is the UDP relay's
// (udp/udp_associate.h); here nothing but bytes, so it is unit-tested and
// fuzzed (tests/fuzz/socks5_udp_fuzz.cpp).
#pragma once

#include "base/sock_addr.h"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ktp {

// RSV(2)=0 FRAG=0 ATYP DST.ADDR DST.PORT for dst (IPv4 or IPv6; a v4-mapped
// address is sent as IPv4). Empty when dst is neither.
std::string socks5_udp_header(const SockAddr& dst);

struct Socks5UdpDatagram {
    SockAddr from;          // the sender the relay names (DST.ADDR/DST.PORT of the reply)
    size_t payload = 0;     // offset of the payload in the datagram
};

// A datagram from the relay. Fails (nullopt, why in error) on a short
// header, reserved bytes not zero, a fragment (FRAG != 0: ktproxy never asks
// for fragmentation, RFC 1928 lets it drop them), a domain or unknown
// address type: the caller drops such a datagram.
std::optional<Socks5UdpDatagram> socks5_udp_parse(std::string_view dgram, std::string_view* error = nullptr);

// Appends ATYP ADDR PORT for a (IPv4 or IPv6; v4-mapped as IPv4), as both
// a CONNECT/UDP ASSOCIATE request and a UDP header carry it. False, and
// nothing appended, when a is neither.
bool socks5_append_address(std::string& out, const SockAddr& a);

// ATYP ADDR PORT at the start of in (the BND part of a SOCKS5 reply); used
// = bytes read. nullopt for a domain, an unknown type or too few bytes.
std::optional<SockAddr> socks5_parse_address(std::string_view in, size_t& used);

}  // namespace ktp
