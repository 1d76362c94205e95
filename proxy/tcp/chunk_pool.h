// Fixed-size memory chunks, each its own anonymous mapping, with a bounded
// list of free ones: the setup chunks of the TCP pipeline (sniffed client
// bytes, upstream handshake replies) and the relay's spill chunks.
#pragma once

#include "relay/relay.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ktp {

class ChunkPool {
public:
    // bytes: each chunk's size; keep: free chunks kept for the next takers.
    ChunkPool(uint32_t bytes, size_t keep);
    ~ChunkPool();
    ChunkPool(const ChunkPool&) = delete;
    ChunkPool& operator=(const ChunkPool&) = delete;

    uint32_t bytes() const { return bytes_; }
    // nullptr (errno set) when the system has no memory for one.
    char* take();
    // Back to the free list, or to the system past `keep`; chunk becomes nullptr.
    void give(char*& chunk);
    // Unmaps a chunk outright (teardown).
    void unmap(char*& chunk);

private:
    uint32_t bytes_;
    size_t keep_;
    std::vector<char*> free_;
};

// Setup chunks, one pool per direction: c2u chunks hold sniffed client
// bytes, u2c chunks upstream handshake replies (and the tunnel bytes after
// them). In use they belong to their Conn (Conn::setup) until given back.
class SetupChunks {
public:
    // Enough for a ClientHello or an HTTP request head.
    static constexpr uint32_t kSniff = 16 * 1024;
    // Upstream handshake replies are small (SOCKS5 at most 262 bytes, HTTP
    // CONNECT a status line and a few headers): a smaller chunk keeps a burst
    // of handshakes from growing the pool by 16 KiB each.
    static constexpr uint32_t kHandshake = 4 * 1024;

    SetupChunks();
    char* take(Dir d) { return pools_[idx(d)].take(); }
    void give(char*& chunk, Dir d) { pools_[idx(d)].give(chunk); }
    void unmap(char*& chunk, Dir d) { pools_[idx(d)].unmap(chunk); }

private:
    ChunkPool pools_[2];
};

}  // namespace ktp
