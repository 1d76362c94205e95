// Entering network namespaces on the calling thread.
#include "netns/netns.h"

#include "base/error.h"
#include "base/log.h"

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

UniqueFd stream_socket_in(int ns_fd, int family)
{
    // A worker enters and leaves on every upstream socket: its home fd is
    // opened once per thread.
    thread_local UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!home)
        return UniqueFd();
    if (::setns(ns_fd, CLONE_NEWNET) != 0)
        return UniqueFd();
    UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int err = errno;
    if (::setns(home.get(), CLONE_NEWNET) != 0) {
        log::error("cannot return to ktproxy's network namespace (setns: {}): stopping", errno_text(errno));
        std::abort();
    }
    errno = err;
    return s;
}

}  // namespace ktp
