// The interface of a relay engine: how one connection's bytes move between
// its two sockets once both are ready. Two engines: SpliceEngine (through a
// pipe per direction, the bytes never enter user space) and BufferEngine
// (recv/send through the worker's provided-buffer ring). What they share
// (applying the Relay's ops, stalls and spills, aborts, release, the watch
// after EOF) is RelayDriver's (relay/driver.h); each engine does only the
// data-path part, behind one virtual call per completion.
#pragma once

#include "relay/relay.h"

#include <cstdint>
#include <deque>

namespace ktp {

struct Conn;

class RelayEngine {
public:
    virtual ~RelayEngine() = default;

    // Takes over a connection whose sockets are connected; the bytes to
    // replay per direction sit at the start of its setup chunks. False: this
    // engine cannot carry it (nothing changed), another one must.
    virtual bool adopt(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c) = 0;
    // Waits for data on d's source; completes as kRecv.
    virtual void recv(Conn& c, Dir d) = 0;
    virtual void on_recv(Conn& c, Dir d, int res, uint32_t flags) = 0;
    // Sends op's bytes of d to its destination; completes as kSend.
    virtual void send(Conn& c, const Op& op) = 0;
    virtual void on_send(Conn& c, Dir d, int res) = 0;
    // d's pool unit (ring buffer, pipe) goes back; a waiter for one wakes.
    virtual void release(Conn& c, Dir d) = 0;

    // Stalled directions (RelayDriver::may_hold): the pool units this
    // engine's stalled directions hold, as far as it can tell, and a
    // direction of it starting (+1) or ending (-1) a stall.
    virtual uint32_t held_by_stalls() const = 0;
    virtual void count_stall(int delta) = 0;
};

// Connections whose recv found the engine's pool empty (no ring buffer, no
// pipe), waiting for a unit to come back: one queue per engine, so a buffer
// coming back never wakes a connection that waits for a pipe.
class WaitQueue {
public:
    void push(Conn& c, Dir d);
    // The next waiter still waiting (not recycled, aborted or done), if any.
    bool pop(Conn*& c, Dir& d);

private:
    struct Waiter {
        Conn* c;
        Dir d;
        uint32_t gen;
    };
    std::deque<Waiter> q_;
};

}  // namespace ktp
