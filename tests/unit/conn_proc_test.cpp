// The process fields of a connection as the log and `ktproxy status` print them.
#include "tcp/conn_proc.h"

#include <catch2/catch.hpp>

#include <cstring>

using namespace ktp;

TEST_CASE("comm prints as one token: as is when plain, '?' for what would break a log line")
{
    ConnProc p;
    p.pid = 42;
    std::memcpy(p.comm, "curl", 5);
    CHECK(comm_text(p).view() == "curl");

    std::memcpy(p.comm, "a b\"c\\d\te\x01\xff", 12);
    CHECK(comm_text(p).view() == "a?b?c?d?e??");

    // All 16 bytes used, no NUL: the kernel never does it, but a record
    // read from a map must not be trusted to end.
    std::memset(p.comm, 'x', sizeof(p.comm));
    CHECK(comm_text(p).view() == std::string(16, 'x'));
}

TEST_CASE("no process (gateway) or an empty comm prints as '-'")
{
    ConnProc none;
    std::memcpy(none.comm, "ghost", 6);
    CHECK(comm_text(none).view() == "-");
    ConnProc empty;
    empty.pid = 7;
    CHECK(comm_text(empty).view() == "-");
}
