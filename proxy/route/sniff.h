// The destination's name from the client's first bytes, for domain rules:
// the SNI of a TLS ClientHello, or the Host header of an HTTP/1.x request.
// Reads only the bytes given; hostile input yields `none`, never a crash.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ktp {

struct SniffResult {
    enum Status {
        need_more,  // could still be a ClientHello / request: wait for more bytes
        found,      // domain holds a lowercase host name
        none,       // no name to be had (other protocol, no SNI, IP literal, malformed)
    } status = none;
    std::string domain;
};

// Give up waiting past these sizes: a client that has sent this much and
// still not named a host will not.
constexpr size_t kSniffTlsCap = 16 * 1024;
constexpr size_t kSniffHttpCap = 8 * 1024;

SniffResult sniff_domain(std::string_view first_client_bytes);

// Letters, digits, '-' and '.' in labels of 1..63, at most 253 bytes, not an
// IPv4 literal. Returns the lowercase name without a trailing dot, or "".
std::string valid_sniffed_name(std::string_view name);

}  // namespace ktp
