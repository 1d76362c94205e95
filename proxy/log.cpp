// Logging: one write(2) per line so lines from threads never interleave.
#include "log.h"

#include <unistd.h>

#include <array>
#include <atomic>

namespace ktp::log {
namespace {
std::atomic<Level> g_level{Level::info};
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

void write(Level level, std::string_view message)
{
    std::string line = fmt::format("ktproxy: {}: {}\n", level_name(level), message);
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

}  // namespace ktp::log
