// setsockopt through io_uring: the request by hand (liburing 2.3 predates
// it) and the one-time probe of the kernel.
#include "loop/sock_cmd.h"

#include "base/unique_fd.h"

#include <netinet/in.h>
#include <sys/socket.h>

namespace ktp {

namespace {
constexpr uint32_t kSocketUringOpSetsockopt = 3;
}

void prep_setsockopt(io_uring_sqe* s, int fd, bool fixed, int level, int optname, const void* optval,
                     uint32_t optlen)
{
    // Field placement per the kernel's io_uring_sqe: cmd_op in the low word
    // of off, level and optname in addr, optlen in file_index, optval in addr3.
    io_uring_prep_rw(IORING_OP_URING_CMD, s, fd, nullptr, 0, 0);
    if (fixed)
        s->flags |= IOSQE_FIXED_FILE;
    s->cmd_op = kSocketUringOpSetsockopt;
    s->addr = static_cast<uint64_t>(static_cast<uint32_t>(level)) |
              (static_cast<uint64_t>(static_cast<uint32_t>(optname)) << 32);
    s->file_index = optlen;
    s->addr3 = reinterpret_cast<uint64_t>(optval);
}

bool sock_cmd_setsockopt_works()
{
    // A function-local static: workers start together and ask at once.
    static const bool works = [] {
        io_uring ring{};
        if (io_uring_queue_init(2, &ring, 0) != 0)
            return false;
        bool ok = false;
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int one = 1;
        if (fd) {
            io_uring_sqe* s = io_uring_get_sqe(&ring);
            prep_setsockopt(s, fd.get(), false, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
            io_uring_cqe* cqe = nullptr;
            if (io_uring_submit_and_wait(&ring, 1) == 1 && io_uring_wait_cqe(&ring, &cqe) == 0) {
                int v = 0;
                socklen_t len = sizeof(v);
                ok = cqe->res == 0 && getsockopt(fd.get(), SOL_SOCKET, SO_KEEPALIVE, &v, &len) == 0 && v == 1;
                io_uring_cqe_seen(&ring, cqe);
            }
        }
        io_uring_queue_exit(&ring);
        return ok;
    }();
    return works;
}

}  // namespace ktp
