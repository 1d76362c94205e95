// JSON string escaping (RFC 8259): quotes, backslash and control characters.
#include "base/json.h"

#include <fmt/format.h>

namespace ktp {

void json_escape_to(fmt::memory_buffer& out, std::string_view s)
{
    for (unsigned char ch : s) {
        switch (ch) {
        case '"': append(out, "\\\""); break;
        case '\\': append(out, "\\\\"); break;
        case '\n': append(out, "\\n"); break;
        case '\r': append(out, "\\r"); break;
        case '\t': append(out, "\\t"); break;
        default:
            if (ch < 0x20)
                fmt::format_to(std::back_inserter(out), "\\u{:04x}", ch);
            else
                out.push_back(static_cast<char>(ch));
        }
    }
}

std::string json_escape(std::string_view s)
{
    fmt::memory_buffer out;
    json_escape_to(out, s);
    return fmt::to_string(out);
}

}  // namespace ktp
