// Logging: one write(2) per line so lines from threads never interleave.
#include "log.h"

#include "json.h"

#include <ctime>

#include <unistd.h>

#include <array>
#include <atomic>

namespace ktp::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<bool> g_json{false};

void write_line(const std::string& line)
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

std::string timestamp()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    gmtime_r(&ts.tv_sec, &t);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                       t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000);
}
constexpr std::array<std::string_view, 5> kNames{"trace", "debug", "info", "warn", "error"};
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
    if (json())
        write_line(fmt::format("{{\"ts\":\"{}\",\"level\":\"{}\",\"msg\":\"{}\"}}\n", timestamp(),
                               level_name(level), json_escape(message)));
    else
        write_line(fmt::format("ktproxy: {}: {}\n", level_name(level), message));
}

void write_event(Level level, std::string_view event, std::string_view fields_json)
{
    write_line(fmt::format("{{\"ts\":\"{}\",\"level\":\"{}\",\"event\":\"{}\",{}}}\n", timestamp(),
                           level_name(level), event, fields_json));
}

}  // namespace ktp::log
