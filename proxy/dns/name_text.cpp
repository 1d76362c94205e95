// Escaping DNS names for text logs.
#include "dns/name_text.h"

#include "base/printable.h"

#include <algorithm>

namespace ktp::dns {
namespace {

// A space or backslash kept raw would make two names print alike.
constexpr PrintableRules kName{.space = false, .escaped = "\\"};

}  // namespace

std::string printable_name(std::string_view name) { return printable(name, kName); }

bool plain_name(std::string_view name)
{
    return std::all_of(name.begin(), name.end(), [](char c) { return printable_keeps(static_cast<unsigned char>(c), kName); });
}

}  // namespace ktp::dns
