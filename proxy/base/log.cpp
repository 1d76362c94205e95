// Logging: one write(2) per line so lines from threads never interleave.
#include "base/log.h"

#include "base/json.h"

#include <ctime>

#include <unistd.h>

#include <array>
#include <atomic>

namespace ktp::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<bool> g_json{false};

void write_line(std::string_view line)
{
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(STDERR_FILENO, p, left);
        if (n <= 0)
            return;  // stderr gone: nothing sensible left to do with a log line
        p += n;
        left -= static_cast<size_t>(n);
    }
}

constexpr std::array<std::string_view, 5> kNames{"trace", "debug", "info", "warn", "error"};

void timestamp_to(fmt::memory_buffer& out)
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    gmtime_r(&ts.tv_sec, &t);
    fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", t.tm_year + 1900,
                   t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000);
}

// {"ts":"...","level":"...", and the caller adds the rest.
void json_head(fmt::memory_buffer& out, Level level)
{
    append(out, "{\"ts\":\"");
    timestamp_to(out);
    append(out, "\",\"level\":\"");
    append(out, kNames[static_cast<size_t>(level)]);
    append(out, "\",");
}
}  // namespace

std::optional<Level> parse_level(std::string_view name)
{
    for (size_t i = 0; i < kNames.size(); ++i)
        if (kNames[i] == name)
            return static_cast<Level>(i);
    return std::nullopt;
}

std::string_view level_name(Level level) { return kNames[static_cast<size_t>(level)]; }
void set_level(Level level) { g_level.store(level, std::memory_order_relaxed); }
bool enabled(Level level) { return level >= g_level.load(std::memory_order_relaxed); }

void set_json(bool on) { g_json.store(on); }
bool json() { return g_json.load(std::memory_order_relaxed); }

void write(Level level, std::string_view message)
{
    fmt::memory_buffer line;
    if (json()) {
        json_head(line, level);
        append(line, "\"msg\":\"");
        json_escape_to(line, message);
        append(line, "\"}\n");
    } else {
        fmt::format_to(std::back_inserter(line), "ktproxy: {}: {}\n", level_name(level), message);
    }
    write_line(std::string_view(line.data(), line.size()));
}

void write_event(Level level, std::string_view event, std::string_view fields_json)
{
    fmt::memory_buffer line;
    json_head(line, level);
    fmt::format_to(std::back_inserter(line), "\"event\":\"{}\",{}}}\n", event, fields_json);
    write_line(std::string_view(line.data(), line.size()));
}

}  // namespace ktp::log
