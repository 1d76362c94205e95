// The common shape of upstream proxy handshakes (SOCKS5, HTTP CONNECT): pure
// state machines, bytes from the upstream in, bytes to send out. The event
// loop does the I/O, so the parsers are unit-tested and fuzzed on bytes.
#pragma once

#include "base/sock_addr.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace ktp {

struct HandshakeStep {
    enum Kind { need_more, send, done, failed } kind = need_more;
    std::string out;      // bytes to send when kind == send
    size_t consumed = 0;  // input bytes used; the caller drops them before the next feed
    std::string error;    // one line, with the upstream's reply code, when kind == failed
};

class Handshake {
public:
    virtual ~Handshake() = default;
    // The first bytes to send (or failed, when the target cannot be expressed).
    virtual HandshakeStep start() = 0;
    // input = every unconsumed byte received so far. need_more consumes
    // nothing: the next call sees the same bytes plus what arrived since.
    // On done, the bytes after `consumed` are tunnel data and must be relayed.
    virtual HandshakeStep feed(std::string_view input) = 0;

    // Optimistic data: the client's first bytes, sent right behind the
    // CONNECT request instead of one round trip later. Set before start().
    void send_early(std::string data) { early_ = std::move(data); }
    size_t early_size() const { return early_.size(); }
    // The early bytes went out with the request: the upstream may have
    // passed them on, so the connection must not be tried elsewhere.
    bool early_handed_out() const { return early_out_; }
    // The upstream answered the CONNECT with a refusal (the destination's
    // problem, not the upstream's health).
    bool target_refused() const { return target_refused_; }

protected:
    std::string early_;
    bool early_out_ = false;
    bool target_refused_ = false;
};

// Where the upstream should connect to.
struct Target {
    std::string domain;  // empty = use addr; else sent as a name so DNS resolves at the proxy
    SockAddr addr;       // the port always comes from here
};

// Shorthands for the state machines' results.
inline HandshakeStep step_need_more() { return {}; }

inline HandshakeStep step_send(std::string out, size_t consumed)
{
    HandshakeStep s;
    s.kind = HandshakeStep::send;
    s.out = std::move(out);
    s.consumed = consumed;
    return s;
}

inline HandshakeStep step_done(size_t consumed)
{
    HandshakeStep s;
    s.kind = HandshakeStep::done;
    s.consumed = consumed;
    return s;
}

inline HandshakeStep step_failed(std::string error)
{
    HandshakeStep s;
    s.kind = HandshakeStep::failed;
    s.error = std::move(error);
    return s;
}

}  // namespace ktp
