// Entering network namespaces on the calling thread.
#include "netns/netns.h"

#include "base/error.h"
#include "base/log.h"
#include "netns/netns_broker.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace ktp {

uint64_t netns_inode_of_pid(pid_t pid)
{
    struct stat st {};
    std::string p = "/proc/" + std::to_string(pid) + "/ns/net";
    return ::stat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

UniqueFd open_netns_of_pid(pid_t pid)
{
    std::string p = "/proc/" + std::to_string(pid) + "/ns/net";
    return UniqueFd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
}

NetnsEnter::NetnsEnter(int ns_fd) : home_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC))
{
    if (!home_)
        fail_errno("open this thread's network namespace");
    if (::setns(ns_fd, CLONE_NEWNET) != 0)
        fail_errno("enter a network namespace (setns)");
}

NetnsEnter::~NetnsEnter()
{
    if (::setns(home_.get(), CLONE_NEWNET) != 0) {
        log::error("cannot return to ktproxy's network namespace (setns: {}): stopping", errno_text(errno));
        std::abort();
    }
}

UniqueFd Netns::egress_socket(int family) const
{
    // Few enough that a stopped container's stock is no burden, enough
    // that a burst of connects costs one round trip per this many.
    constexpr unsigned kBatch = 16;
    const int i = family == AF_INET6 ? 1 : 0;
    std::lock_guard lock(mu_);
    if (spare_[i].empty()) {
        try {
            spare_[i] = maker_->make(cookie, i ? NetnsSocketKind::egress6 : NetnsSocketKind::egress4, 0, kBatch);
        } catch (const Error& e) {
            log::warn("container namespace {}: no socket for a connection: {}", cookie, e.what());
            errno = EPERM;
            return UniqueFd();
        }
    }
    if (spare_[i].empty()) {
        errno = EMFILE;
        return UniqueFd();
    }
    UniqueFd s = std::move(spare_[i].back());
    spare_[i].pop_back();
    return s;
}

SockDiagAnswer Netns::diag_lookup(int protocol, const SockAddr& src, const SockAddr& dst) const
{
    std::lock_guard lock(mu_);
    if (!diag_ && !diag_failed_) {
        try {
            auto fds = maker_->make(cookie, NetnsSocketKind::diag, 0, 1);
            diag_ = std::make_unique<SockDiag>(std::move(fds.at(0)));
        } catch (const std::exception& e) {
            // Such relays then wait as before (unknown); said once.
            log::warn("container namespace {}: no sock_diag socket there ({}): half-closed relays of its "
                      "connections are not checked",
                      cookie, e.what());
            diag_failed_ = true;
        }
    }
    return diag_ ? diag_->lookup(protocol, src, dst) : SockDiagAnswer{};
}

}  // namespace ktp
