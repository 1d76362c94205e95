// One inet_diag request (not a dump) per lookup: the kernel's exact-match
// path (udp_dump_one) answers for a single socket.
#include "udp/sock_diag.h"

#include "base/unique_fd.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>

namespace ktp {

std::optional<uint64_t> udp6_socket_cookie(const SockAddr& local, const SockAddr& remote)
{
    if (local.family() != AF_INET6 || remote.family() != AF_INET6)
        return std::nullopt;
    UniqueFd fd(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!fd)
        return std::nullopt;
    timeval tv{1, 0};  // the kernel answers at once; never wait long on it
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct {
        nlmsghdr nh;
        inet_diag_req_v2 req;
    } msg{};
    msg.nh.nlmsg_len = sizeof(msg);
    msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nh.nlmsg_flags = NLM_F_REQUEST;
    msg.req.sdiag_family = AF_INET6;
    msg.req.sdiag_protocol = IPPROTO_UDP;
    msg.req.idiag_states = ~0u;
    // The kernel looks the socket up as for a packet from idiag_src:sport
    // to idiag_dst:dport, i.e. from the remote end to the local one.
    const auto* r6 = reinterpret_cast<const sockaddr_in6*>(remote.get());
    const auto* l6 = reinterpret_cast<const sockaddr_in6*>(local.get());
    msg.req.id.idiag_sport = r6->sin6_port;
    msg.req.id.idiag_dport = l6->sin6_port;
    std::memcpy(msg.req.id.idiag_src, &r6->sin6_addr, 16);
    std::memcpy(msg.req.id.idiag_dst, &l6->sin6_addr, 16);
    msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd.get(), &msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0)
        return std::nullopt;
    alignas(nlmsghdr) char buf[4096];
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n < ssize_t(sizeof(nlmsghdr)))
        return std::nullopt;
    auto* h = reinterpret_cast<nlmsghdr*>(buf);
    if (!NLMSG_OK(h, size_t(n)) || h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
        h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        return std::nullopt;
    auto* m = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
    return uint64_t(m->id.idiag_cookie[1]) << 32 | m->id.idiag_cookie[0];
}

}  // namespace ktp
