// Network namespaces: opening a process's, entering one for a while on the
// calling thread (only where that is allowed: the privileged helper, or a
// relay that kept root), and the relay's handle on a container's namespace.
// A socket keeps the namespace it was made in, so a listener or an upstream
// socket made inside a container's namespace serves that container from
// any thread.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "kernel/sock_diag.h"

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ktp {

class NetnsSockets;
class Netns;

// Refills of the namespaces' egress stocks off the workers' path: a worker
// that takes a stock below half asks, the namespace thread makes the
// sockets (a helper round trip there costs no connection anything). Asks
// that nobody serves any more (at stop) only leave the stock to be
// refilled by the worker itself when it runs out.
struct NetnsRefills {
    NetnsRefills();
    void ask(std::weak_ptr<const Netns> ns);
    std::vector<std::weak_ptr<const Netns>> take();

    UniqueFd event;  // eventfd: written on each ask
private:
    std::mutex mu_;
    std::vector<std::weak_ptr<const Netns>> want_;
};

// One container namespace as the relay knows it: shared by ktproxy's
// listener there and every connection accepted on it. The relay never
// enters it: its sockets come from `maker` (proxy/netns/netns_broker.h).
class Netns : public std::enable_shared_from_this<Netns> {
public:
    Netns(uint64_t cookie, std::string cgroup, NetnsSockets* maker) : cookie(cookie), cgroup(std::move(cgroup)), maker_(maker) {}

    const uint64_t cookie;     // SO_NETNS_COOKIE: what the BPF hooks see
    const std::string cgroup;  // the cgroup of the first of its processes met (for status)
    SockAddr listen4, listen6;  // ktproxy's listeners there; set before the Netns is shared
    SockAddr udp_relay;         // ktproxy's UDP relay socket there (status); set before it is shared
    std::shared_ptr<NetnsRefills> refills;  // set before it is shared; null: the worker refills

    // A fresh TCP socket made in the namespace (errno set and an invalid fd
    // on failure). Taken from a small stock the maker refills in batches: a
    // helper round trip per connection would cost more than the connect.
    UniqueFd egress_socket(int family) const { return take(family, false, true); }
    // A fresh UDP (udp) or TCP socket made in the namespace, for the UDP
    // relay's thread, which must never wait for the helper: from the stock
    // only; an empty stock answers EAGAIN (and asks for a refill).
    UniqueFd egress_socket_now(int family, bool udp) const { return take(family, udp, false); }
    // Tops up the stocks a worker asked for (the namespace thread).
    void refill() const;
    // Fills a stock now (the namespace thread, before the UDP relay socket
    // there is handed over): the first datagrams of a container find
    // sockets ready (count: 0 for a whole batch). Throws Error.
    void prime(int family, bool udp, unsigned count = 0) const;
    // Whether an app still holds its end (tcp/app_socket_probe.h), or which
    // socket sent a datagram (udp/udp_relay.cpp), asked of this namespace's
    // socket table. The first call makes the sock_diag socket there (a
    // helper round trip): the namespace thread calls it once, at its
    // UDP relay's opening, so that the UDP relay's thread never does.
    SockDiagAnswer diag_lookup(int protocol, const SockAddr& src, const SockAddr& dst) const;

private:
    UniqueFd take(int family, bool udp, bool wait) const;

    NetnsSockets* maker_;  // outlives every connection (the instance's broker, or the helper's client)
    mutable std::mutex mu_;
    // By kind: TCP AF_INET, TCP AF_INET6, UDP AF_INET, UDP AF_INET6.
    mutable std::vector<UniqueFd> spare_[4];
    mutable bool asked_[4] = {false, false, false, false};  // a refill is on its way
    // Its own lock: the UDP relay's thread asks it per new flow and must
    // not wait while a worker refills a stock under mu_.
    mutable std::mutex diag_mu_;
    mutable std::unique_ptr<SockDiag> diag_;
    mutable bool diag_failed_ = false;
};
using NetnsRef = std::shared_ptr<const Netns>;

// The inode of /proc/PID/ns/net; 0 if the process is gone or unreadable.
uint64_t netns_inode_of_pid(pid_t pid);
// /proc/PID/ns/net, opened; an invalid fd if the process is gone.
UniqueFd open_netns_of_pid(pid_t pid);

// The calling thread inside ns_fd until destruction, then back where it was.
// Failing to get back would leave a ktproxy thread in a container's
// namespace: that aborts the process rather than go on there.
class NetnsEnter {
public:
    explicit NetnsEnter(int ns_fd);  // throws Error if setns fails
    ~NetnsEnter();
    NetnsEnter(const NetnsEnter&) = delete;
    NetnsEnter& operator=(const NetnsEnter&) = delete;

private:
    UniqueFd home_;
};

}  // namespace ktp
