// Leveled, line-atomic logging to stderr: "ktproxy: LEVEL: message".
#pragma once

#include <fmt/format.h>

#include <iterator>
#include <optional>
#include <string>
#include <string_view>

namespace ktp::log {

enum class Level { trace = 0, debug, info, warn, error };

std::optional<Level> parse_level(std::string_view name);
std::string_view level_name(Level level);
void set_level(Level level);
bool enabled(Level level);
void write(Level level, std::string_view message);

// json: every line becomes {"ts":..., "level":..., "msg":...}; events logged
// with write_event carry their fields as JSON members instead.
void set_json(bool on);
bool json();
// fields_json: members without braces, e.g. "\"client\":\"1.2.3.4:5\",\"c2s\":10".
void write_event(Level level, std::string_view event, std::string_view fields_json);

// Formats on the stack (fmt::memory_buffer's 500 inline bytes): a line of
// ordinary length costs no heap allocation, so logging every connection
// adds none to the connection path.
template <typename... Args>
void at(Level level, fmt::format_string<Args...> f, Args&&... args)
{
    if (!enabled(level))
        return;
    fmt::memory_buffer buf;
    fmt::format_to(std::back_inserter(buf), f, std::forward<Args>(args)...);
    write(level, std::string_view(buf.data(), buf.size()));
}

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) { at(Level::debug, f, std::forward<Args>(args)...); }
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) { at(Level::info, f, std::forward<Args>(args)...); }
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) { at(Level::warn, f, std::forward<Args>(args)...); }
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) { at(Level::error, f, std::forward<Args>(args)...); }

}  // namespace ktp::log
