// One exact-match sock_diag lookup per question: a blocking request on a
// netlink socket that the kernel answers while sending, so the worker waits
// no longer than the table lookup itself. Asked only of relays that are
// half-closed and quiet, once per sweep.
#include "tcp/app_socket_probe.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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

AppSocketProbe::AppSocketProbe() : nl_(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) {}

AppSocketProbe::Holder AppSocketProbe::holder(const SockAddr& app, const SockAddr& peer)
{
    if (!nl_ || app.family() != peer.family() || (app.family() != AF_INET && app.family() != AF_INET6))
        return Holder::unknown;
    // A wildcard listener does not say which of the host's addresses the
    // app reached: a lookup would find nothing and be misread as gone.
    __be32 any[4] = {}, want[4] = {};
    copy_addr(peer, want);
    if (std::memcmp(want, any, app.family() == AF_INET ? 4 : 16) == 0)
        return Holder::unknown;
    struct {
        nlmsghdr nh;
        inet_diag_req_v2 req;
    } msg{};
    msg.nh.nlmsg_len = sizeof(msg);
    msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nh.nlmsg_flags = NLM_F_REQUEST;  // no NLM_F_DUMP: one socket, looked up by its 4-tuple
    msg.req.sdiag_family = static_cast<uint8_t>(app.family());
    msg.req.sdiag_protocol = IPPROTO_TCP;
    msg.req.idiag_states = ~0u;
    // src/sport: the socket's own end (the app's); dst/dport: its peer.
    msg.req.id.idiag_sport = htons(app.port());
    msg.req.id.idiag_dport = htons(peer.port());
    copy_addr(app, msg.req.id.idiag_src);
    copy_addr(peer, msg.req.id.idiag_dst);
    msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (::send(nl_.get(), &msg, sizeof(msg), 0) != static_cast<ssize_t>(sizeof(msg)))
        return Holder::unknown;

    alignas(nlmsghdr) char buf[1024];
    ssize_t n = ::recv(nl_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < static_cast<ssize_t>(sizeof(nlmsghdr)))
        return Holder::unknown;
    auto* h = reinterpret_cast<const nlmsghdr*>(buf);
    if (!NLMSG_OK(h, static_cast<unsigned>(n)))
        return Holder::unknown;
    if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr)))
            return Holder::unknown;
        int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
        return err == ENOENT ? Holder::none : Holder::unknown;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        return Holder::unknown;
    auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
    // No inode: no file refers to the socket any more (closed, orphaned,
    // or a timewait entry). A listener answering for the 4-tuple means the
    // connection itself is gone.
    if (m->idiag_inode == 0 || m->idiag_state == TCP_LISTEN)
        return Holder::none;
    return Holder::app;
}

}  // namespace ktp
