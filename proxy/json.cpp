// JSON string escaping (RFC 8259): quotes, backslash and control characters.
#include "json.h"

#include <fmt/format.h>

namespace ktp {

std::string json_escape(std::string_view s)
{
    std::string out;
    out.reserve(s.size() + 8);
    for (unsigned char ch : s) {
        switch (ch) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (ch < 0x20)
                out += fmt::format("\\u{:04x}", ch);
            else
                out += static_cast<char>(ch);
        }
    }
    return out;
}

}  // namespace ktp
