// The DNS forwarder's per-query decision and its pool of TCP exchanges.
#include "dns/dns_forwarder.h"

#include "base/log.h"
#include "dns/dns_message.h"
#include "dns/fake_pool.h"
#include "dns/name_memory.h"
#include "dns/name_text.h"
#include "upstream/upstream_group.h"

#include <fmt/format.h>

namespace ktp {

namespace {

// Exchanges at once (each bounded by 5 s: udp/dns_upstream.cpp).
constexpr unsigned kPoolThreads = 4;

}  // namespace

DnsForwarder::DnsForwarder(const DnsForwarderConfig& cfg, const RouterSlot& router, NameMemory* names)
    : cfg_(cfg), router_(router), names_(names)
{
}

DnsForwarder::~DnsForwarder() { stop(); }

void DnsForwarder::stop()
{
    std::unique_ptr<DnsUpstreamPool> pool;
    {
        std::lock_guard lock(mu_);
        stopped_ = true;
        pool = std::move(pool_);
    }
    // Joined outside the lock: a finishing exchange's done may call exchange().
    pool.reset();
}

DnsRoute DnsForwarder::route(std::string_view query, const DnsAsker& who)
{
    DnsRoute r;
    r.asker = who.pid;
    auto q = dns::parse_question(query);
    auto router = router_.load();
    if (!q || q->response) {
        // Not a query ktproxy can read a name from (a resolver may still
        // read one: forward pointers, obsolete label types): forwarded as
        // it is only where no name could route it elsewhere, or it would
        // carry a proxied or blocked name out direct.
        const std::string none;
        Decision d = router->decide(who.resolver, &none);
        const bool direct = d.action.kind != ActionKind::block && !proxy_upstream(d);
        if (router->has_domain_rules() || !direct) {
            log::debug("dns {}[{}] to {}: a message ktproxy cannot read a name from; dropped", who.comm, who.pid,
                       who.resolver);
            return r;
        }
        r.kind = DnsRoute::Kind::direct;
        r.resolver = who.resolver;
        return r;
    }
    Decision d = router->decide(who.resolver, &q->name);
    r.shown = dns::printable_name(q->name);  // any bytes: never raw in a text log
    if (d.action.kind == ActionKind::block) {
        r.answer = dns::refusal(query, cfg_.block_rcode);
        log::info("dns {}[{}] {} type {} to {}: blocked ({}), answered {}", who.comm, who.pid, r.shown, q->qtype,
                  who.resolver, d.rule >= 0 ? fmt::format("rule {}", d.rule + 1) : "default",
                  cfg_.block_rcode == dns::kRcodeNxdomain ? "NXDOMAIN" : "REFUSED");
        r.kind = r.answer.empty() ? DnsRoute::Kind::drop : DnsRoute::Kind::answered;
        return r;
    }
    if (const Upstream* up = proxy_upstream(d)) {
        r.answer = fake_answer(*q, query, who);
        if (!r.answer.empty()) {
            r.kind = DnsRoute::Kind::answered;
            return r;
        }
        // DNS over TCP through the upstream's tunnel: the query never goes
        // out direct, whatever happens to it there.
        r.kind = DnsRoute::Kind::upstream;
        r.router = std::move(router);
        r.upstream = up;
        r.resolver = cfg_.dns_resolver ? *cfg_.dns_resolver : who.resolver;
        if (!cfg_.dns_resolver && who.resolver.is_loopback()) {
            if (cfg_.loopback_fallback.empty()) {
                r.kind = DnsRoute::Kind::answered;
                r.answer = dns::refusal(query, dns::kRcodeServfail);
                log::warn("dns {}[{}] {} to {}: routed to {}, but a resolver on loopback cannot be reached from "
                          "there; give --dns-resolver ADDR (answered SERVFAIL)",
                          who.comm, who.pid, r.shown, who.resolver, up->name);
                if (r.answer.empty())
                    r.kind = DnsRoute::Kind::drop;
                return r;
            }
            r.resolver = cfg_.loopback_fallback.front();
        }
        log::debug("dns {}[{}] {} type {} to {}: through {} to {}", who.comm, who.pid, r.shown, q->qtype,
                   who.resolver, up->name, r.resolver);
        return r;
    }
    log::debug("dns {}[{}] {} type {} to {}: direct", who.comm, who.pid, r.shown, q->qtype, who.resolver);
    r.kind = DnsRoute::Kind::direct;
    r.resolver = who.resolver;
    return r;
}

std::string DnsForwarder::fake_answer(const dns::Question& q, std::string_view query, const DnsAsker& who)
{
    FakePool* fake = names_ ? names_->fake() : nullptr;
    // A name that is not plain text gets no fake address: it would be
    // printed with every connection to it (dns/name_text.h); the query goes
    // through the upstream as it is.
    if (!fake || q.qclass != 1 || (q.qtype != dns::kTypeA && q.qtype != dns::kTypeAaaa) || q.name.empty() ||
        !dns::plain_name(q.name))
        return {};
    const bool v6 = q.qtype == dns::kTypeAaaa;
    std::optional<dns::Address> a;
    // AAAA without IPv6 relaying: NODATA, so the app uses the A answer.
    if (!v6 || cfg_.ipv6) {
        a = fake->address_for(q.name, v6);
        if (!a) {
            log::warn("dns {}[{}] {}: every fake address is in use; the query goes through the upstream", who.comm,
                      who.pid, q.name);
            return {};
        }
    }
    std::string r = dns::address_answer(query, a ? &*a : nullptr, FakePool::kTtl);
    if (!r.empty())
        log::debug("dns {}[{}] {} type {} to {}: fake {}", who.comm, who.pid, q.name, q.qtype, who.resolver,
                   a ? "address" : "NODATA");
    return r;
}

bool DnsForwarder::exchange(const DnsRoute& r, std::string query,
                            std::function<void(const std::string& answer, const std::string& error)> done,
                            std::function<UniqueFd(int family)> make_socket)
{
    DnsUpstreamJob job{r.router, r.upstream, r.resolver, std::move(query), std::move(make_socket), nullptr};
    job.done = [this, asker = r.asker, done = std::move(done)](const std::string& answer,
                                                                 const std::string& error) {
        if (!answer.empty())
            remember(answer, asker);
        done(answer, error);
    };
    std::lock_guard lock(mu_);
    if (stopped_)
        return false;
    if (!pool_)
        pool_ = std::make_unique<DnsUpstreamPool>(cfg_.mark, kPoolThreads);
    return pool_->submit(std::move(job));
}

void DnsForwarder::remember(std::string_view answer, uint32_t asker)
{
    if (!names_)
        return;
    if (auto a = dns::parse_answer(answer); a && !a->addresses.empty())
        names_->remember(*a, asker);
}

}  // namespace ktp
