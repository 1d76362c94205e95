// Relay transitions. The invariant that bounds memory: each direction has at
// most one operation in flight and one buffer; a direction reads again only
// after the previous chunk was fully written (backpressure).
#include "relay/relay.h"

#include <cerrno>

namespace ktp {

std::string_view end_name(End e)
{
    switch (e) {
    case End::none: return "open";
    case End::eof: return "eof";
    case End::reset: return "reset";
    case End::refused: return "refused";
    case End::timeout: return "timeout";
    case End::error: return "error";
    case End::blocked: return "blocked";
    case End::upstream: return "upstream-error";
    case End::idle: return "idle";
    case End::dead: return "dead";
    }
    return "?";
}

Ops Relay::start(uint32_t pending_c2u, uint32_t pending_u2c)
{
    Ops out;
    const uint32_t pending[2] = {pending_c2u, pending_u2c};
    for (Dir d : {Dir::ClientToUpstream, Dir::UpstreamToClient}) {
        Flow& f = flows_[idx(d)];
        if (pending[idx(d)] > 0) {
            f.state = State::writing;
            f.sent = 0;
            f.pending = pending[idx(d)];
            out.push({Op::send, d, 0, f.pending});
        } else {
            f.state = State::reading;
            out.push({Op::recv, d, 0, 0});
        }
    }
    return out;
}

Ops Relay::abort()
{
    Ops out;
    if (end_ == End::none)
        end_ = End::reset;
    for (auto& f : flows_)
        f.state = State::done;
    out.push({Op::abort, Dir::ClientToUpstream, 0, 0});
    return out;
}

Ops Relay::on_recv(Dir d, int res)
{
    Flow& f = flows_[idx(d)];
    if (finished() || f.state != State::reading)
        return {};
    if (res < 0)
        return abort();
    Ops out;
    if (res == 0) {
        // EOF one way: pass it on as a half-close, keep the other way open.
        f.state = State::shutting_down;
        out.push({Op::shutdown, d, 0, 0});
        return out;
    }
    f.state = State::writing;
    f.sent = 0;
    f.pending = static_cast<uint32_t>(res);
    out.push({Op::send, d, 0, f.pending});
    return out;
}

Ops Relay::on_send(Dir d, int res)
{
    Flow& f = flows_[idx(d)];
    if (finished() || f.state != State::writing)
        return {};
    Ops out;
    if (res == -EAGAIN) {
        out.push({Op::send, d, f.sent, f.pending - f.sent});
        return out;
    }
    if (res <= 0)
        return abort();
    f.sent += static_cast<uint32_t>(res);
    f.bytes += static_cast<uint32_t>(res);
    if (f.sent < f.pending) {
        out.push({Op::send, d, f.sent, f.pending - f.sent});
        return out;
    }
    f.state = State::reading;
    out.push({Op::recv, d, 0, 0});
    return out;
}

Ops Relay::on_shutdown(Dir d, int res)
{
    Flow& f = flows_[idx(d)];
    if (finished() || f.state != State::shutting_down)
        return {};
    // ENOTCONN: the peer already went away entirely; treat as a reset.
    if (res < 0)
        return abort();
    f.state = State::done;
    Ops out;
    if (flows_[idx(other(d))].state == State::done) {
        end_ = End::eof;
        out.push({Op::finish, d, 0, 0});
    }
    return out;
}

}  // namespace ktp
