// The one escaping of untrusted bytes for text lines (see printable.h).
#include "base/printable.h"

#include <fmt/format.h>

#include <iterator>

namespace ktp {

bool printable_keeps(unsigned char c, const PrintableRules& rules)
{
    if (c < 0x20 || c == 0x7f)
        return false;
    if (c == ' ')
        return rules.space;
    if (c >= 0x80)
        return rules.high;
    return rules.escaped.find(static_cast<char>(c)) == std::string_view::npos;
}

std::string printable(std::string_view bytes, const PrintableRules& rules)
{
    bytes = bytes.substr(0, rules.limit);
    std::string out;
    out.reserve(bytes.size());
    for (char c : bytes) {
        auto u = static_cast<unsigned char>(c);
        if (printable_keeps(u, rules))
            out += c;
        else
            fmt::format_to(std::back_inserter(out), "\\x{:02x}", u);
    }
    return out;
}

}  // namespace ktp
