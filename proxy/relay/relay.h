// The relay of one connection as a pure state machine: I/O completions go in,
// the next operations to submit come out. No sockets here, so every
// transition (half-close, reset, partial sends) is unit-tested directly.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace ktp {

// A direction of the relay. ClientToUpstream reads the client socket and
// writes the upstream socket; UpstreamToClient the reverse.
enum class Dir : uint8_t { ClientToUpstream = 0, UpstreamToClient = 1 };
constexpr Dir other(Dir d) { return d == Dir::ClientToUpstream ? Dir::UpstreamToClient : Dir::ClientToUpstream; }
constexpr int idx(Dir d) { return static_cast<int>(d); }

enum class End : uint8_t {
    none,     // still running
    eof,      // both directions ended with EOF and were half-closed in turn
    reset,    // a peer reset or errored; the other side gets a reset too
    refused,  // upstream refused the connection
    timeout,  // upstream did not accept in time
    error,    // local failure (no original destination, socket error)
    blocked,  // a `block` rule decided after sniffing the domain
    upstream, // the upstream proxy refused or answered garbage in its handshake
    idle,     // no bytes moved either way for --idle-timeout
    dead,     // a peer stopped answering: keepalive probes or TCP_USER_TIMEOUT expired
};
std::string_view end_name(End e);

struct Op {
    enum Kind : uint8_t {
        none,
        recv,      // recv on the source socket of dir into its buffer
        send,      // send buf[offset, offset+len) of dir to its destination socket
        shutdown,  // shutdown(SHUT_WR) the destination socket of dir
        abort,     // cancel everything, reset both sockets
        finish,    // both directions done: close both normally
    } kind = none;
    Dir dir = Dir::ClientToUpstream;
    uint32_t offset = 0;
    uint32_t len = 0;
};

struct Ops {
    std::array<Op, 2> ops{};
    int n = 0;
    void push(Op op) { ops[n++] = op; }
    const Op* begin() const { return ops.data(); }
    const Op* end() const { return ops.data() + n; }
};

class Relay {
public:
    // Both sockets connected: start reading both ways. Bytes already sitting
    // at the start of a direction's buffer (sniffed client bytes, or tunnel
    // bytes that arrived with the upstream's handshake reply) are sent first.
    Ops start(uint32_t pending_c2u = 0, uint32_t pending_u2c = 0);
    // res: bytes received (>0), 0 for EOF, -errno for failure.
    Ops on_recv(Dir d, int res);
    // res: bytes sent (>0) or -errno. -EAGAIN: a send that was not to wait
    // found the destination full and sent nothing; the same bytes go again.
    Ops on_send(Dir d, int res);
    Ops on_shutdown(Dir d, int res);

    bool finished() const { return end_ != End::none; }
    End end() const { return end_; }
    uint64_t bytes(Dir d) const { return flows_[idx(d)].bytes; }

    enum class State : uint8_t { idle, reading, writing, shutting_down, done };
    State state(Dir d) const { return flows_[idx(d)].state; }

private:
    struct Flow {
        State state = State::idle;
        uint32_t sent = 0;     // bytes of the current chunk already sent
        uint32_t pending = 0;  // size of the current chunk
        uint64_t bytes = 0;    // total relayed in this direction
    };
    Ops abort();

    std::array<Flow, 2> flows_{};
    End end_ = End::none;
};

}  // namespace ktp
