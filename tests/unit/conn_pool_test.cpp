// ConnPool and ChunkPool: connections and setup chunks are recycled, so a
// steady state allocates nothing per connection, and what is kept is bounded.
#include "tcp/chunk_pool.h"
#include "tcp/conn.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <set>

using ktp::ChunkPool;
using ktp::Conn;
using ktp::ConnPool;

TEST_CASE("conn pool: a released Conn is the next one handed out, reset, and off the live list")
{
    ConnPool pool;
    auto now = std::chrono::steady_clock::now();
    Conn& a = pool.alloc(nullptr, now);
    Conn& b = pool.alloc(nullptr, now);
    CHECK(pool.live() == 2);
    CHECK(pool.live_head() == &b);
    a.route_name = "corp";
    a.held[0] = 7;
    a.sniff_len = 100;
    pool.release(a);
    CHECK(pool.live() == 1);
    CHECK(pool.live_head() == &b);
    CHECK(b.live_next == nullptr);
    Conn& c = pool.alloc(nullptr, now);
    CHECK(&c == &a);
    CHECK(c.route_name == "none");
    CHECK(c.held[0] == -1);
    CHECK(c.sniff_len == 0);
    CHECK(c.engine[0] == nullptr);
    CHECK(c.engine[1] == nullptr);
    CHECK(pool.all().size() == 2);
}

TEST_CASE("conn pool: a Conn's address leaves the user_data tag and direction bits free")
{
    ConnPool pool;
    Conn& c = pool.alloc(nullptr, std::chrono::steady_clock::now());
    CHECK((reinterpret_cast<uintptr_t>(&c) & ktp::kLowMask) == 0);
    uint64_t ud = ktp::pack(&c, ktp::kWatch, ktp::Dir::UpstreamToClient);
    CHECK(reinterpret_cast<Conn*>(ud & ~ktp::kLowMask) == &c);
    CHECK((ud & ktp::kTagMask) == ktp::kWatch);
    CHECK((ud & ktp::kDirBit) != 0);
}

TEST_CASE("chunk pool: given-back chunks are reused, and at most `keep` are kept")
{
    ChunkPool pool(4096, 2);
    char* a = pool.take();
    char* b = pool.take();
    char* c = pool.take();
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    a[4095] = 1;  // a whole chunk is usable
    std::set<char*> given{a, b};
    pool.give(a);
    pool.give(b);
    pool.give(c);  // past keep: unmapped
    CHECK(a == nullptr);
    CHECK(c == nullptr);
    char* d = pool.take();
    char* e = pool.take();
    CHECK(given.count(d) == 1);
    CHECK(given.count(e) == 1);
    pool.give(d);
    pool.give(e);
}
