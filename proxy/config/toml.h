// A strict reader for the TOML that --config files use: top-level `key =
// value` lines only. Anything TOML allows that ktproxy has no use for
// (tables, dotted keys, dates, inline tables) is an error, never skipped, so
// that a config file either means exactly what it says or is refused.
// Bytes in, entries or one error out; no I/O.
#pragma once

#include "base/result.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ktp {

struct TomlValue {
    enum class Type { string, integer, floating, boolean, array };
    Type type = Type::string;
    // string: the decoded text; integer: decimal digits (sign kept, any base
    // converted); floating: the text as written, underscores removed;
    // boolean: "true" or "false". Empty for arrays.
    std::string text;
    std::vector<TomlValue> items;  // array elements
};

struct TomlEntry {
    std::string key;
    TomlValue value;
    int line = 0;  // 1-based line of the key
};

// A failure's message starts with "line N: " (N 1-based).
Result<std::vector<TomlEntry>> parse_toml(std::string_view text);

const char* toml_type_name(TomlValue::Type t);

// The text with control characters written as \xHH (base/printable.h), for
// one-line messages that quote a key or value from the file. The file is
// UTF-8 (checked first), so bytes past ASCII stay as they are.
std::string toml_printable(std::string_view text);

}  // namespace ktp
