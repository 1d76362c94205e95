// Minimal JSON string escaping for log lines and status output.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace ktp {

// Appends s to a fmt buffer (log lines are built in these, on the stack).
inline void append(fmt::memory_buffer& out, std::string_view s) { out.append(s.data(), s.data() + s.size()); }

std::string json_escape(std::string_view s);  // without the surrounding quotes
// The same, appended to out (log lines: no allocation below its inline size).
void json_escape_to(fmt::memory_buffer& out, std::string_view s);

}  // namespace ktp
