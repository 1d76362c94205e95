// Worker threads and their loops.
#include "daemon/workers.h"

#include "base/error.h"
#include "base/log.h"
#include "daemon/privileges.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <future>

namespace ktp {

LoopConfig loop_config(const Options& o, int dead_dst_fd)
{
    LoopConfig lc;
    lc.mark = o.mark;
    lc.connect_timeout = o.connect_timeout;
    lc.sniff_timeout = o.sniff_timeout;
    lc.idle_timeout = o.idle_timeout;
    lc.buffer_size = o.buffer_size;
    lc.buffers = o.buffers;
    lc.splice = o.relay == "splice";
    lc.keepalive_idle = o.keepalive_idle;
    lc.keepalive_intvl = o.keepalive_intvl;
    lc.keepalive_cnt = o.keepalive_cnt;
    lc.user_timeout_ms = o.user_timeout > 0 ? std::max<uint32_t>(1, static_cast<uint32_t>(o.user_timeout * 1000)) : 0;
    lc.dead_cache = o.dead_cache;
    lc.dead_dst_fd = dead_dst_fd;
    return lc;
}

Workers::Workers(const LoopConfig& cfg, std::vector<std::vector<Listener>> sets, const RouterSlot& router)
{
    for (auto& set : sets)
        loops_.push_back(std::make_unique<EventLoop>(cfg, std::move(set), router));
}

Workers::~Workers()
{
    for (auto& l : loops_)
        l->stop();
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
}

void Workers::start()
{
    // Every ring restricted before the first worker parses a byte: a worker
    // taken over by hostile input must find no ring it could enable
    // without the restriction.
    for (auto& loop : loops_)
        loop->restrict_ring();
    for (auto& loop : loops_)
        threads_.emplace_back([&loop, first = threads_.empty()] {
            if (first)
                privilege_self_test();
            try {
                loop->run();
            } catch (const Error& e) {
                log::error("worker stopped: {}", e.what());
                kill(getpid(), SIGTERM);
            }
        });
}

size_t Workers::live_connections() const
{
    size_t n = 0;
    for (const auto& loop : loops_)
        n += loop->live_connections();
    return n;
}

WorkerSnapshot Workers::gather(bool with_conns)
{
    std::vector<std::future<WorkerSnapshot>> fs;
    for (auto& l : loops_)
        fs.push_back(l->snapshot(with_conns));
    WorkerSnapshot all;
    for (auto& f : fs)
        if (f.wait_for(std::chrono::seconds(1)) == std::future_status::ready)
            all.merge(f.get());
    return all;
}

void Workers::add_listeners(std::vector<Listener> ls)
{
    loops_[next_.fetch_add(1) % loops_.size()]->add_listeners(std::move(ls));
}

void Workers::remove_listeners(uint64_t netns_cookie)
{
    for (auto& l : loops_)
        l->remove_listeners(netns_cookie);
}

void Workers::drain(std::chrono::milliseconds at_most) const
{
    auto deadline = std::chrono::steady_clock::now() + at_most;
    while (live_connections() > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

}  // namespace ktp
