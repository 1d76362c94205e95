// Socket options set through io_uring (IORING_OP_URING_CMD with
// SOCKET_URING_OP_SETSOCKOPT, Linux >= 6.7): in the same submission as the
// operation that needs them, instead of one setsockopt(2) each.
#pragma once

#include <liburing.h>

#include <cstdint>

namespace ktp {

// Prepares setsockopt(fd, level, optname, optval, optlen); fixed: fd is a
// fixed-file slot. optval must stay valid until the request has run.
void prep_setsockopt(io_uring_sqe* s, int fd, bool fixed, int level, int optname, const void* optval,
                     uint32_t optlen);

// Whether this kernel runs socket setsockopt through io_uring: asked once per
// process, on a throwaway ring and socket.
bool sock_cmd_setsockopt_works();

}  // namespace ktp
