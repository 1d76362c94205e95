// The one exception type for user-facing failures: its message is the whole
// line the user sees ("attach connect4 to /sys/fs/cgroup/app: Operation not permitted").
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ktp {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline std::string errno_text(int err) { return std::strerror(err); }

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args)
{
    throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Appends ": <strerror(errno)>" to the message; captures errno first.
template <typename... Args>
[[noreturn]] void fail_errno(fmt::format_string<Args...> f, Args&&... args)
{
    int err = errno;
    throw Error(fmt::format("{}: {}", fmt::format(f, std::forward<Args>(args)...), errno_text(err)));
}

}  // namespace ktp
