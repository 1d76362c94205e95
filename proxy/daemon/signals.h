// The signals the main thread handles, read from a signalfd. Blocked in the
// process before any worker starts, so that no worker is interrupted by one.
#pragma once

#include "base/unique_fd.h"

#include <sys/signalfd.h>

#include <initializer_list>
#include <optional>

namespace ktp {

class SignalFd {
public:
    explicit SignalFd(std::initializer_list<int> signals);
    int fd() const { return fd_.get(); }
    // The next pending signal, or nothing.
    std::optional<signalfd_siginfo> next();

private:
    UniqueFd fd_;
};

}  // namespace ktp
