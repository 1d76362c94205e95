// The Conn pool: a free list and a live list, no heap traffic per connection.
#include "tcp/conn.h"

namespace ktp {

void learn_addresses(Conn& c)
{
    if (c.client.empty() && c.fd[0])
        c.client = SockAddr::peer_of(c.fd[0].get());
    if (c.via.empty() && c.relaying && c.fd[1])
        c.via = SockAddr::local_of(c.fd[1].get());
}

Conn& ConnPool::alloc(std::shared_ptr<const Router> router, std::chrono::steady_clock::time_point now)
{
    Conn* c = free_;
    if (c) {
        free_ = c->next_free;
        c->relay = Relay();
        c->inflight = 0;
        c->aborting = c->closing = c->relaying = c->ended = false;
        c->early_end = End::none;
        c->detail.clear();
        c->client = c->orig = c->via = SockAddr();
        c->local = nullptr;
        c->proc = ConnProc();
        c->held[0] = c->held[1] = -1;
        c->piped[0] = c->piped[1] = 0;
        c->engine[0] = c->engine[1] = nullptr;
        c->urg_quiet[0] = c->urg_quiet[1] = false;
        c->tries[0] = c->tries[1] = 0;
        c->moved = 0;
        c->moved_at = {};
        c->watching[0] = c->watching[1] = false;
        c->upstream = nullptr;
        c->route_name = "none";
        c->domain.clear();
        c->domain_untrusted = false;
        c->sniffed = c->peeking = c->connected = false;
        c->sniff_len = 0;
        c->hs.reset();
        c->hs_out.clear();
        c->hs_out_sent = 0;
        c->hs_in = 0;
        c->warm = false;
        c->group = nullptr;
        c->retried = false;
        c->early = 0;
    } else {
        all_.push_back(std::make_unique<Conn>());
        c = all_.back().get();
    }
    c->next_free = nullptr;
    c->router = std::move(router);
    c->started = c->last_active = now;
    c->live_prev = nullptr;
    c->live_next = live_head_;
    if (live_head_)
        live_head_->live_prev = c;
    live_head_ = c;
    live_.fetch_add(1, std::memory_order_relaxed);
    return *c;
}

void ConnPool::release(Conn& c)
{
    c.router.reset();
    c.hs.reset();
    c.egress.reset();
    c.app_ns.reset();
    if (c.live_prev)
        c.live_prev->live_next = c.live_next;
    else
        live_head_ = c.live_next;
    if (c.live_next)
        c.live_next->live_prev = c.live_prev;
    c.next_free = free_;
    free_ = &c;
    live_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace ktp
