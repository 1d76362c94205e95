// signalfd for the main thread.
#include "daemon/signals.h"

#include "base/error.h"

#include <signal.h>
#include <unistd.h>

namespace ktp {

SignalFd::SignalFd(std::initializer_list<int> signals)
{
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : signals)
        sigaddset(&mask, s);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    fd_ = UniqueFd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd_)
        fail_errno("signalfd");
}

std::optional<signalfd_siginfo> SignalFd::next()
{
    signalfd_siginfo si{};
    if (::read(fd_.get(), &si, sizeof(si)) != sizeof(si))
        return std::nullopt;
    return si;
}

}  // namespace ktp
