// What both relay engines share: RelayDriver picks a connection's engine when
// the TCP setup pipeline hands it over, applies the Relay state machine's ops
// through it, bounds what stalled directions hold (spill chunks), and ends
// connections (aborts, the watch after EOF, release). It owns the relay
// completions (recv, send, shutdown, watch) and the teardown ones (cancel,
// link timeout, linger) of every connection, set-up ones included.
#pragma once

#include "loop/fixed_files.h"
#include "loop/loop_config.h"
#include "loop/pipe_pool.h"
#include "loop/ring.h"
#include "relay/engine.h"
#include "relay/relay.h"
#include "tcp/chunk_pool.h"
#include "tcp/conn.h"

#include <chrono>
#include <memory>
#include <string>

namespace ktp {

class BufferEngine;
class SpliceEngine;

class RelayDriver : public CompletionOwner {
public:
    RelayDriver(const LoopConfig& cfg, Ring& ring, FixedFiles& fixed, ConnPool& pool, SetupChunks& chunks,
                ConnObserver& observer, const std::chrono::steady_clock::time_point& now);
    ~RelayDriver();
    RelayDriver(const RelayDriver&) = delete;
    RelayDriver& operator=(const RelayDriver&) = delete;

    // Both sockets connected (and the upstream handshake done): relay,
    // replaying the bytes at the start of the setup chunks first.
    void start(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c);
    // kRecv, kSend, kShutdown, kWatch, kCancel, kLinger.
    void on_completion(const Completion& cq) override;

    // Carries out the Relay's next operations.
    void apply(Conn& c, const Ops& ops);
    // The shared end of a recv: an error noted, the Relay told, and past EOF
    // the source watched.
    void received(Conn& c, Dir d, int res);
    // The shared end of a send (or a failed one).
    void sent(Conn& c, Dir d, int res);
    // An io_uring SEND of len bytes at p to d's destination (kSend);
    // link: the next request queued runs only once this one sent all.
    void send_bytes(Conn& c, Dir d, const char* p, uint32_t len, int flags, bool link = false);
    // d reads on the ring buffers again once its chunk of len bytes is
    // sent (no move to splice then: see pick_engine).
    bool stays_on_buffers(const Conn& c, Dir d, uint32_t len) const;
    // d's setup chunk goes back (its bytes moved elsewhere).
    void release_setup_chunk(Conn& c, Dir d) { chunks_.give(c.setup[idx(d)], d); }
    // d's chunk is done: setup chunk, spill chunk and pool unit go back.
    void release(Conn& c, Dir d);

    // Cuts a connection: the first reason given is the one logged.
    void fail(Conn& c, End why, std::string detail);
    void abort(Conn& c);
    // Frees c once nothing of it is in flight and it is ending.
    void maybe_release(Conn& c);
    // The connection's observable end: its log line and its sockets closed
    // (with a reset when aborting). Its slot is released once nothing of it
    // is in flight (maybe_release).
    void end(Conn& c);
    // A relay socket's error that means the peer stopped answering: End::dead.
    void note_error(Conn& c, int sock_index, int res);

    // Stalled directions (see relay/driver.cpp).
    bool may_hold(Conn& c, Dir d);
    void hold_anyway(Conn& c, Dir d);
    ChunkPool& spills() { return spills_; }

    Ring& ring() { return ring_; }
    const PipePool* pipes() const;  // --relay splice only
    // Teardown: the buffer ring goes while the ring still lives.
    void drop_buffer_ring();

private:
    void to_fixed(Conn& c);
    void watch_after_eof(Conn& c, Dir d);
    // Before d reads again (nothing of d in flight, its pool units back): the
    // engine for what comes next.
    void pick_engine(Conn& c, Dir d);

    Ring& ring_;
    FixedFiles& fixed_;
    ConnPool& pool_;
    SetupChunks& chunks_;
    ConnObserver& observer_;
    const std::chrono::steady_clock::time_point& now_;
    std::unique_ptr<BufferEngine> buffers_;  // always: under --relay splice for connections on fixed files
    std::unique_ptr<SpliceEngine> splice_;   // --relay splice only
    // A stalled direction may keep its pool unit while fewer than stall_cap_
    // are held so; beyond, its bytes move to a spill chunk.
    uint32_t stall_cap_ = 0;
    uint64_t splice_after_ = 0;
    ChunkPool spills_;
};

}  // namespace ktp
