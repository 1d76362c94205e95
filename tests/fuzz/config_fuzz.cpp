// Fuzzes the --config reader: the strict TOML parser and the check against
// the options. A failure names a line inside the text; a success writes back
// to TOML that parses to the same entries, and the keys are unique.
#include "config/config_file.h"
#include "fuzz_check.h"
#include "config/toml.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>

using namespace ktp;
using ktp::fuzz::check;

namespace {

std::string quote(const std::string& s)
{
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\')
            out += fmt::format("\\{}", static_cast<char>(c));
        else if (c < 0x20 || c == 0x7f)
            out += fmt::format("\\u{:04x}", c);
        else
            out += static_cast<char>(c);
    }
    return out + "\"";
}

std::string write(const TomlValue& v)
{
    switch (v.type) {
    case TomlValue::Type::string: return quote(v.text);
    case TomlValue::Type::array: {
        std::string out = "[";
        for (const auto& i : v.items)
            out += write(i) + ",\n";
        return out + "]";
    }
    default: return v.text;
    }
}

bool same(const TomlValue& a, const TomlValue& b)
{
    if (a.type != b.type || a.text != b.text || a.items.size() != b.items.size())
        return false;
    for (size_t i = 0; i < a.items.size(); ++i)
        if (!same(a.items[i], b.items[i]))
            return false;
    return true;
}

const std::vector<ConfigKey> kSchema{
    {"rule", ConfigKind::list},  {"port", ConfigKind::integer},    {"idle-timeout", ConfigKind::number},
    {"relay", ConfigKind::string}, {"fail-closed", ConfigKind::flag}, {"a", ConfigKind::string},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view text(reinterpret_cast<const char*>(data), size);
    int lines = static_cast<int>(std::count(text.begin(), text.end(), '\n')) + 1;

    auto parsed = parse_toml(text);
    if (auto* f = std::get_if<ParseFailure>(&parsed)) {
        int line = 0;
        check(std::sscanf(f->message.c_str(), "line %d: ", &line) == 1 && line >= 1 && line <= lines);
        check(f->message.find('\n') == std::string::npos);
        return 0;
    }
    const auto& entries = std::get<std::vector<TomlEntry>>(parsed);
    std::set<std::string> keys;
    std::string again;
    for (const auto& e : entries) {
        check(keys.insert(e.key).second);
        check(e.line >= 1 && e.line <= lines);
        again += quote(e.key) + " = " + write(e.value) + "\n";
    }
    auto reparsed = parse_toml(again);
    check(std::holds_alternative<std::vector<TomlEntry>>(reparsed));
    const auto& back = std::get<std::vector<TomlEntry>>(reparsed);
    check(back.size() == entries.size());
    for (size_t i = 0; i < back.size(); ++i)
        check(back[i].key == entries[i].key && same(back[i].value, entries[i].value));

    auto checked = read_config(text, kSchema);
    if (auto* f = std::get_if<ParseFailure>(&checked))
        check(f->message.rfind("line ", 0) == 0 && f->message.find('\n') == std::string::npos);
    else
        check(std::get<std::vector<ConfigSetting>>(checked).size() <= entries.size());
    return 0;
}
