// The cgroup's DNS over TCP (port 53/tcp, --udp): the TCP workers hand each
// such accepted connection here instead of relaying its bytes. One thread
// with epoll reads the length-prefixed queries (RFC 1035 4.2.2; several may
// be pipelined, RFC 7766), the forwarder decides each by its name exactly as
// for UDP (dns/dns_forwarder.h), block and fake answers go back at once, the
// others are exchanged over TCP on the forwarder's pool and their answers
// written back as they come (RFC 7766 6.2.1.1 allows any order). Hostile
// clients are cut with one log line: bounded connections, pending queries,
// unsent answers and time without a whole query.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"
#include "tcp/conn_proc.h"

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ktp {

class Netns;

class DnsForwarder;

class DnsTcp {
public:
    // Throws Error.
    explicit DnsTcp(DnsForwarder& dns);
    ~DnsTcp();
    DnsTcp(const DnsTcp&) = delete;
    DnsTcp& operator=(const DnsTcp&) = delete;

    void start();
    // After the workers (nothing is adopted any more); stops the forwarder
    // first (no answer comes any more).
    void stop();
    // Thread-safe (the workers): serve this accepted connection, whose app
    // connected to `resolver`. Owns fd from here on. egress: a container's
    // namespace its exchanges leave from (--egress container); null:
    // ktproxy's.
    void adopt(UniqueFd fd, const SockAddr& client, const SockAddr& resolver, const ConnProc& who,
               std::shared_ptr<const Netns> egress = nullptr);

    struct Conn;

private:
    struct Answer {
        uint64_t conn;
        std::string framed;  // "" when the exchange failed and nothing can be said
    };
    void run();
    void take_adopted();
    void take_answers();
    void on_readable(Conn& c);
    // Each of these returns false when it closed c (c is gone then).
    // Serves every whole query in c.in, as many as may be in flight.
    bool serve_queries(Conn& c);
    // Closes c when the client sent its FIN and has every answer.
    bool finish_if_done(Conn& c);
    bool send_answer(Conn& c, std::string framed);
    // Writes what it can of c.out.
    bool flush(Conn& c);
    // One query: answered, sent on (pending), or c is closed.
    void query(Conn& c, std::string_view msg);
    void update_events(Conn& c);
    // Closes c (logged: why, unless it ended as it should); freed after this batch.
    void close(Conn& c, const std::string& why);
    void sweep();

    DnsForwarder& dns_;
    UniqueFd epoll_, wake_;
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    uint64_t next_id_ = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
    std::mutex mu_;  // guards the two queues the other threads fill
    std::vector<std::unique_ptr<Conn>> adopted_;
    std::deque<Answer> answers_;
};

}  // namespace ktp
