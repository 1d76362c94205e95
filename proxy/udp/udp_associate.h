// One SOCKS5 UDP association (RFC 1928 section 7) for one UDP flow that the
// rules send to a SOCKS5 upstream: the TCP control connection, held open
// for the association's life, and the UDP socket that talks to the relay
// address the server returned. Non-blocking: the UDP relay's epoll loop
// drives the handshake (on_control) and the datagrams; nothing here blocks.
// The header bytes are upstream/socks5_udp.h's.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "upstream/socks5.h"

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace ktp {

struct Upstream;

class UdpAssociation {
public:
    enum class State { connecting, handshaking, ready, closed };

    // Starts the control connection to up (a socks5 upstream); closed, with
    // error(), when even that fails. mark: SO_MARK of both sockets. ctl and
    // udp: the sockets to use (made in a container's namespace, so that the
    // association leaves from there); invalid: made here.
    UdpAssociation(const Upstream& up, uint32_t mark, UniqueFd ctl = UniqueFd(), UniqueFd udp = UniqueFd());

    int control_fd() const { return ctl_.get(); }
    int udp_fd() const { return udp_.get(); }  // -1 until the handshake is under way
    State state() const { return state_; }
    const std::string& error() const { return error_; }
    // The control socket waits to be writable (connect in progress).
    bool wants_write() const { return state_ == State::connecting; }

    // The control socket is ready: the handshake's next step, or, once the
    // association stands, EOF or an error closes it (the server ended it).
    State on_control();
    // A datagram for dst: sent with its header, or held (a few) until the
    // association stands. False when dropped.
    bool send(const SockAddr& dst, std::string_view payload);
    // A datagram from the relay: its payload when the relay names `expect`
    // as the sender; nullopt (why in error) for anything else.
    std::optional<std::string_view> unwrap(std::string_view dgram, const SockAddr& expect, std::string& why) const;

private:
    State close(std::string why);
    bool send_now(const SockAddr& dst, std::string_view payload);

    const Upstream& up_;
    uint32_t mark_;
    UniqueFd ctl_, udp_;
    UniqueFd udp_given_;  // the UDP socket given to the constructor, until the handshake needs it
    State state_ = State::connecting;
    std::string error_;
    std::unique_ptr<Socks5Handshake> hs_;
    std::string in_;
    SockAddr relay_;
    // Datagrams that arrived before the relay address was known.
    std::deque<std::pair<SockAddr, std::string>> held_;
};

}  // namespace ktp
