// The proxy's listening sockets (one per address family).
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "loop/ring.h"
#include "netns/netns.h"

#include <cstdint>
#include <string_view>
#include <vector>

namespace ktp {

struct alignas(kUserDataAlign) Listener {  // the object of its accepts' user_data
    UniqueFd fd;
    SockAddr addr;  // with the port actually bound
    // Gateway listener (IP_TRANSPARENT): packets are handed to it by the TC
    // program, and an accepted socket's local address is the destination.
    bool transparent = false;
    // A listener inside another network namespace (a container's, opened by
    // proxy/netns/netns_listeners.cpp); 0 for ktproxy's own.
    uint64_t netns_cookie = 0;
    NetnsRef ns;  // that namespace (null for ktproxy's own): status, the half-closed probe
    // Where its connections leave from: that namespace, or null for
    // ktproxy's own (--egress host).
    NetnsRef egress;
    bool closing = false;  // its namespace is gone: accept cancelled, not re-armed
    bool closed = false;   // the last accept completed: the worker may drop it
};

// Binds and listens; `what` names the flag for the error line. Port 0 binds
// an ephemeral port; the bound address is returned in Listener::addr.
// reuseport: several workers listen on the same port and the kernel spreads
// new connections across them. mark (non-zero): SO_MARK on the listener, by
// which the connect hooks recognise ktproxy's own (accepted sockets inherit it).
Listener listen_tcp(const SockAddr& addr, const char* what, bool reuseport = false, bool transparent = false,
                    uint32_t mark = 0);

// Throws Error if a socket that is not one of `ours` listens on the address
// of one of them. SO_REUSEPORT (set when there are several workers) lets
// another process of the same user (root, for ktproxy) join the port, and
// the kernel would then split the redirected connections between it and
// ktproxy. Read from /proc/net/tcp and tcp6 (this network namespace's).
void refuse_shared_listeners(const std::vector<const Listener*>& ours);

// LISTEN sockets in the text of /proc/net/tcp (v6 false) or tcp6.
struct ProcListener {
    uint32_t addr[4];  // v4-mapped for IPv4, network order as SockAddr::to_mapped
    uint16_t port;
    uint64_t inode;
};
std::vector<ProcListener> parse_proc_net_listeners(std::string_view text, bool v6);
// One line of that text; false if it is not a LISTEN socket (or the header).
bool parse_proc_net_line(std::string_view line, bool v6, ProcListener& out);

// The network namespace cookie of a socket (SO_NETNS_COOKIE, Linux >= 5.14).
uint64_t netns_cookie_of(int fd);

}  // namespace ktp
