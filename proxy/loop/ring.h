// A worker's io_uring: created disabled on the main thread and enabled by the
// worker (its single issuer), submission helpers, the user_data packing of
// every request, linked timeouts, and the two requests that are not about a
// connection: the wake eventfd and the sweep timer.
#pragma once

#include "base/unique_fd.h"
#include "relay/relay.h"

#include <liburing.h>

#include <cstdint>

namespace ktp {

// What a request is, in the low bits of its user_data; the high bits are the
// object it belongs to (a Conn, a Listener, a Ring slot), aligned to
// kUserDataAlign so that its low bits are free. One tag per kind of
// completion: the worker dispatches a completion to the owner registered for
// its tag (EventLoop::own), so a new path (the UDP datagram relay, the DNS
// forwarder) adds its tags here and registers itself as their owner, next to
// the TCP setup pipeline and the relay, without touching their code.
enum Tag : uint8_t {
    kIgnore = 0,
    kAccept,       // TCP setup: multishot accept on a listener
    kConnect,      // TCP setup: connect to the destination or upstream proxy
    kRecv,         // relay: recv (buffers) or POLLIN (splice) on a direction's source
    kSend,         // relay: send (buffers, spill) or POLLOUT (splice) on its destination
    kShutdown,     // relay: shutdown(SHUT_WR) of a direction's destination
    kCancel,       // cancels of a connection's requests
    kWake,         // Ring's wake eventfd: stop() and snapshot()
    kSniffRecv,    // TCP setup: the client's first bytes
    kHsSend,       // TCP setup: upstream handshake bytes out
    kHsRecv,       // TCP setup: upstream handshake bytes in
    kSweep,        // Ring's sweep timer: the idle sweep
    kLinger,       // SO_LINGER {1,0} on a fixed socket before an abortive close
    kWatch,        // relay: the POLLERR watch on a source past EOF
    kSockopt,      // TCP setup: an upstream socket option failed (success posts nothing)
    kPoolIo,       // warm upstream sessions (upstream/session_pool.h): connect, greeting, idle watch
    kPoolTimeout,  // the timeout linked to a warm session's operation
    kPoolTimer,    // a warm-session pool's refill back-off
    kEarlyRecv,    // TCP setup: the client's first bytes for optimistic data, waited for briefly
    kPeekRecv,     // TCP setup: the client's first bytes beside a direct connect, never waited for
    kTagCount,     // free tags up to kMaxTags for the paths to come
};
constexpr unsigned kTagBits = 5;
constexpr unsigned kMaxTags = 1u << kTagBits;
static_assert(kTagCount <= kMaxTags);
constexpr uint64_t kTagMask = kMaxTags - 1;
constexpr uint64_t kDirBit = kMaxTags;
constexpr uint64_t kLowMask = kMaxTags * 2 - 1;
constexpr size_t kUserDataAlign = kMaxTags * 2;

inline uint64_t pack(const void* p, Tag tag, Dir d = Dir::ClientToUpstream)
{
    return reinterpret_cast<uint64_t>(p) | tag | (d == Dir::UpstreamToClient ? kDirBit : 0);
}

__kernel_timespec to_timespec(double seconds);

// One completion, decoded.
struct Completion {
    void* obj;
    Tag tag;
    Dir dir;
    int res;
    uint32_t flags;
};

// Whoever submitted requests of a tag handles their completions.
class CompletionOwner {
public:
    virtual void on_completion(const Completion& c) = 0;

protected:
    ~CompletionOwner() = default;
};

class Ring {
public:
    Ring();
    ~Ring();
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;

    io_uring& raw() { return ring_; }
    // Restricts the (still disabled) ring to loop/uring_ops.h; on the main
    // thread for every worker's ring before the privilege drop: a worker
    // that parses hostile bytes while another's ring is still disabled must
    // not find an unrestricted ring to enable (IORING_OP_SOCKET with the
    // relay's CAP_NET_RAW, out of seccomp's sight).
    void restrict();
    // On the worker thread, before its first submission: restricts the ring
    // if that was not done yet, then enables it (its single issuer).
    void enable();
    // A NOP (not in loop/uring_ops.h) through the enabled ring: its result,
    // -EACCES when the restriction holds (the privilege self-test).
    int try_unlisted_op();
    // The ring's fd (tests: enabling it the way hostile code in a worker would).
    int fd() const { return ring_.ring_fd; }
    // Early teardown: nothing of ours is pending once this returns.
    void exit();

    // A free SQE, submitting what is queued if the queue is full.
    io_uring_sqe* sqe();
    // Room for n SQEs in the next submission: a linked pair must go to the
    // kernel in one submission, or the link is cut and the operation would
    // run without its timeout.
    void reserve(unsigned n);
    // Bounds the previous SQE (which carries IOSQE_IO_LINK) by ts; posts
    // nothing of its own and is not counted in flight.
    void link_timeout(const __kernel_timespec& ts);

    // Submits what is queued and waits for at least one completion, or for
    // two when a request queued since the last call completes with nothing
    // for the loop to do (see note_quiet).
    void submit_and_wait();
    // The SQE just queued completes with no work for the loop once it
    // succeeds: a send whose next recv is already linked behind it (relay/
    // buffer_engine.cpp), or the cancel of a watch (relay/driver.cpp). It
    // usually completes inside the submitting io_uring_enter; woken by it
    // alone, the loop would only enter again to sleep. Only for a request that cannot wait (it completes inside
    // the submitting enter), or the wait for two would hold back a real
    // completion. Counted once per batch: several such sends may make the
    // two completions, and the loop then enters once more, as without.
    void note_quiet() { quiet_ = true; }
    // Hands each completion that arrived to f, decoded.
    template <class F>
    void drain(F&& f);

    // Thread-safe: the read armed by arm_wake() completes (tag kWake).
    void wake();
    void arm_wake();
    // A timer completing after `every` (tag kSweep); re-armed by its owner.
    void arm_timer(const __kernel_timespec& every);

private:

    io_uring ring_{};
    bool live_ = false;
    bool restricted_ = false;
    bool quiet_ = false;
    UniqueFd wake_fd_;  // eventfd: other threads write, the worker reads
    uint64_t wake_value_ = 0;
    struct alignas(kUserDataAlign) Slot {
        uint8_t unused;
    } wake_slot_{}, timer_slot_{};
};

template <class F>
void Ring::drain(F&& f)
{
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe)
    {
        ++seen;
        const uint64_t ud = cqe->user_data;
        f(Completion{reinterpret_cast<void*>(ud & ~kLowMask), static_cast<Tag>(ud & kTagMask),
                     (ud & kDirBit) ? Dir::UpstreamToClient : Dir::ClientToUpstream, cqe->res, cqe->flags});
    }
    io_uring_cq_advance(&ring_, seen);
}

}  // namespace ktp
