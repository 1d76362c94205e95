// Minimal JSON string escaping for log lines and status output.
#pragma once

#include <string>
#include <string_view>

namespace ktp {

std::string json_escape(std::string_view s);  // without the surrounding quotes

}  // namespace ktp
