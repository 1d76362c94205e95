// Every io_uring opcode and register operation a worker ring uses, in one
// place: the ring is restricted to exactly these before it is enabled
// (IORING_REGISTER_RESTRICTIONS), so a request outside the list fails with
// EACCES instead of reaching the kernel. Whoever adds an io_uring_prep_*
// call (the UDP path, the DNS forwarder) adds its opcode here, or the
// request fails at run time; tests/docs/uring_ops_test.sh checks the list
// against the sources.
#pragma once

#include <liburing.h>

#include <cstdint>

namespace ktp {

inline constexpr uint8_t kRingOpcodes[] = {
    IORING_OP_ACCEPT,        // tcp/setup.cpp: multishot accept on the listeners
    IORING_OP_CONNECT,       // tcp/setup.cpp: the upstream connect
    IORING_OP_RECV,          // tcp/setup.cpp sniff and handshake, relay/buffer_engine.cpp
    IORING_OP_SEND,          // tcp/setup.cpp handshake, relay/driver.cpp
    IORING_OP_SHUTDOWN,      // relay/driver.cpp: a half-close passed on
    IORING_OP_POLL_ADD,      // relay/splice_engine.cpp readiness, relay/driver.cpp error watch
    IORING_OP_ASYNC_CANCEL,  // relay/driver.cpp: cancel a watch, or everything on an fd
    IORING_OP_CLOSE,         // relay/driver.cpp: a connection's graceful closes
    IORING_OP_LINK_TIMEOUT,  // loop/ring.cpp: connect and handshake deadlines
    IORING_OP_TIMEOUT,       // loop/ring.cpp: the idle sweep
    IORING_OP_READ,          // loop/ring.cpp: the wake eventfd
    IORING_OP_URING_CMD,     // loop/fixed_files.cpp: setsockopt(SO_LINGER) for resets
};

// Register operations after the ring is enabled (those before it, such as
// the sparse file table and the buffer ring, are not restricted).
inline constexpr uint8_t kRingRegisterOps[] = {
    IORING_REGISTER_FILES_UPDATE,    // loop/fixed_files.cpp: install and clear a slot
    IORING_REGISTER_FILES_UPDATE2,
    IORING_REGISTER_PBUF_RING,       // loop/buf_ring.cpp
    IORING_UNREGISTER_PBUF_RING,     // loop/buf_ring.cpp, at teardown
};

}  // namespace ktp
