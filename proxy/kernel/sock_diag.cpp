// The kernel answers an exact-match inet_diag request while it is sent, so
// the receive never waits for more than the lookup; SO_RCVTIMEO bounds it
// anyway.
#include "kernel/sock_diag.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

namespace ktp {

namespace {

void copy_addr(const SockAddr& a, __be32 out[4])
{
    const sockaddr* sa = a.get();
    if (sa->sa_family == AF_INET)
        std::memcpy(out, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
    else
        std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
}

}  // namespace

SockDiag::SockDiag() : SockDiag(UniqueFd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG))) {}

SockDiag::SockDiag(UniqueFd nl) : nl_(std::move(nl))
{
    if (nl_) {
        timeval tv{1, 0};
        setsockopt(nl_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
}

SockDiagAnswer SockDiag::lookup(int protocol, const SockAddr& src, const SockAddr& dst) const
{
    SockDiagAnswer out;
    if (!nl_ || src.family() != dst.family() || (src.family() != AF_INET && src.family() != AF_INET6))
        return out;
    struct {
        nlmsghdr nh;
        inet_diag_req_v2 req;
    } msg{};
    msg.nh.nlmsg_len = sizeof(msg);
    msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nh.nlmsg_flags = NLM_F_REQUEST;  // no NLM_F_DUMP: one socket
    msg.req.sdiag_family = static_cast<uint8_t>(src.family());
    msg.req.sdiag_protocol = static_cast<uint8_t>(protocol);
    msg.req.idiag_states = ~0u;
    msg.req.id.idiag_sport = htons(src.port());
    msg.req.id.idiag_dport = htons(dst.port());
    copy_addr(src, msg.req.id.idiag_src);
    copy_addr(dst, msg.req.id.idiag_dst);
    msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (::send(nl_.get(), &msg, sizeof(msg), 0) != static_cast<ssize_t>(sizeof(msg)))
        return out;

    alignas(nlmsghdr) char buf[1024];
    ssize_t n = ::recv(nl_.get(), buf, sizeof(buf), 0);
    if (n < static_cast<ssize_t>(sizeof(nlmsghdr)))
        return out;
    auto* h = reinterpret_cast<const nlmsghdr*>(buf);
    if (!NLMSG_OK(h, static_cast<unsigned>(n)))
        return out;
    if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr)) &&
            static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error == -ENOENT)
            out.status = SockDiagAnswer::none;
        return out;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        return out;
    auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
    out.status = SockDiagAnswer::found;
    out.cookie = uint64_t(m->id.idiag_cookie[1]) << 32 | m->id.idiag_cookie[0];
    out.inode = m->idiag_inode;
    out.state = m->idiag_state;
    return out;
}

}  // namespace ktp
