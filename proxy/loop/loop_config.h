// A worker's settings (from the command line) and the router it reads.
#pragma once

#include "route/router.h"

#include <atomic>
#include <cstdint>
#include <memory>

namespace ktp {

class DnsTcp;
class NameMemory;

struct LoopConfig {
    uint32_t mark = 0;
    double connect_timeout = 10.0;  // connect + upstream handshake, seconds
    double sniff_timeout = 0.3;     // wait for the client's first bytes, seconds
    double idle_timeout = 0;        // seconds without traffic before a relay is cut; 0 = never
    uint32_t buffer_size = 32 * 1024;  // bytes per relay buffer
    uint32_t buffers = 128;            // relay buffers per worker (power of two)
    // Relay through a pipe per direction with splice(2) instead of recv/send
    // into ring buffers: the bytes never enter user space. `buffers` then
    // bounds the pipes per worker.
    bool splice = true;
    // With splice: a direction moves its first splice_after bytes through the
    // ring buffers, then splices. A short exchange (a request and a reply of
    // a few KiB) costs two io_uring requests per chunk and no syscall there,
    // against a poll and two splice(2) calls; past this, not copying the
    // bytes is worth the pipe work (docs/performance.md has the measurement).
    uint32_t splice_after = 64 * 1024;
    // ktproxy's outgoing sockets: TCP keepalive (idle seconds before the
    // first probe, seconds between probes, probes; idle 0 = off) and
    // TCP_USER_TIMEOUT (milliseconds sent data may stay unacknowledged; 0 =
    // the kernel's default): a destination that dies silently is noticed
    // and passed on to the app as a reset (End::dead).
    uint32_t keepalive_idle = 30, keepalive_intvl = 10, keepalive_cnt = 3;
    uint32_t user_timeout_ms = 60'000;
    // The connect hooks' negative cache (bpf/sock_deadcache.h): a direct
    // destination that refused or did not answer is written there for
    // dead_cache seconds. -1 / 0: none.
    int dead_dst_fd = -1;
    double dead_cache = 5;
    // ktproxy's own network namespace (SO_NETNS_COOKIE): the dead cache's
    // key for connections of its own listeners (a container's carry theirs).
    uint64_t own_netns_cookie = 0;
    // Names the cgroup's DNS answers gave for addresses (proxy/dns/): a
    // connection to one carries the name. Not owned; null with --no-udp.
    const NameMemory* names = nullptr;
    // Where connections to port 53 go instead of the relay (--udp: the DNS
    // forwarder reads their queries). Not owned; null without --udp.
    DnsTcp* dns_tcp = nullptr;
};

// The router in force; SIGHUP swaps it while workers read it.
using RouterSlot = std::atomic<std::shared_ptr<const Router>>;

}  // namespace ktp
