// A translation unit of its own: glibc's <netinet/tcp.h> has a struct
// tcp_info without the byte counters, and it cannot be mixed with the
// kernel's <linux/tcp.h>, which has them.
#include "loop/tcp_progress.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>

namespace ktp {

std::optional<uint64_t> tcp_bytes_moved(int fd)
{
    tcp_info ti{};
    socklen_t len = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
        return std::nullopt;
    return ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
}

}  // namespace ktp
