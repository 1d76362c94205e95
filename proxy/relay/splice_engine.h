// The relay engine that never brings bytes into user space: per direction,
// splice(2) from the source socket into a pipe and from the pipe to the
// destination, each once io_uring reports the socket ready. A direction holds
// a pipe from the worker's PipePool only while bytes sit in it.
#pragma once

#include "loop/pipe_pool.h"
#include "relay/engine.h"

#include <sys/types.h>

namespace ktp {

class RelayDriver;

class SpliceEngine final : public RelayEngine {
public:
    // pipes: at most this many out at once; pipe_bytes: each one's size.
    SpliceEngine(RelayDriver& driver, uint32_t pipes, uint32_t pipe_bytes);

    // Only connections whose sockets are ordinary fds (splice is a plain
    // syscall); their bytes to replay go into pipes first, so that every
    // send comes from a pipe: false when no pipe is to be had for them.
    bool adopt(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c) override;
    void recv(Conn& c, Dir d) override;
    void on_recv(Conn& c, Dir d, int res, uint32_t flags) override;
    void send(Conn& c, const Op& op) override;
    void on_send(Conn& c, Dir d, int res) override;
    void release(Conn& c, Dir d) override;
    uint32_t held_by_stalls() const override { return stalled_; }
    void count_stall(int delta) override { stalled_ += delta; }

    const PipePool& pipes() const { return pipes_; }

private:
    void send_now(Conn& c, Dir d, uint32_t offset, uint32_t len);
    void wake_one();
    static ssize_t recv_past_mark(int fd, Pipe& p);

    RelayDriver& driver_;
    PipePool pipes_;
    WaitQueue waiting_;     // polls that found no pipe to splice into
    uint32_t stalled_ = 0;  // stalled directions holding their pipe
};

}  // namespace ktp
