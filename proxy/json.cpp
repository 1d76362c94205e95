// JSON string escaping (RFC 8259): quotes, backslash and control characters.
#include "json.h"

#include <fmt/format.h>

namespace ktp {

void json_escape_to(fmt::memory_buffer& out, std::string_view s)
{
    auto put = [&out](std::string_view t) { out.append(t.data(), t.data() + t.size()); };
    for (unsigned char ch : s) {
        switch (ch) {
        case '"': put("\\\""); break;
        case '\\': put("\\\\"); break;
        case '\n': put("\\n"); break;
        case '\r': put("\\r"); break;
        case '\t': put("\\t"); break;
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
