// Chunk pools: mmap per chunk, a bounded free list.
#include "tcp/chunk_pool.h"

#include <sys/mman.h>

namespace ktp {

namespace {
// Free setup chunks kept for the next connections, per worker: about 256 KiB
// of each kind, enough for the handshakes of a busy steady state; a burst
// beyond that maps and unmaps, so that it leaves nothing resident behind.
constexpr size_t kFreeChunkBytesKept = 256 * 1024;
}  // namespace

ChunkPool::ChunkPool(uint32_t bytes, size_t keep) : bytes_(bytes), keep_(keep)
{
    free_.reserve(keep);
}

ChunkPool::~ChunkPool()
{
    for (char* chunk : free_)
        ::munmap(chunk, bytes_);
}

char* ChunkPool::take()
{
    // Each chunk is its own mapping, not heap memory: the heap would keep the
    // pages of a burst of thousands of handshakes resident for good, since
    // live objects allocated in between pin them; munmap gives them back.
    if (free_.empty()) {
        void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
    char* chunk = free_.back();
    free_.pop_back();
    return chunk;
}

void ChunkPool::give(char*& chunk)
{
    if (!chunk)
        return;
    // Keep a few for the next takers; a burst of thousands must not stay
    // resident once it is over.
    if (free_.size() < keep_)
        free_.push_back(chunk);
    else
        ::munmap(chunk, bytes_);
    chunk = nullptr;
}

void ChunkPool::unmap(char*& chunk)
{
    if (chunk)
        ::munmap(chunk, bytes_);
    chunk = nullptr;
}

SetupChunks::SetupChunks()
    : pools_{ChunkPool(kSniff, kFreeChunkBytesKept / kSniff), ChunkPool(kHandshake, kFreeChunkBytesKept / kHandshake)}
{
}

}  // namespace ktp
