// Provided-buffer ring setup (kernel >= 5.19) and recycling.
#include "loop/buf_ring.h"

#include "base/error.h"

#include <sys/mman.h>

namespace ktp {

BufRing::BufRing(io_uring& ring, uint16_t group, uint32_t count, uint32_t size)
    : ring_(ring), group_(group), count_(count), size_(size)
{
    if (count == 0 || (count & (count - 1)) != 0 || count > 32768)
        fail("relay buffer count {} must be a power of two up to 32768", count);
    br_bytes_ = count * sizeof(io_uring_buf);
    void* mem = mmap(nullptr, br_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        fail_errno("mmap buffer ring ({} entries)", count);
    br_ = static_cast<io_uring_buf_ring*>(mem);
    // Buffers are mmapped too: pages are only backed once a recv lands in them.
    base_bytes_ = static_cast<size_t>(count) * size;
    mem = mmap(nullptr, base_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        munmap(br_, br_bytes_);
        fail_errno("mmap relay buffers ({} x {} bytes)", count, size);
    }
    base_ = static_cast<char*>(mem);

    io_uring_buf_ring_init(br_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(br_);
    reg.ring_entries = count;
    reg.bgid = group;
    if (int err = io_uring_register_buf_ring(&ring_, &reg, 0); err < 0) {
        munmap(base_, base_bytes_);
        munmap(br_, br_bytes_);
        fail("register io_uring buffer ring: {} (needs Linux >= 5.19)", errno_text(-err));
    }
    int mask = io_uring_buf_ring_mask(count);
    for (uint32_t i = 0; i < count; ++i)
        io_uring_buf_ring_add(br_, addr(static_cast<uint16_t>(i)), size, static_cast<uint16_t>(i), mask,
                              static_cast<int>(i));
    io_uring_buf_ring_advance(br_, static_cast<int>(count));
}

BufRing::~BufRing()
{
    io_uring_unregister_buf_ring(&ring_, group_);
    munmap(base_, base_bytes_);
    munmap(br_, br_bytes_);
}

void BufRing::recycle(uint16_t bid)
{
    io_uring_buf_ring_add(br_, addr(bid), size_, bid, io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(br_, 1);
    --in_use_;
}

}  // namespace ktp
