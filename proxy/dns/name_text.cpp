// Escaping DNS names for text logs.
#include "dns/name_text.h"

#include <fmt/format.h>

namespace ktp::dns {
namespace {

bool kept(char c) { return c > ' ' && c < 0x7f && c != '\\'; }

}  // namespace

std::string printable_name(std::string_view name)
{
    std::string out;
    out.reserve(name.size());
    for (char c : name) {
        if (kept(c))
            out += c;
        else if (c == '\\')
            out += "\\\\";
        else
            out += fmt::format("\\x{:02x}", uint8_t(c));
    }
    return out;
}

bool plain_name(std::string_view name)
{
    for (char c : name)
        if (!kept(c))
            return false;
    return true;
}

}  // namespace ktp::dns
