// A provided-buffer ring registered with one io_uring: recvs pick a buffer
// only when data arrives, so idle connections hold no relay memory at all.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <cstddef>

namespace ktp {

class BufRing {
public:
    // count must be a power of two (<= 32768); size is the bytes per buffer.
    BufRing(io_uring& ring, uint16_t group, uint32_t count, uint32_t size);
    ~BufRing();
    BufRing(const BufRing&) = delete;
    BufRing& operator=(const BufRing&) = delete;

    uint16_t group() const { return group_; }
    uint32_t size() const { return size_; }
    uint32_t count() const { return count_; }
    char* addr(uint16_t bid) const { return base_ + static_cast<size_t>(bid) * size_; }
    // Hands a buffer back to the kernel for the next recv.
    void recycle(uint16_t bid);
    uint32_t in_use() const { return in_use_; }
    void taken() { ++in_use_; }

private:
    io_uring& ring_;
    io_uring_buf_ring* br_ = nullptr;
    size_t br_bytes_ = 0;
    char* base_ = nullptr;
    size_t base_bytes_ = 0;
    uint16_t group_;
    uint32_t count_, size_;
    uint32_t in_use_ = 0;
};

}  // namespace ktp
