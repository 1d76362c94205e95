// The relay engine that moves bytes through user space: recv into a buffer
// the kernel picks from the worker's provided-buffer ring, send from it.
// Idle connections hold no buffer; the ring bounds the worker's relay memory.
#pragma once

#include "loop/buf_ring.h"
#include "loop/loop_config.h"
#include "relay/engine.h"

#include <memory>

namespace ktp {

class RelayDriver;

class BufferEngine final : public RelayEngine {
public:
    BufferEngine(RelayDriver& driver, const LoopConfig& cfg);

    bool adopt(Conn& c, uint32_t pending_c2u, uint32_t pending_u2c) override;
    void recv(Conn& c, Dir d) override;
    void on_recv(Conn& c, Dir d, int res, uint32_t flags) override;
    void send(Conn& c, const Op& op) override;
    void on_send(Conn& c, Dir d, int res) override;
    void release(Conn& c, Dir d) override;
    uint32_t held_by_stalls() const override;
    void count_stall(int) override {}

    void drop_buffer_ring() { bufs_.reset(); }

private:
    RelayDriver& driver_;
    uint32_t buffers_;
    uint32_t buffer_size_;
    std::unique_ptr<BufRing> bufs_;
    WaitQueue waiting_;  // recvs that found the ring empty
};

}  // namespace ktp
