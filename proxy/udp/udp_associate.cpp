// A SOCKS5 UDP association driven by the UDP relay's loop.
#include "udp/udp_associate.h"

#include "base/error.h"
#include "route/router.h"
#include "upstream/socks5_udp.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace ktp {
namespace {

constexpr size_t kMaxHeld = 64;  // datagrams held while the handshake runs

bool unspecified(const SockAddr& a)
{
    if (a.family() == AF_INET)
        return reinterpret_cast<const sockaddr_in*>(a.get())->sin_addr.s_addr == 0;
    if (a.family() == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(a.get())->sin6_addr);
    return true;
}

bool same(const SockAddr& a, const SockAddr& b)
{
    uint32_t x[4], y[4];
    a.to_mapped(x);
    b.to_mapped(y);
    return std::memcmp(x, y, sizeof(x)) == 0 && a.port() == b.port();
}

}  // namespace

UdpAssociation::UdpAssociation(const Upstream& up, uint32_t mark, UniqueFd ctl, UniqueFd udp)
    : up_(up), mark_(mark), ctl_(std::move(ctl)), udp_given_(std::move(udp))
{
    if (!ctl_)
        ctl_ = UniqueFd(socket(up.addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!ctl_) {
        close(fmt::format("socket: {}", errno_text(errno)));
        return;
    }
    if (mark)
        (void)setsockopt(ctl_.get(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
    if (connect(ctl_.get(), up.addr.get(), up.addr.size()) != 0 && errno != EINPROGRESS)
        close(fmt::format("connect to {}: {}", up.addr, errno_text(errno)));
}

UdpAssociation::State UdpAssociation::close(std::string why)
{
    if (state_ != State::closed)
        error_ = std::move(why);
    state_ = State::closed;
    held_.clear();
    return state_;
}

UdpAssociation::State UdpAssociation::on_control()
{
    if (state_ == State::connecting) {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(ctl_.get(), SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr)
            return close(fmt::format("connect to {}: {}", up_.addr, errno_text(soerr ? soerr : errno)));
        // The socket datagrams will come from: its port goes in the request
        // (the address stays unspecified; the server sees ours on the wire).
        udp_ = udp_given_ ? std::move(udp_given_)
                          : UniqueFd(socket(up_.addr.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!udp_)
            return close(fmt::format("UDP socket: {}", errno_text(errno)));
        if (mark_)
            (void)setsockopt(udp_.get(), SOL_SOCKET, SO_MARK, &mark_, sizeof(mark_));
        auto any = SockAddr::parse_ip(up_.addr.family() == AF_INET ? "0.0.0.0" : "::", 0);
        if (bind(udp_.get(), any->get(), any->size()) != 0)
            return close(fmt::format("bind a UDP socket: {}", errno_text(errno)));
        auto from = SockAddr::parse_ip(any->ip_string(), SockAddr::local_of(udp_.get()).port());
        hs_ = std::make_unique<Socks5Handshake>(up_.url.user, up_.url.password, Target{{}, *from},
                                                Socks5Handshake::Phase::udp_associate);
        HandshakeStep step = hs_->start();
        if (step.kind != HandshakeStep::send)
            return close(step.error);
        // A few bytes on a fresh connection: all go out at once, or the
        // connection is not worth keeping.
        if (::send(ctl_.get(), step.out.data(), step.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT) !=
            ssize_t(step.out.size()))
            return close("sending the greeting failed");
        state_ = State::handshaking;
        return state_;
    }
    char buf[1024];
    ssize_t n = recv(ctl_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return state_;
    if (n <= 0)
        return close(state_ == State::ready ? "the upstream closed the association"
                                            : "the upstream closed the connection in the handshake");
    if (state_ != State::handshaking)
        return state_;  // nothing is expected on an association's control connection: ignored
    in_.append(buf, size_t(n));
    if (in_.size() > 4096)
        return close("the upstream sent too much in the handshake");
    HandshakeStep step = hs_->feed(in_);
    while (step.kind == HandshakeStep::send) {
        in_.erase(0, step.consumed);
        if (::send(ctl_.get(), step.out.data(), step.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT) !=
            ssize_t(step.out.size()))
            return close("sending to the upstream failed");
        if (in_.empty())
            return state_;
        step = hs_->feed(in_);
    }
    if (step.kind == HandshakeStep::need_more)
        return state_;
    if (step.kind == HandshakeStep::failed)
        return close(step.error);
    // Servers may answer 0.0.0.0: their own address, as the client reached it.
    relay_ = hs_->relay();
    if (unspecified(relay_))
        relay_ = *SockAddr::parse_ip(up_.addr.ip_string(), relay_.port());
    if (relay_.unmapped().family() != up_.addr.unmapped().family())
        return close(fmt::format("the upstream's UDP relay {} is not of its own address family", relay_));
    if (connect(udp_.get(), relay_.get(), relay_.size()) != 0)
        return close(fmt::format("connect to the UDP relay {}: {}", relay_, errno_text(errno)));
    state_ = State::ready;
    in_.clear();
    hs_.reset();
    while (!held_.empty()) {
        send_now(held_.front().first, held_.front().second);
        held_.pop_front();
    }
    return state_;
}

bool UdpAssociation::send_now(const SockAddr& dst, std::string_view payload)
{
    std::string h = socks5_udp_header(dst);
    if (h.empty())
        return false;
    iovec iov[2] = {{h.data(), h.size()}, {const_cast<char*>(payload.data()), payload.size()}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    return sendmsg(udp_.get(), &m, MSG_DONTWAIT) >= 0;
}

bool UdpAssociation::send(const SockAddr& dst, std::string_view payload)
{
    if (state_ == State::ready)
        return send_now(dst, payload);
    if (state_ == State::closed || held_.size() >= kMaxHeld)
        return false;
    held_.emplace_back(dst, std::string(payload));
    return true;
}

std::optional<std::string_view> UdpAssociation::unwrap(std::string_view dgram, const SockAddr& expect,
                                                       std::string& why) const
{
    std::string_view error;
    auto d = socks5_udp_parse(dgram, &error);
    if (!d) {
        why = error;
        return std::nullopt;
    }
    // The app's socket stands for one destination: a datagram the relay
    // says comes from elsewhere is not an answer to it.
    if (!same(d->from, expect)) {
        why = fmt::format("from {}, not {}", d->from, expect);
        return std::nullopt;
    }
    return dgram.substr(d->payload);
}

}  // namespace ktp
