// Bytes a TCP socket has moved, as the kernel counts them: how the idle
// sweep tells a connection whose data is still draining (a slow reader, a
// send the kernel is carrying out) from one where nothing moves at all.
#pragma once

#include <cstdint>
#include <optional>

namespace ktp {

// Payload bytes the peer acknowledged plus payload bytes received
// (TCP_INFO tcpi_bytes_acked + tcpi_bytes_received, Linux >= 4.2); nothing
// when the kernel cannot say.
std::optional<uint64_t> tcp_bytes_moved(int fd);

}  // namespace ktp
