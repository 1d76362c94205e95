// The worker: builds its parts, dispatches completions to their owners, and
// keeps snapshots, the idle sweep, the dead-destination cache and the log.
#include "loop/event_loop.h"

#include "base/json.h"
#include "base/log.h"
#include "kernel/bpf_abi.h"
#include "loop/tcp_progress.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <optional>

namespace ktp {

EventLoop::EventLoop(const LoopConfig& cfg, std::vector<Listener> listeners, const RouterSlot& router)
    : cfg_(cfg), listeners_(std::move(listeners)), router_(router),
      sweep_every_(to_timespec(std::clamp(cfg_.idle_timeout / 4, 0.25, 5.0))), fixed_(ring_),
      relay_(cfg_, ring_, fixed_, pool_, chunks_, *this, now_),
      tcp_(cfg_, ring_, fixed_, pool_, chunks_, relay_, *this, router_, now_, stop_)
{
    for (Tag t : {kAccept, kConnect, kSniffRecv, kHsSend, kHsRecv, kSockopt})
        own(t, tcp_);
    for (Tag t : {kRecv, kSend, kShutdown, kWatch, kCancel, kLinkTimeout, kLinger})
        own(t, relay_);
    own(kWake, *this);
    own(kSweep, *this);
}

EventLoop::~EventLoop()
{
    // Ring first, so no request of ours is pending when buffers and
    // connections go away.
    relay_.drop_buffer_ring();
    ring_.exit();
    for (auto& c : pool_.all())
        for (Dir d : {Dir::ClientToUpstream, Dir::UpstreamToClient}) {
            chunks_.unmap(c->setup[idx(d)], d);
            relay_.spills().unmap(c->spill[idx(d)]);
        }
}

std::future<WorkerSnapshot> EventLoop::snapshot(bool with_conns)
{
    std::future<WorkerSnapshot> f;
    {
        std::lock_guard lock(requests_mu_);
        requests_.push_back(SnapshotRequest{with_conns, {}});
        f = requests_.back().reply.get_future();
    }
    ring_.wake();
    return f;
}

void EventLoop::answer_snapshots()
{
    std::vector<SnapshotRequest> reqs;
    {
        std::lock_guard lock(requests_mu_);
        reqs.swap(requests_);
    }
    if (reqs.empty())
        return;
    WorkerSnapshot base = stats_;
    base.fixed_files_in_use = fixed_.in_use();
    if (const PipePool* pipes = relay_.pipes()) {
        base.pipes_in_use = pipes->out();
        base.pipes_pooled = pipes->pooled();
    }
    for (Conn* c = pool_.live_head(); c; c = c->live_next) {
        auto& r = base.routes[c->route_name];
        r.bytes_c2s += c->relay.bytes(Dir::ClientToUpstream);
        r.bytes_s2c += c->relay.bytes(Dir::UpstreamToClient);
    }
    for (auto& req : reqs) {
        WorkerSnapshot snap = base;
        if (req.with_conns)
            for (Conn* c = pool_.live_head(); c; c = c->live_next)
                snap.conns.push_back(ConnInfo{c->client.to_string(), c->orig.to_string(), c->route_name, c->domain,
                                              c->relay.bytes(Dir::ClientToUpstream),
                                              c->relay.bytes(Dir::UpstreamToClient),
                                              std::chrono::duration<double>(now_ - c->started).count(),
                                              c->proc.pid, c->proc.uid, std::string(comm_text(c->proc).view())});
        req.reply.set_value(std::move(snap));
    }
}

void EventLoop::routed(Conn& c)
{
    auto& r = stats_.routes[c.route_name];
    ++r.total;
    ++r.active;
}

void EventLoop::unreachable(const Conn& c, int err)
{
    // This app's connect already succeeded (to ktproxy's listener), so it
    // gets the reset; the cgroup's next connects to this destination fail
    // at once with err instead, for --dead-cache seconds, as a direct
    // connect would, and an app that tries a name's next address moves on.
    // A failed update only loses the hint.
    if (cfg_.dead_dst_fd < 0 || cfg_.dead_cache <= 0)
        return;
    ktp_dead_key key{};
    c.orig.to_mapped(key.addr);
    key.port = htons(c.orig.port());
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    ktp_dead_val v{};
    v.until_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(now.tv_nsec) +
                 static_cast<uint64_t>(cfg_.dead_cache * 1e9);
    v.err = err;
    bpf_map_update_elem(cfg_.dead_dst_fd, &key, &v, BPF_ANY);
}

void EventLoop::ended(Conn& c)
{
    log_conn(c);
    if (auto it = stats_.routes.find(c.route_name); it != stats_.routes.end() && it->second.active > 0) {
        --it->second.active;
        it->second.bytes_c2s += c.relay.bytes(Dir::ClientToUpstream);
        it->second.bytes_s2c += c.relay.bytes(Dir::UpstreamToClient);
    }
    if (End end = c.early_end != End::none ? c.early_end : c.relay.end(); end != End::eof)
        ++stats_.failures[fmt::format("{}/{}", c.route_name, end_name(end == End::none ? End::reset : end))];
}

void EventLoop::stop()
{
    stop_.store(true);
    ring_.wake();
}

void EventLoop::sweep_idle()
{
    // Idle means no bytes moved either way. A completion of ours says bytes
    // moved (last_active), but a send the kernel is still carrying out, or
    // bytes draining from a socket's buffer to a slow reader, complete
    // nothing for as long as they take: once a connection has been quiet
    // for half the limit, the kernel's byte counters of its sockets are
    // asked at every sweep, and a change since the last answer counts as
    // traffic. Sockets only in the fixed-file table have no fd to ask
    // (TCP_INFO has no io_uring form): for them completions alone count.
    auto limit = std::chrono::duration<double>(cfg_.idle_timeout);
    for (Conn* c = pool_.live_head(); c;) {
        Conn* next = c->live_next;  // fail may release c
        if (!c->relaying || c->aborting || now_ - c->last_active <= limit / 2) {
            c = next;
            continue;
        }
        std::optional<uint64_t> moved;
        for (int i = 0; i < 2; ++i)
            if (c->slot[i] < 0 && c->fd[i])
                if (auto n = tcp_bytes_moved(c->fd[i].get()))
                    moved = moved.value_or(0) + *n;
        if (moved) {
            if (c->moved_at >= c->last_active && *moved != c->moved)
                c->last_active = now_;
            c->moved = *moved;
            c->moved_at = now_;
        }
        if (now_ - c->last_active > limit)
            relay_.fail(*c, End::idle, fmt::format("no bytes moved for {}s", cfg_.idle_timeout));
        c = next;
    }
}

void EventLoop::log_conn(const Conn& c) const
{
    if (!log::enabled(log::Level::info))
        return;
    End end = c.early_end != End::none ? c.early_end : c.relay.end();
    if (end == End::none)
        end = End::reset;
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c.started).count();
    // Written into stack buffers (SockAddr's formatter included): logging
    // every connection costs no heap allocation (tools.sh counts them).
    const uint64_t c2s = c.relay.bytes(Dir::ClientToUpstream), s2c = c.relay.bytes(Dir::UpstreamToClient);
    if (log::json()) {
        fmt::memory_buffer f;
        auto out = std::back_inserter(f);
        fmt::format_to(out, "\"client\":\"{}\",\"orig\":\"{}\",\"via\":\"{}\",\"route\":\"", c.client, c.orig, c.via);
        json_escape_to(f, c.route_name);
        fmt::format_to(out, "\",\"c2s\":{},\"s2c\":{},\"ms\":{:.3f},\"end\":\"{}\"", c2s, s2c, ms, end_name(end));
        if (c.proc.known())
            fmt::format_to(out, ",\"pid\":{},\"comm\":\"{}\",\"uid\":{}", c.proc.pid, comm_text(c.proc).view(),
                           c.proc.uid);
        else
            fmt::format_to(out, ",\"pid\":null,\"comm\":null,\"uid\":null");
        if (c.sniffed) {
            fmt::format_to(out, ",\"domain\":\"");
            json_escape_to(f, c.domain);
            f.push_back('"');
        }
        if (!c.detail.empty()) {
            fmt::format_to(out, ",\"reason\":\"");
            json_escape_to(f, c.detail);
            f.push_back('"');
        }
        log::write_event(log::Level::info, "conn", std::string_view(f.data(), f.size()));
        return;
    }
    fmt::memory_buffer extra;
    if (c.proc.known())
        fmt::format_to(std::back_inserter(extra), " pid={} comm={} uid={}", c.proc.pid, comm_text(c.proc).view(),
                       c.proc.uid);
    else
        fmt::format_to(std::back_inserter(extra), " pid=- comm=- uid=-");
    if (c.sniffed)
        fmt::format_to(std::back_inserter(extra), " domain={}",
                       c.domain.empty() ? std::string_view("-") : std::string_view(c.domain));
    if (!c.detail.empty())
        fmt::format_to(std::back_inserter(extra), " reason=\"{}\"", c.detail);
    log::info("conn client={} orig={} via={} route={} c2s={} s2c={} ms={:.3f} end={}{}", c.client, c.orig, c.via,
              c.route_name, c2s, s2c, ms, end_name(end), std::string_view(extra.data(), extra.size()));
}

void EventLoop::on_completion(const Completion& cq)
{
    if (cq.tag == kWake) {
        answer_snapshots();
        if (!stop_.load())
            ring_.arm_wake();
        return;
    }
    sweep_idle();  // kSweep
    ring_.arm_timer(sweep_every_);
}

void EventLoop::run()
{
    ring_.enable();
    now_ = std::chrono::steady_clock::now();
    for (auto& l : listeners_)
        tcp_.listen(l);
    ring_.arm_wake();
    if (cfg_.idle_timeout > 0)
        ring_.arm_timer(sweep_every_);

    while (!stop_.load(std::memory_order_relaxed)) {
        ring_.submit_and_wait();
        now_ = std::chrono::steady_clock::now();
        ring_.drain([this](const Completion& cq) {
            // One virtual call per completion, to the owner of its tag
            // (none for kIgnore).
            if (CompletionOwner* o = owners_[cq.tag])
                o->on_completion(cq);
        });
    }
}

}  // namespace ktp
