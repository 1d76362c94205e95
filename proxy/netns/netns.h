// Network namespaces as file descriptors: opening a process's, entering one
// for a while on the calling thread, and making a socket there. A socket
// keeps the namespace it was made in, so a listener or an upstream socket
// made inside a container's namespace serves that container from any thread.
#pragma once

#include "base/unique_fd.h"

#include <sys/types.h>

#include <cstdint>
#include <memory>

namespace ktp {

// One namespace, held open (the fd keeps it alive): shared by ktproxy's
// listener there and every connection accepted on it.
struct Netns {
    UniqueFd fd;
    uint64_t inode = 0;   // nsfs inode: what /proc/PID/ns/net names
    uint64_t cookie = 0;  // SO_NETNS_COOKIE: what the BPF hooks see
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

// socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK) made inside
// ns_fd; errno set and an invalid fd on failure.
UniqueFd stream_socket_in(int ns_fd, int family);

}  // namespace ktp
