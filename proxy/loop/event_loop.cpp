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
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <optional>

namespace ktp {

EventLoop::EventLoop(const LoopConfig& cfg, std::vector<Listener> listeners, const RouterSlot& router)
    : cfg_(cfg), listeners_(std::move(listeners)), router_(router),
      sweep_every_(to_timespec(cfg_.idle_timeout > 0 ? std::clamp(cfg_.idle_timeout / 4, 0.25, 5.0) : 1.0)), fixed_(ring_),
      sessions_(cfg_, ring_, now_), relay_(cfg_, ring_, fixed_, pool_, chunks_, *this, now_),
      tcp_(cfg_, ring_, fixed_, pool_, chunks_, relay_, *this, router_, now_, stop_)
{
    for (Tag t : {kAccept, kConnect, kSniffRecv, kHsSend, kHsRecv, kSockopt, kEarlyRecv, kPeekRecv})
        own(t, tcp_);
    for (Tag t : {kPoolIo, kPoolTimeout, kPoolTimer})
        own(t, sessions_);
    tcp_.use_sessions(sessions_);
    for (Tag t : {kRecv, kSend, kShutdown, kWatch, kCancel, kLinger})
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

void EventLoop::add_listeners(std::vector<Listener> ls)
{
    {
        std::lock_guard lock(requests_mu_);
        for (auto& l : ls)
            adds_.push_back(std::move(l));
    }
    ring_.wake();
}

void EventLoop::remove_listeners(uint64_t netns_cookie)
{
    {
        std::lock_guard lock(requests_mu_);
        removes_.push_back(netns_cookie);
    }
    ring_.wake();
}

void EventLoop::apply_listener_changes()
{
    std::vector<Listener> adds;
    std::vector<uint64_t> removes;
    {
        std::lock_guard lock(requests_mu_);
        adds.swap(adds_);
        removes.swap(removes_);
    }
    for (auto& l : adds) {
        netns_listeners_.push_back(std::move(l));
        tcp_.listen(netns_listeners_.back());
    }
    for (uint64_t cookie : removes)
        for (auto& l : netns_listeners_) {
            if (l.netns_cookie != cookie || l.closing)
                continue;
            l.closing = true;
            io_uring_sqe* s = ring_.sqe();
            io_uring_prep_cancel64(s, pack(&l, kAccept), 0);
            io_uring_sqe_set_data64(s, pack(nullptr, kIgnore));
        }
    // Accepted connections keep their namespace (Conn::egress), not a
    // pointer to the listener: a closed one can go at once.
    netns_listeners_.remove_if([](const Listener& l) { return l.closed; });
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
                                              c->proc.pid, c->proc.uid, std::string(comm_text(c->proc).view()),
                                              c->app_ns ? c->app_ns->cookie : 0,
                                              c->app_ns ? c->app_ns->cgroup : std::string()});
        for (const Listener& l : netns_listeners_)
            if (l.ns && !l.closing)
                snap.netns_listeners.push_back({l.ns->cookie, l.ns->cgroup, l.addr.to_string(),
                                                l.ns->udp_relay.empty() ? std::string() : l.ns->udp_relay.to_string()});
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
    // Dead as seen from the app's namespace only: a container's
    // connections leave from its own, whose routes are not the host's.
    key.netns = c.app_ns ? c.app_ns->cookie : cfg_.own_netns_cookie;
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
        it->second.bytes_c2s += c.relay.bytes(Dir::ClientToUpstream) + c.early;
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

void EventLoop::sweep()
{
    if (cfg_.idle_timeout > 0)
        sweep_idle();
    sweep_half_closed();
    apply_listener_changes();
}

void EventLoop::sweep_half_closed()
{
    // The app sent its FIN, ktproxy passed it on, and the destination has
    // been quiet since: a request waiting for its answer, or an app that
    // closed its socket for good and a destination that will never read
    // or answer. Only the kernel's socket table tells them apart (a socket
    // no process holds can read nothing more); such a relay is cut, as the
    // kernel would reset the data the destination might still send.
    constexpr auto quiet = std::chrono::seconds(1);
    for (Conn* c = pool_.live_head(); c;) {
        Conn* next = c->live_next;  // fail may release c
        if (c->relaying && !c->aborting && c->local && now_ - c->last_active >= quiet &&
            c->relay.state(Dir::ClientToUpstream) == Relay::State::done &&
            c->relay.state(Dir::UpstreamToClient) != Relay::State::done &&
            app_probe_.holder(c->client, *c->local, c->app_ns.get()) == AppSocketProbe::Holder::none)
            relay_.fail(*c, End::dead, "the app closed its socket; the destination never answered its FIN");
        c = next;
    }
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
    // Bytes sent with the CONNECT request (optimistic data) never went through the relay.
    const uint64_t c2s = c.relay.bytes(Dir::ClientToUpstream) + c.early, s2c = c.relay.bytes(Dir::UpstreamToClient);
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
        if (c.warm)
            fmt::format_to(out, ",\"session\":\"warm\"");
        if (c.early > 0)
            fmt::format_to(out, ",\"early\":{}", c.early);
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
    // Sniffed, or remembered from the app's DNS answer (docs/dns.md).
    if (c.sniffed || !c.domain.empty())
        fmt::format_to(std::back_inserter(extra), " domain={}",
                       c.domain.empty() ? std::string_view("-") : std::string_view(c.domain));
    if (c.warm)
        fmt::format_to(std::back_inserter(extra), " session=warm");
    if (c.early > 0)
        fmt::format_to(std::back_inserter(extra), " early={}", c.early);
    if (!c.detail.empty())
        fmt::format_to(std::back_inserter(extra), " reason=\"{}\"", c.detail);
    log::info("conn client={} orig={} via={} route={} c2s={} s2c={} ms={:.3f} end={}{}", c.client, c.orig, c.via,
              c.route_name, c2s, s2c, ms, end_name(end), std::string_view(extra.data(), extra.size()));
}

void EventLoop::on_completion(const Completion& cq)
{
    if (cq.tag == kWake) {
        answer_snapshots();
        apply_listener_changes();
        if (!stop_.load())
            ring_.arm_wake();
        return;
    }
    sweep();  // kSweep
    ring_.arm_timer(sweep_every_);
}

void EventLoop::run()
{
    ring_.enable();
    if (const char* v = getenv("KTPROXY_PRIV_SELFTEST"); v && std::string_view(v) == "1")
        {
        int res = ring_.try_unlisted_op();
        log::info("ring self-test: nop={}", res < 0 ? strerrorname_np(-res) : "ALLOWED");
    }
    now_ = std::chrono::steady_clock::now();
    for (auto& l : listeners_)
        tcp_.listen(l);
    sessions_.sync(router_.load());  // warm sessions from the start, not from the first connection
    ring_.arm_wake();
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
