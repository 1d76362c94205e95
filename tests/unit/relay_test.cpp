// The relay state machine, driven without sockets.
#include "relay/relay.h"

#include <catch2/catch.hpp>

#include <cerrno>

using namespace ktp;
constexpr Dir C2U = Dir::ClientToUpstream;
constexpr Dir U2C = Dir::UpstreamToClient;

static Op only(const Ops& ops)
{
    REQUIRE(ops.n == 1);
    return ops.ops[0];
}

TEST_CASE("relay starts by reading both directions")
{
    Relay r;
    Ops ops = r.start();
    REQUIRE(ops.n == 2);
    CHECK(ops.ops[0].kind == Op::recv);
    CHECK(ops.ops[1].kind == Op::recv);
    CHECK(ops.ops[0].dir != ops.ops[1].dir);
    CHECK_FALSE(r.finished());
}

TEST_CASE("received bytes are sent before the direction reads again (backpressure)")
{
    Relay r;
    r.start();
    Op s = only(r.on_recv(C2U, 1000));
    CHECK(s.kind == Op::send);
    CHECK(s.dir == C2U);
    CHECK(s.offset == 0);
    CHECK(s.len == 1000);
    CHECK(r.state(C2U) == Relay::State::writing);
    // A stray recv completion while writing must not start another read.
    CHECK(r.on_recv(C2U, 10).n == 0);
    Op next = only(r.on_send(C2U, 1000));
    CHECK(next.kind == Op::recv);
    CHECK(r.bytes(C2U) == 1000);
}

TEST_CASE("a partial send resends the remainder from the right offset")
{
    Relay r;
    r.start();
    r.on_recv(U2C, 5000);
    Op s = only(r.on_send(U2C, 1200));
    CHECK(s.kind == Op::send);
    CHECK(s.offset == 1200);
    CHECK(s.len == 3800);
    s = only(r.on_send(U2C, 3000));
    CHECK(s.offset == 4200);
    CHECK(s.len == 800);
    CHECK(only(r.on_send(U2C, 800)).kind == Op::recv);
    CHECK(r.bytes(U2C) == 5000);
}

TEST_CASE("EOF one way half-closes the other socket and keeps the reverse direction open")
{
    Relay r;
    r.start();
    Op sh = only(r.on_recv(C2U, 0));
    CHECK(sh.kind == Op::shutdown);
    CHECK(sh.dir == C2U);
    CHECK(r.on_shutdown(C2U, 0).n == 0);  // not finished: upstream may still talk
    CHECK_FALSE(r.finished());
    // The reply still flows after the client's half-close.
    CHECK(only(r.on_recv(U2C, 42)).kind == Op::send);
    CHECK(only(r.on_send(U2C, 42)).kind == Op::recv);
    CHECK(only(r.on_recv(U2C, 0)).kind == Op::shutdown);
    Op fin = only(r.on_shutdown(U2C, 0));
    CHECK(fin.kind == Op::finish);
    CHECK(r.finished());
    CHECK(r.end() == End::eof);
    CHECK(r.bytes(U2C) == 42);
}

TEST_CASE("a reset on either side aborts the whole connection")
{
    SECTION("recv error")
    {
        Relay r;
        r.start();
        CHECK(only(r.on_recv(U2C, -ECONNRESET)).kind == Op::abort);
        CHECK(r.end() == End::reset);
    }
    SECTION("send error")
    {
        Relay r;
        r.start();
        r.on_recv(C2U, 10);
        CHECK(only(r.on_send(C2U, -EPIPE)).kind == Op::abort);
        CHECK(r.end() == End::reset);
    }
    SECTION("shutdown error")
    {
        Relay r;
        r.start();
        r.on_recv(C2U, 0);
        CHECK(only(r.on_shutdown(C2U, -ENOTCONN)).kind == Op::abort);
    }
}

TEST_CASE("after an abort, late completions produce nothing")
{
    Relay r;
    r.start();
    r.on_recv(C2U, -ECONNRESET);
    CHECK(r.on_recv(U2C, 100).n == 0);
    CHECK(r.on_send(C2U, 100).n == 0);
    CHECK(r.on_shutdown(U2C, 0).n == 0);
    CHECK(r.end() == End::reset);
}

TEST_CASE("a zero-byte send completion is treated as a failure, not a loop")
{
    Relay r;
    r.start();
    r.on_recv(C2U, 10);
    CHECK(only(r.on_send(C2U, 0)).kind == Op::abort);
}

TEST_CASE("a send that found the destination full goes again from where it stopped")
{
    Relay r;
    r.start();
    r.on_recv(U2C, 100);
    Op op = only(r.on_send(U2C, 40));
    CHECK(op.kind == Op::send);
    CHECK(op.offset == 40);
    op = only(r.on_send(U2C, -EAGAIN));
    CHECK(op.kind == Op::send);
    CHECK(op.offset == 40);
    CHECK(op.len == 60);
    CHECK(r.bytes(U2C) == 40);
    CHECK(only(r.on_send(U2C, 60)).kind == Op::recv);
    CHECK(r.end() == End::none);
}

TEST_CASE("end reasons have stable log names")
{
    CHECK(end_name(End::eof) == "eof");
    CHECK(end_name(End::reset) == "reset");
    CHECK(end_name(End::refused) == "refused");
    CHECK(end_name(End::timeout) == "timeout");
    CHECK(end_name(End::error) == "error");
    CHECK(end_name(End::blocked) == "blocked");
    CHECK(end_name(End::dead) == "dead");
    CHECK(end_name(End::upstream) == "upstream-error");
}

TEST_CASE("bytes read before the relay started (sniffed or after a handshake) are sent first, nothing lost")
{
    Relay r;
    Ops ops = r.start(517, 0);
    REQUIRE(ops.n == 2);
    const Op& c2u = ops.ops[0].dir == C2U ? ops.ops[0] : ops.ops[1];
    const Op& u2c = ops.ops[0].dir == C2U ? ops.ops[1] : ops.ops[0];
    CHECK(c2u.kind == Op::send);
    CHECK(c2u.offset == 0);
    CHECK(c2u.len == 517);
    CHECK(u2c.kind == Op::recv);
    CHECK(only(r.on_send(C2U, 517)).kind == Op::recv);
    CHECK(r.bytes(C2U) == 517);

    Relay both;
    Ops b = both.start(10, 20);
    CHECK(b.ops[0].kind == Op::send);
    CHECK(b.ops[1].kind == Op::send);
}
