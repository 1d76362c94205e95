// Shared by the fuzz targets: an invariant check that libFuzzer reports as a
// crash, and the sniffers' prefix-consistency property.
#pragma once

#include "sniff.h"

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

}  // namespace ktp::fuzz
