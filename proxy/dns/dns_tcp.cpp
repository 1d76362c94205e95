// DNS over TCP from the cgroup: framed queries in, the forwarder's answers out.
#include "dns/dns_tcp.h"

#include "base/error.h"
#include "base/log.h"
#include "dns/dns_forwarder.h"
#include "dns/dns_message.h"
#include "dns/name_text.h"
#include "netns/netns.h"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

namespace ktp {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxConns = 256;                 // connections at once; more are closed at once
constexpr unsigned kMaxPending = 16;              // queries of one connection in flight; then it is not read
constexpr size_t kMaxUnsent = 256 * 1024;         // answers the client does not read; then it is cut
constexpr auto kIdle = std::chrono::seconds(10);  // without a whole query (RFC 7766 6.2.3: seconds)
// With queries in flight: each exchange ends within 5 s of leaving the
// pool's queue; this only catches what cannot happen.
constexpr auto kStuck = std::chrono::seconds(60);
constexpr uint64_t kWakeId = 0;

}  // namespace

struct DnsTcp::Conn {
    uint64_t id = 0;
    UniqueFd fd;
    SockAddr client, resolver;
    std::shared_ptr<const Netns> egress;  // a container's namespace its exchanges leave from; null: ktproxy's
    std::string comm;
    uint32_t pid = 0;
    std::string in, out;    // bytes read and not yet framed; answers not yet sent
    unsigned pending = 0;   // queries out on the forwarder's pool
    uint64_t queries = 0, answers = 0;
    bool eof = false;       // the client sent its FIN: answer what is pending, then close
    uint32_t events = 0;    // what epoll watches for now
    Clock::time_point progress;  // the last whole query read or answer sent
};

DnsTcp::DnsTcp(DnsForwarder& dns) : dns_(dns)
{
    epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    wake_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!epoll_ || !wake_)
        fail_errno("DNS over TCP: epoll/eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeId;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0)
        fail_errno("DNS over TCP: epoll_ctl add");
}

DnsTcp::~DnsTcp() { stop(); }

void DnsTcp::start()
{
    thread_ = std::thread([this] { run(); });
}

void DnsTcp::stop()
{
    // No answer may come for a connection once this is gone.
    dns_.stop();
    if (!thread_.joinable())
        return;
    stopping_ = true;
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
    for (auto& [id, c] : conns_)
        c->fd.reset();
    conns_.clear();
    std::lock_guard lock(mu_);
    adopted_.clear();
    answers_.clear();
}

void DnsTcp::adopt(UniqueFd fd, const SockAddr& client, const SockAddr& resolver, const ConnProc& who,
                   std::shared_ptr<const Netns> egress)
{
    auto c = std::make_unique<Conn>();
    c->egress = std::move(egress);
    c->fd = std::move(fd);
    c->client = client;
    c->resolver = resolver;
    c->comm = std::string(comm_text(who).view());
    c->pid = who.pid;
    {
        std::lock_guard lock(mu_);
        if (adopted_.size() >= kMaxConns) {
            log::warn("dns-tcp {}[{}] {} -> {}: {} connections waiting to be served; closed", c->comm, c->pid,
                      client, resolver, adopted_.size());
            return;
        }
        adopted_.push_back(std::move(c));
    }
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
}

void DnsTcp::run()
{
    auto next_sweep = Clock::now() + std::chrono::seconds(1);
    epoll_event evs[64];
    while (!stopping_) {
        int n = epoll_wait(epoll_.get(), evs, 64, 1000);
        if (n < 0 && errno != EINTR) {
            log::error("DNS over TCP: epoll_wait: {}; stopped", errno_text(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            if (evs[i].data.u64 == kWakeId) {
                uint64_t v;
                (void)!read(wake_.get(), &v, sizeof(v));
                take_adopted();
                take_answers();
                continue;
            }
            // Looked up by id: an earlier event of this batch may have closed it.
            auto it = conns_.find(evs[i].data.u64);
            if (it == conns_.end())
                continue;
            Conn& c = *it->second;
            const uint32_t e = evs[i].events;
            if (e & (EPOLLERR | EPOLLHUP)) {
                // Reset, or closed both ways: nobody reads the answers still to come.
                close(c, e & EPOLLERR ? "connection reset" : c.pending ? "the client left before its answers" : "");
                continue;
            }
            if ((e & EPOLLOUT) && !c.out.empty()) {
                if (!flush(c) || !finish_if_done(c))
                    continue;
                update_events(c);
            }
            if (e & EPOLLIN)
                on_readable(c);
        }
        if (auto now = Clock::now(); now >= next_sweep) {
            sweep();
            next_sweep = now + std::chrono::seconds(1);
        }
    }
}

void DnsTcp::take_adopted()
{
    std::vector<std::unique_ptr<Conn>> got;
    {
        std::lock_guard lock(mu_);
        got.swap(adopted_);
    }
    for (auto& c : got) {
        if (conns_.size() >= kMaxConns) {
            log::warn("dns-tcp {}[{}] {} -> {}: {} connections open already; closed", c->comm, c->pid, c->client,
                      c->resolver, conns_.size());
            continue;
        }
        c->id = next_id_++;
        c->progress = Clock::now();
        c->events = EPOLLIN;
        epoll_event ev{};
        ev.events = c->events;
        ev.data.u64 = c->id;
        if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) {
            log::warn("dns-tcp {}[{}] {} -> {}: epoll_ctl: {}; closed", c->comm, c->pid, c->client, c->resolver,
                      errno_text(errno));
            continue;
        }
        log::debug("dns-tcp {}[{}] {} -> {}: served by the DNS forwarder", c->comm, c->pid, c->client, c->resolver);
        conns_.emplace(c->id, std::move(c));
    }
}

void DnsTcp::take_answers()
{
    std::deque<Answer> got;
    {
        std::lock_guard lock(mu_);
        got.swap(answers_);
    }
    for (auto& a : got) {
        auto it = conns_.find(a.conn);
        if (it == conns_.end())
            continue;  // closed while its query was out
        Conn& c = *it->second;
        --c.pending;
        if (a.framed.empty()) {
            close(c, "an exchange failed and its query cannot be answered");
            continue;
        }
        // Then room for the queries it held back, and an EOF that waited for this.
        if (send_answer(c, std::move(a.framed)))
            serve_queries(c);
    }
}

void DnsTcp::on_readable(Conn& c)
{
    char buf[16384];
    // A few reads at most per wakeup: a busy client cannot starve the rest.
    for (int i = 0; i < 8 && !c.eof && c.pending < kMaxPending; ++i) {
        ssize_t n = recv(c.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            c.in.append(buf, size_t(n));
            if (!serve_queries(c))
                return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n < 0) {
            close(c, fmt::format("read: {}", errno_text(errno)));
            return;
        }
        c.eof = true;
        if (!serve_queries(c))
            return;
    }
    update_events(c);
}

bool DnsTcp::serve_queries(Conn& c)
{
    const uint64_t id = c.id;
    size_t used = 0;
    while (c.pending < kMaxPending) {
        dns::TcpFrame f = dns::take_tcp_message(std::string_view(c.in).substr(used));
        if (f.status == dns::TcpFrame::bad) {
            close(c, fmt::format("a length of {} bytes, shorter than a DNS header",
                                 size_t(uint8_t(c.in[used])) << 8 | uint8_t(c.in[used + 1])));
            return false;
        }
        if (f.status == dns::TcpFrame::need_more)
            break;
        ++c.queries;
        c.progress = Clock::now();
        query(c, f.message);
        if (!conns_.count(id))
            return false;
        used += f.used;
    }
    c.in.erase(0, used);
    if (!finish_if_done(c))
        return false;
    update_events(c);
    return true;
}

bool DnsTcp::finish_if_done(Conn& c)
{
    if (!c.eof || c.pending > 0 || !c.out.empty())
        return true;
    // A query cut short by the FIN is hostile or broken; else the client is done.
    close(c, c.in.empty() ? std::string() : fmt::format("closed in the middle of a query ({} bytes)", c.in.size()));
    return false;
}

void DnsTcp::query(Conn& c, std::string_view msg)
{
    // A zone transfer's answer is many messages, and an exchange here is one
    // query, one answer: cut after the first, the transfer would look
    // complete and hold a part of the zone. Said at once instead.
    if (auto q = dns::parse_question(msg); q && (q->qtype == dns::kTypeAxfr || q->qtype == dns::kTypeIxfr)) {
        log::info("dns-tcp {}[{}] {} type {}: zone transfers are not forwarded; answered NOTIMP", c.comm, c.pid,
                  dns::printable_name(q->name), q->qtype == dns::kTypeAxfr ? "AXFR" : "IXFR");
        (void)send_answer(c, dns::frame_tcp_message(dns::refusal(msg, dns::kRcodeNotimp)));
        return;
    }
    DnsRoute r = dns_.route(msg, DnsAsker{c.resolver, c.comm, c.pid});
    switch (r.kind) {
    case DnsRoute::Kind::answered:
        (void)send_answer(c, dns::frame_tcp_message(r.answer));
        return;
    case DnsRoute::Kind::drop:
        // The datagram would be dropped; a stream has no such thing, and
        // the client would wait for an answer that never comes.
        close(c, "a query the forwarder will not forward");
        return;
    case DnsRoute::Kind::direct:
    case DnsRoute::Kind::upstream:
        break;
    }
    ++c.pending;
    const std::string via = r.upstream ? r.upstream->name : std::string("direct");
    auto done = [this, id = c.id, query = std::string(msg), name = r.shown, comm = c.comm, pid = c.pid,
                 via](const std::string& answer, const std::string& error) {
        Answer a{id, {}};
        if (answer.empty()) {
            // TCP has no lost datagram the client retries after: SERVFAIL
            // says so at once.
            log::info("dns-tcp {}[{}] {} via {}: {}; answered SERVFAIL", comm, pid, name, via, error);
            a.framed = dns::frame_tcp_message(dns::refusal(query, dns::kRcodeServfail));
            if (a.framed.size() <= 2)
                a.framed.clear();
        } else {
            a.framed = dns::frame_tcp_message(answer);
        }
        {
            std::lock_guard lock(mu_);
            answers_.push_back(std::move(a));
        }
        uint64_t one = 1;
        (void)!write(wake_.get(), &one, sizeof(one));
    };
    // A container's exchanges leave from its namespace (--egress container),
    // as its connections do; a pool thread may wait for the helper.
    std::function<UniqueFd(int)> make;
    if (c.egress)
        make = [ns = c.egress](int family) { return ns->egress_socket(family); };
    if (!dns_.exchange(r, std::string(msg), std::move(done), std::move(make))) {
        --c.pending;
        close(c, "too many queries waiting for resolvers and upstreams");
    }
}

bool DnsTcp::send_answer(Conn& c, std::string framed)
{
    if (framed.empty()) {
        close(c, "an answer too long for DNS over TCP");
        return false;
    }
    ++c.answers;
    c.out += framed;
    if (c.out.size() > kMaxUnsent) {
        close(c, fmt::format("{} bytes of answers the client does not read", c.out.size()));
        return false;
    }
    return flush(c);
}

bool DnsTcp::flush(Conn& c)
{
    while (!c.out.empty()) {
        ssize_t n = send(c.fd.get(), c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            c.out.erase(0, size_t(n));
            c.progress = Clock::now();
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        close(c, fmt::format("write: {}", n < 0 ? errno_text(errno) : std::string("nothing written")));
        return false;
    }
    return true;
}

void DnsTcp::update_events(Conn& c)
{
    const uint32_t want = (c.eof || c.pending >= kMaxPending ? 0u : uint32_t(EPOLLIN)) |
                          (c.out.empty() ? 0u : uint32_t(EPOLLOUT));
    if (want == c.events)
        return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = c.id;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0)
        c.events = want;
}

void DnsTcp::close(Conn& c, const std::string& why)
{
    if (why.empty())
        log::debug("dns-tcp {}[{}] {} -> {}: {} queries, {} answers; closed", c.comm, c.pid, c.client, c.resolver,
                   c.queries, c.answers);
    else
        log::info("dns-tcp {}[{}] {} -> {}: {}; closed after {} queries, {} answers", c.comm, c.pid, c.client,
                  c.resolver, why, c.queries, c.answers);
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    if (!why.empty()) {
        // A reset: the client must not take a cut stream for a finished one.
        linger lg{1, 0};
        setsockopt(c.fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    conns_.erase(c.id);  // c is gone from here
}

void DnsTcp::sweep()
{
    const auto now = Clock::now();
    std::vector<uint64_t> late;
    for (auto& [id, c] : conns_)
        if (now - c->progress > (c->pending ? kStuck : kIdle))
            late.push_back(id);
    for (uint64_t id : late) {
        Conn& c = *conns_[id];
        close(c, c.pending ? "answers did not come" : c.in.empty() ? "no query for 10 s" : "no whole query for 10 s");
    }
}

}  // namespace ktp
