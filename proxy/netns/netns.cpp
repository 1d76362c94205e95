// Entering network namespaces on the calling thread.
#include "netns/netns.h"

#include "base/error.h"
#include "base/log.h"
#include "netns/netns_broker.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

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

namespace {
// Few enough that a stopped container's stock is no burden, enough that a
// burst of connects rarely empties it before the refill comes.
constexpr unsigned kBatch = 16;
}  // namespace

NetnsRefills::NetnsRefills() : event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

void NetnsRefills::ask(std::weak_ptr<const Netns> ns)
{
    {
        std::lock_guard lock(mu_);
        want_.push_back(std::move(ns));
    }
    uint64_t one = 1;
    (void)!::write(event.get(), &one, sizeof(one));
}

std::vector<std::weak_ptr<const Netns>> NetnsRefills::take()
{
    uint64_t n;
    (void)!::read(event.get(), &n, sizeof(n));
    std::lock_guard lock(mu_);
    return std::exchange(want_, {});
}

namespace {
NetnsSocketKind egress_kind(int i)
{
    static constexpr NetnsSocketKind kinds[4] = {NetnsSocketKind::egress4, NetnsSocketKind::egress6,
                                                 NetnsSocketKind::egress_udp4, NetnsSocketKind::egress_udp6};
    return kinds[i];
}
int stock_of(int family, bool udp) { return (udp ? 2 : 0) + (family == AF_INET6 ? 1 : 0); }
}  // namespace

void Netns::refill() const
{
    for (int i = 0; i < 4; ++i) {
        {
            std::lock_guard lock(mu_);
            if (!asked_[i])
                continue;
        }
        std::vector<UniqueFd> got;
        try {
            got = maker_->make(cookie, egress_kind(i), 0, kBatch);
        } catch (const Error& e) {
            log::debug("container namespace {}: refill: {}", cookie, e.what());
        }
        std::lock_guard lock(mu_);
        asked_[i] = false;
        for (auto& s : got)
            spare_[i].push_back(std::move(s));
    }
}

void Netns::prime(int family, bool udp, unsigned count) const
{
    const int i = stock_of(family, udp);
    std::vector<UniqueFd> got = maker_->make(cookie, egress_kind(i), 0, count ? count : kBatch);
    std::lock_guard lock(mu_);
    for (auto& s : got)
        spare_[i].push_back(std::move(s));
}

UniqueFd Netns::take(int family, bool udp, bool wait) const
{
    const int i = stock_of(family, udp);
    std::unique_lock lock(mu_, std::defer_lock);
    if (wait) {
        lock.lock();
    } else if (!lock.try_lock()) {
        // A worker is refilling a stock from the helper under the lock: the
        // UDP relay's thread does not wait for it.
        errno = EAGAIN;
        return UniqueFd();
    }
    if (spare_[i].empty() && !wait) {
        if (refills && !asked_[i]) {
            asked_[i] = true;
            refills->ask(weak_from_this());
        }
        errno = EAGAIN;
        return UniqueFd();
    }
    if (spare_[i].empty()) {
        try {
            spare_[i] = maker_->make(cookie, egress_kind(i), 0, kBatch);
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
    if (refills && spare_[i].size() < kBatch / 2 && !asked_[i]) {
        asked_[i] = true;
        refills->ask(weak_from_this());
    }
    return s;
}

SockDiagAnswer Netns::diag_lookup(int protocol, const SockAddr& src, const SockAddr& dst) const
{
    std::lock_guard lock(diag_mu_);
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
