// Shared by the fuzz targets: an invariant check that libFuzzer reports as a
// crash, and the sniffers' prefix-consistency property.
#pragma once

#include "upstream/handshake.h"
#include "route/sniff.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace ktp::fuzz {

inline void check(bool ok)
{
    if (!ok)
        abort();
}

// A name found in a stream is found, the same, in the whole stream; a prefix
// that is definitely not sniffable stays so.
inline void check_sniff_consistent(std::string_view in)
{
    SniffResult full = sniff_domain(in);
    if (full.status == SniffResult::found)
        check(!full.domain.empty() && valid_sniffed_name(full.domain) == full.domain && full.domain.size() <= 253);
    for (size_t cut : {in.size() / 3, in.size() / 2, in.size() > 0 ? in.size() - 1 : 0}) {
        SniffResult part = sniff_domain(in.substr(0, cut));
        if (part.status == SniffResult::found)
            check(full.status == SniffResult::found && full.domain == part.domain);
        if (part.status == SniffResult::none)
            check(full.status == SniffResult::none);
    }
}

// A handshake target picked by two bits of the input: a domain, IPv4, IPv6,
// or v4-mapped IPv6.
inline Target fuzz_target(uint8_t kind)
{
    switch (kind & 3) {
    case 0: return Target{"example.com", *SockAddr::parse_ip("10.0.0.1", 443)};
    case 1: return Target{"", *SockAddr::parse_ip("10.0.0.1", 443)};
    case 2: return Target{"", *SockAddr::parse_ip("fd00::1", 443)};
    default: return Target{"", *SockAddr::parse_ip("::ffff:10.0.0.1", 80)};
    }
}

}  // namespace ktp::fuzz
