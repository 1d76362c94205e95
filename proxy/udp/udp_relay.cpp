// The UDP relay's loop: app datagrams in on the relay sockets, one upstream
// socket per flow, replies out from the token address.
#include "udp/udp_relay.h"

#include "base/error.h"
#include "base/log.h"
#include "dns/dns_forwarder.h"
#include "dns/name_memory.h"
#include "kernel/bpf_abi.h"
#include "netns/netns.h"
#include "udp/sock_diag.h"
#include "udp/udp_associate.h"
#include "upstream/upstream_group.h"

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "ktproxy_shared.h"

namespace ktp {

// What an epoll event names: a flow's upstream socket or its association's
// control connection, or a relay socket (sock).
struct EpTag {
    UdpRelay::Flow* flow;
    bool control;
    UdpRelay::RelaySock* sock;
};

// A socket the hooks send datagrams to: ktproxy's own (two, IPv4 and IPv6)
// or one of a container's namespace (made there by the helper).
struct UdpRelay::RelaySock : std::enable_shared_from_this<UdpRelay::RelaySock> {
    UniqueFd fd;
    bool v6 = false;
    uint64_t ns_key = 0;               // ktp_udp_key.netns of its flows: 0 for ktproxy's own
    std::shared_ptr<const Netns> ns;   // the container's namespace; null for ktproxy's own
    bool egress_host = false;          // --egress host: its flows' sockets are made in ktproxy's namespace
    EpTag tag{nullptr, false, this};
};

struct UdpRelay::Flow {
    std::string key;
    EpTag tag_up{this, false, nullptr}, tag_ctl{this, true, nullptr};
    std::shared_ptr<RelaySock> sock;  // the relay socket it came on: replies leave from it
    // Through a SOCKS5 upstream: its UDP association (then `up` is unused).
    std::unique_ptr<UdpAssociation> assoc;
    std::shared_ptr<const Router> router;  // keeps the association's upstream alive across reloads
    UniqueFd up;          // connected to dst, marked; none when dropping
    SockAddr app;         // where replies go (the datagram's source)
    SockAddr dst;         // the original destination
    ktp_udp_key map_key{};
    bool v6 = false;      // arrived on the IPv6 relay socket
    bool drop = false;    // the rules send it where UDP cannot go yet
    bool dns = false;     // to port 53: each query is routed by its name
    std::string via;      // "direct", or why it is dropped
    uint32_t pid = 0;
    std::string comm;
    uint64_t out = 0, in = 0;  // datagrams app -> dst, dst -> app
    uint64_t dropped = 0;      // datagrams dropped (rules, no UDP at the upstream, hostile replies)
    bool ended = false;        // the association closed: the next datagram starts a new flow
    std::chrono::steady_clock::time_point last;
};

namespace {

constexpr size_t kMaxDatagram = 65536;
constexpr int kBatch = 64;  // datagrams per socket per wakeup, so one busy flow cannot starve the rest


uint64_t monotonic_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000ull + ts.tv_nsec;
}

void epoll_add(int ep, int fd, void* tag)
{
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = tag;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        fail_errno("UDP relay: epoll_ctl add");
}

// Tags of the relay's own fds; flows and relay sockets have an EpTag.
char kTagWake, kTagCmd;

}  // namespace

UdpRelay::UdpRelay(const UdpConfig& cfg, const RouterSlot& router, NameMemory* names, DnsForwarder& dns)
    : cfg_(cfg), router_(router), names_(names), dns_(dns)
{
    // One port for both families: the hooks know a single relay port.
    UniqueFd sock4, sock6;
    for (uint16_t want : {cfg.port_hint, uint16_t(0)}) {
        auto any4 = SockAddr::parse_ip("0.0.0.0", want);
        sock4 = udp_relay_socket(*any4, cfg.mark);
        if (!sock4)
            continue;
        port_ = SockAddr::local_of(sock4.get()).port();
        if (!cfg.listen6)
            break;
        auto at6 = SockAddr::parse_ip(cfg.listen6->ip_string(), port_);
        sock6 = udp_relay_socket(*at6, cfg.mark);
        if (sock6)
            break;
        sock4.reset();
    }
    if (!sock4)
        fail_errno("UDP relay: bind a port free on 0.0.0.0{}", cfg.listen6 ? " and " + cfg.listen6->ip_string() : "");
    epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    wake_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    cmd_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!epoll_ || !wake_ || !cmd_)
        fail_errno("UDP relay: epoll/eventfd");
    host4_ = std::make_shared<RelaySock>();
    host4_->fd = std::move(sock4);
    add_sock(host4_);
    if (sock6) {
        host6_ = std::make_shared<RelaySock>();
        host6_->fd = std::move(sock6);
        host6_->v6 = true;
        add_sock(host6_);
    }
    epoll_add(epoll_.get(), wake_.get(), &kTagWake);
    epoll_add(epoll_.get(), cmd_.get(), &kTagCmd);
}

void UdpRelay::add_sock(std::shared_ptr<RelaySock> rs)
{
    epoll_add(epoll_.get(), rs->fd.get(), &rs->tag);
}

void UdpRelay::add_netns(std::shared_ptr<const Netns> ns, UniqueFd fd4, UniqueFd fd6, bool egress_host)
{
    std::vector<std::shared_ptr<RelaySock>> socks;
    for (UniqueFd* fd : {&fd4, &fd6}) {
        if (!*fd)
            continue;
        auto rs = std::make_shared<RelaySock>();
        rs->fd = std::move(*fd);
        rs->v6 = fd == &fd6;
        rs->ns_key = ns->cookie;
        rs->ns = ns;
        rs->egress_host = egress_host;
        socks.push_back(std::move(rs));
    }
    if (socks.empty())
        return;
    const uint64_t cookie = ns->cookie;
    {
        std::lock_guard lock(cmd_mu_);
        cmds_.emplace_back(cookie, std::move(socks));
    }
    uint64_t one = 1;
    (void)!write(cmd_.get(), &one, sizeof(one));
}

void UdpRelay::remove_netns(uint64_t cookie)
{
    {
        std::lock_guard lock(cmd_mu_);
        cmds_.emplace_back(cookie, std::vector<std::shared_ptr<RelaySock>>());
    }
    uint64_t one = 1;
    (void)!write(cmd_.get(), &one, sizeof(one));
}

void UdpRelay::on_commands()
{
    uint64_t n;
    (void)!read(cmd_.get(), &n, sizeof(n));
    decltype(cmds_) cmds;
    {
        std::lock_guard lock(cmd_mu_);
        cmds.swap(cmds_);
    }
    for (auto& [cookie, socks] : cmds) {
        if (!socks.empty()) {
            for (auto& rs : socks)
                add_sock(rs);
            auto& mine = netns_[cookie];
            mine.insert(mine.end(), socks.begin(), socks.end());
            continue;
        }
        // The namespace is gone: its sockets leave the epoll set now; its
        // flows close (their app sockets are gone with it).
        auto it = netns_.find(cookie);
        if (it == netns_.end())
            continue;
        for (auto& rs : it->second) {
            epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, rs->fd.get(), nullptr);
            // A later event of this batch may still name it.
            retired_socks_.push_back(rs);
        }
        netns_.erase(it);
        std::vector<std::string> keys;
        for (auto& [k, f] : flows_)
            if (f->sock && f->sock->ns_key == cookie)
                keys.push_back(k);
        for (const auto& k : keys)
            retire(k);
        live_.store(flows_.size(), std::memory_order_relaxed);
    }
}

UdpRelay::~UdpRelay() { stop(); }

void UdpRelay::start(int flows_fd, int conn6_fd)
{
    flows_fd_ = flows_fd;
    conn6_fd_ = conn6_fd;
    thread_ = std::thread([this] { run(); });
}

void UdpRelay::stop()
{
    if (!thread_.joinable())
        return;
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
    // The forwarder's threads answer through the relay sockets: done
    // before they close.
    dns_.stop();
    for (auto& [k, f] : flows_)
        close_flow(*f);
    flows_.clear();
    netns_.clear();
}

bool UdpRelay::file_conn6(const RelaySock& rs, const SockAddr& app, const ktp_udp_key& key, ktp_udp_flow& val)
{
    // A connected IPv6 socket's first datagram: connect6 kept its
    // destination under its cookie; file it under its port for the recvmsg6
    // hook and the datagrams that follow (its release deletes both). A
    // container's socket is in its namespace's socket table.
    if (conn6_fd_ < 0)
        return false;
    std::optional<uint64_t> cookie;
    const SockAddr relay = SockAddr::local_of(rs.fd.get());
    if (rs.ns) {
        SockDiagAnswer a = rs.ns->diag_lookup(IPPROTO_UDP, relay, app);
        if (a.status == SockDiagAnswer::found)
            cookie = a.cookie;
    } else {
        cookie = udp6_socket_cookie(app, relay);
    }
    if (!cookie || bpf_map_lookup_elem(conn6_fd_, &*cookie, &val) != 0)
        return false;
    // The release hook cannot read the socket's port: tell it where the
    // flow is filed (BPF_EXIST: not if the socket is already gone).
    val.filed_port = key.app_port;
    if (bpf_map_update_elem(conn6_fd_, &*cookie, &val, BPF_EXIST) != 0)
        return false;
    return bpf_map_update_elem(flows_fd_, &key, &val, BPF_ANY) == 0;
}

void UdpRelay::run()
{
    using clock = std::chrono::steady_clock;
    auto next_sweep = clock::now() + std::chrono::seconds(1);
    epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(epoll_.get(), evs, 64, 500);
        if (n < 0 && errno != EINTR) {
            log::error("UDP relay: epoll_wait: {}; UDP relay stopped", errno_text(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            void* tag = evs[i].data.ptr;
            if (tag == &kTagWake)
                return;
            if (tag == &kTagCmd)
                on_commands();
            else if (auto* t = static_cast<EpTag*>(tag); t->sock)
                on_app_datagram(t->sock->shared_from_this());
            else if (t->control)
                on_control(*t->flow);
            else
                on_upstream(*t->flow);
        }
        // Flows ended in this batch are freed only now: a later event of
        // the same batch may still name them.
        retired_.clear();
        retired_socks_.clear();
        auto now = clock::now();
        if (now >= next_sweep) {
            sweep(now);
            next_sweep = now + std::chrono::seconds(1);
        }
    }
}

UniqueFd UdpRelay::direct_socket(const RelaySock& rs, const SockAddr& dst, bool& later)
{
    later = false;
    if (rs.ns && (!rs.egress_host || dst.is_loopback())) {
        // From the container's stock: this thread never waits for the
        // helper; an empty stock (a burst of new flows) is refilled off
        // this thread while the datagram is dropped, the app's retry finds
        // a socket.
        UniqueFd s = rs.ns->egress_socket_now(dst.family(), true);
        later = !s && errno == EAGAIN;
        return s;
    }
    return UniqueFd(socket(dst.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

void UdpRelay::on_app_datagram(const std::shared_ptr<RelaySock>& rsp)
{
    static thread_local std::vector<char> buf(kMaxDatagram);
    const RelaySock& rs = *rsp;
    const int fd = rs.fd.get();
    const bool v6 = rs.v6;
    for (int b = 0; b < kBatch; ++b) {
        sockaddr_in6 from{};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(in_pktinfo))];
        iovec iov{buf.data(), buf.size()};
        msghdr m{};
        m.msg_name = &from;
        m.msg_namelen = sizeof(from);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl;
        m.msg_controllen = sizeof(ctl);
        ssize_t len = recvmsg(fd, &m, MSG_DONTWAIT);
        if (len < 0)
            return;
        SockAddr app(reinterpret_cast<sockaddr*>(&from), m.msg_namelen);
        ktp_udp_key key{};
        key.netns = rs.ns_key;
        if (!v6) {
            in_addr to{};
            bool have = false;
            for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
                if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                    in_pktinfo pi;
                    std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                    to = pi.ipi_addr;
                    have = true;
                }
            // Only the hooks' tokens on loopback name a flow; the socket is
            // bound to 0.0.0.0 and anything else that reaches it is noise.
            if (!have || (ntohl(to.s_addr) >> 24) != 127)
                continue;
            key.addr = to.s_addr;
            key.family = KTP_AF_INET;
        } else {
            key.app_port = htons(app.port());
            key.family = KTP_AF_INET6;
        }
        std::string fkey = fmt::format("{}|{:x}|{}|{}", app, key.addr, key.family, key.netns);
        auto it = flows_.find(fkey);
        Flow* f = it == flows_.end() ? nullptr : it->second.get();
        ktp_udp_flow val{};
        if (!f || v6 || f->ended) {
            // IPv6 flows follow the socket's last destination: look it up
            // each time (one syscall; an IPv6 app socket sending to many
            // destinations at once is the documented limit).
            if (bpf_map_lookup_elem(flows_fd_, &key, &val) != 0 && !(v6 && file_conn6(rs, app, key, val))) {
                log::debug("UDP relay: datagram from {} with no flow (released or swept); dropped", app);
                continue;
            }
            if (!v6 && !f) {
                // A token names one app socket (val.cookie), but any local
                // process can send to it: only that socket gets a flow, or
                // others would borrow its destination and an fd apiece.
                sockaddr_in token{};
                token.sin_family = AF_INET;
                token.sin_port = htons(SockAddr::local_of(fd).port());
                token.sin_addr.s_addr = key.addr;
                const SockAddr tok(reinterpret_cast<sockaddr*>(&token), sizeof(token));
                bool sender_ok;
                if (rs.ns) {
                    SockDiagAnswer a = rs.ns->diag_lookup(IPPROTO_UDP, tok, app);
                    sender_ok = a.status == SockDiagAnswer::failed ||
                                (a.status == SockDiagAnswer::found && a.cookie == val.cookie);
                } else {
                    sender_ok = udp4_sender_is(app, tok, val.cookie);
                }
                if (!sender_ok) {
                    log::debug("UDP relay: datagram from {} to a token of another socket; dropped", app);
                    continue;
                }
            }
            SockAddr dst = SockAddr::from_orig_dst(val.od);
            if (f && (f->ended || !(f->dst.to_string() == dst.to_string()))) {
                retire(fkey);
                f = nullptr;
            }
            if (!f) {
                auto nf = std::make_unique<Flow>();
                nf->sock = rsp;
                nf->key = fkey;
                nf->app = app;
                nf->dst = dst;
                nf->map_key = key;
                nf->v6 = v6;
                nf->pid = val.od.pid;
                nf->comm.assign(val.od.comm, strnlen(val.od.comm, sizeof(val.od.comm)));
                auto router = router_.load();
                // DNS: the forwarder routes each query by its name, over
                // this flow's direct socket when the name says direct.
                nf->dns = dst.port() == 53;
                // Others: the name the app's process resolved the address
                // from (or, failing that, the latest anyone did).
                const std::string name =
                    names_ && !nf->dns ? names_->lookup(dst, val.od.pid).name : std::string();
                Decision d = router->decide(dst, &name);
                if (nf->dns) {
                    d.action = Action{ActionKind::proxy, "direct"};
                } else if (!name.empty()) {
                    nf->via = name + " ";
                }
                if (names_ && names_->is_fake(dst)) {
                    // Never on the real network, and a relay would need the name
                    // (ATYP 3) this flow's datagrams do not carry: dropped.
                    nf->drop = true;
                    nf->via += "fake address (dropped)";
                } else if (d.action.kind == ActionKind::block) {
                    nf->drop = true;
                    nf->via += "block";
                } else if (d.action.kind == ActionKind::proxy && d.action.upstream != "direct") {
                    // Never direct what the rules send elsewhere: no leak.
                    nf->router = router;
                    if (!start_association(*nf, d)) {
                        log::debug("udp {}[{}] {} -> {}: no socket in the container's stock yet; dropped",
                                   nf->comm, nf->pid, app, dst);
                        continue;
                    }
                } else {
                    nf->via += "direct";
                    bool later = false;
                    nf->up = direct_socket(rs, dst, later);
                    if (later) {
                        log::debug("udp {}[{}] {} -> {}: no socket in the container's stock yet; dropped",
                                   nf->comm, nf->pid, app, dst);
                        continue;
                    }
                    if (nf->up && cfg_.mark)
                        (void)setsockopt(nf->up.get(), SOL_SOCKET, SO_MARK, &cfg_.mark, sizeof(cfg_.mark));
                    if (!nf->up || connect(nf->up.get(), dst.get(), dst.size()) != 0) {
                        nf->via = fmt::format("direct (connect failed: {}: dropped)", errno_text(errno));
                        nf->up.reset();
                        nf->drop = true;
                    } else {
                        epoll_add(epoll_.get(), nf->up.get(), &nf->tag_up);
                    }
                }
                log::debug("udp {}[{}] {} -> {} via {}", nf->comm, nf->pid, app, dst, nf->via);
                f = nf.get();
                flows_.emplace(fkey, std::move(nf));
                live_.store(flows_.size(), std::memory_order_relaxed);
            }
        }
        f->last = std::chrono::steady_clock::now();
        if (f->drop) {
            ++f->dropped;
            continue;
        }
        if (f->dns && !dns_query(*f, std::string_view(buf.data(), size_t(len))))
            continue;
        if (f->assoc)
            f->assoc->send(f->dst, std::string_view(buf.data(), size_t(len))) ? ++f->out : ++f->dropped;
        else if (send(f->up.get(), buf.data(), size_t(len), MSG_DONTWAIT) >= 0)
            ++f->out;
    }
}

bool UdpRelay::dns_query(Flow& f, std::string_view query)
{
    DnsRoute r = dns_.route(query, DnsAsker{f.dst, f.comm, f.pid});
    switch (r.kind) {
    case DnsRoute::Kind::direct:
        return true;  // over the flow's own socket; on_upstream remembers the answer
    case DnsRoute::Kind::answered:
        send_to_app(f, r.answer.data(), r.answer.size());
        return false;
    case DnsRoute::Kind::drop:
        return false;
    case DnsRoute::Kind::upstream:
        break;
    }
    // What the answer needs, by value: the flow may end before it comes
    // (the relay socket stays open until the answer is sent).
    auto done = [out = f.sock, app = f.app, token = f.map_key.addr, v6 = f.v6, name = r.shown, comm = f.comm, pid = f.pid,
                 via = r.upstream->name](const std::string& answer, const std::string& error) {
        if (answer.empty()) {
            log::info("dns {}[{}] {} via {}: {}; dropped", comm, pid, name, via, error);
            return;
        }
        send_reply(out->fd.get(), app, token, v6, answer.data(), answer.size());
    };
    // With --egress container, a container's query reaches the upstream
    // from its namespace, as its connections do (a pool thread may wait for
    // the helper: the relay's thread does not).
    std::function<UniqueFd(int)> make;
    if (f.sock->ns && !f.sock->egress_host)
        make = [ns = f.sock->ns](int family) { return ns->egress_socket(family); };
    if (!dns_.exchange(r, std::string(query), std::move(done), std::move(make)))
        log::warn("dns {}[{}] {}: too many queries waiting for upstreams; dropped", f.comm, f.pid, r.shown);
    return false;
}

void UdpRelay::send_to_app(Flow& f, const char* data, size_t len)
{
    if (send_reply(f.sock->fd.get(), f.app, f.map_key.addr, f.v6, data, len))
        ++f.in;
}

bool UdpRelay::send_reply(int out, const SockAddr& app, uint32_t token, bool v6, const char* data, size_t len)
{
    iovec iov{const_cast<char*>(data), len};
    msghdr m{};
    m.msg_name = const_cast<sockaddr*>(app.get());
    m.msg_namelen = app.size();
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(in_pktinfo))] = {};
    if (!v6) {
        // From the token the app sent to: recvmsg4/6 map it back to the
        // original destination, and a connected app socket accepts it.
        m.msg_control = ctl;
        m.msg_controllen = sizeof(ctl);
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
        in_pktinfo pi{};
        pi.ipi_spec_dst.s_addr = token;
        std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    }
    return sendmsg(out, &m, MSG_DONTWAIT) >= 0;
}

bool UdpRelay::start_association(Flow& f, const Decision& d)
{
    // A group: its first healthy member (upstream/upstream_group.h).
    const Upstream* up = proxy_upstream(d);
    if (!up || up->url.kind != UpstreamUrl::Kind::socks5) {
        // HTTP CONNECT carries no datagrams; direct would leak.
        f.drop = true;
        f.via += fmt::format("proxy={} (no UDP through {}: dropped)", d.action.upstream,
                             up ? up->name + ", an HTTP proxy" : std::string("an unknown upstream"));
        return true;
    }
    f.via += fmt::format("proxy={}", up->name == d.action.upstream ? up->name : d.action.upstream + "/" + up->name);
    UniqueFd ctl, udp;
    if (f.sock->ns && !f.sock->egress_host) {
        // The association leaves from the container, as its TCP does
        // (egress container): both sockets from the namespace's stock.
        ctl = f.sock->ns->egress_socket_now(up->addr.family(), false);
        udp = ctl ? f.sock->ns->egress_socket_now(up->addr.family(), true) : UniqueFd();
        if (!ctl || !udp) {
            if (errno == EAGAIN)
                return false;
            f.drop = true;
            f.via += fmt::format(" (no socket in the container: {}: dropped)", errno_text(errno));
            return true;
        }
    }
    f.assoc = std::make_unique<UdpAssociation>(*up, cfg_.mark, std::move(ctl), std::move(udp));
    if (f.assoc->state() == UdpAssociation::State::closed) {
        f.via += fmt::format(" ({}: dropped)", f.assoc->error());
        f.assoc.reset();
        f.drop = true;
        return true;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = &f.tag_ctl;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, f.assoc->control_fd(), &ev) != 0)
        fail_errno("UDP relay: epoll_ctl add");
    return true;
}

void UdpRelay::on_control(Flow& f)
{
    if (!f.assoc || f.ended)
        return;
    const auto before = f.assoc->state();
    const auto now = f.assoc->on_control();
    if (now == UdpAssociation::State::closed) {
        log::info("udp {}[{}] {} -> {} via {}: {}", f.comm, f.pid, f.app, f.dst, f.via, f.assoc->error());
        if (before == UdpAssociation::State::ready) {
            // Ended by the server: so is the flow; the app's next datagram
            // asks for a new association.
            f.via += " (association closed)";
            end_flow(f);
            return;
        }
        // Never stood (refused, unreachable): the flow drops its datagrams
        // (never direct) until it idles out, rather than asking the
        // upstream again for each one.
        f.via += fmt::format(" ({}: dropped)", f.assoc->error());
        epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, f.assoc->control_fd(), nullptr);
        if (f.assoc->udp_fd() >= 0)
            epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, f.assoc->udp_fd(), nullptr);
        f.assoc.reset();
        f.drop = true;
        return;
    }
    if (before == UdpAssociation::State::connecting) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &f.tag_ctl;
        epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, f.assoc->control_fd(), &ev);
        epoll_add(epoll_.get(), f.assoc->udp_fd(), &f.tag_up);
    }
    if (now == UdpAssociation::State::ready && before != now)
        log::debug("udp {}[{}] {} -> {} via {}: association ready", f.comm, f.pid, f.app, f.dst, f.via);
}

void UdpRelay::end_flow(Flow& f)
{
    if (f.assoc) {
        epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, f.assoc->control_fd(), nullptr);
        if (f.assoc->udp_fd() >= 0)
            epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, f.assoc->udp_fd(), nullptr);
    }
    f.ended = true;
}

void UdpRelay::retire(const std::string& key)
{
    auto it = flows_.find(key);
    if (it == flows_.end())
        return;
    close_flow(*it->second);
    retired_.push_back(std::move(it->second));
    flows_.erase(it);
}

void UdpRelay::on_upstream(Flow& f)
{
    static thread_local std::vector<char> buf(kMaxDatagram);
    const int fd = f.assoc ? f.assoc->udp_fd() : f.up.get();
    if (f.ended || fd < 0)
        return;
    for (int b = 0; b < kBatch; ++b) {
        ssize_t len = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (len < 0)
            return;  // EAGAIN, or an ICMP error the app would not have seen on an unconnected socket
        f.last = std::chrono::steady_clock::now();
        if (f.assoc) {
            std::string why;
            auto payload = f.assoc->unwrap(std::string_view(buf.data(), size_t(len)), f.dst, why);
            if (!payload) {
                ++f.dropped;
                log::debug("udp {}[{}] {} -> {} via {}: a datagram from the upstream's relay dropped: {}", f.comm,
                           f.pid, f.app, f.dst, f.via, why);
                continue;
            }
            send_to_app(f, payload->data(), payload->size());
            continue;
        }
        if (f.dns)
            dns_.remember(std::string_view(buf.data(), size_t(len)), f.pid);
        send_to_app(f, buf.data(), size_t(len));
    }
}

void UdpRelay::close_flow(Flow& f)
{
    if (f.up)
        epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, f.up.get(), nullptr);
    if (!f.ended)
        end_flow(f);
    log::info("udp {}[{}] {} -> {} via {}: {} datagrams out, {} in, {} dropped", f.comm, f.pid, f.app, f.dst, f.via,
              f.out, f.in, f.dropped);
    f.up.reset();
    f.assoc.reset();
}

void UdpRelay::sweep(std::chrono::steady_clock::time_point now)
{
    const auto idle = std::chrono::duration<double>(cfg_.idle_timeout);
    // Flows whose app socket is gone (release deleted the key) or that were
    // idle too long: their upstream sockets close.
    for (auto it = flows_.begin(); it != flows_.end();) {
        Flow& f = *it->second;
        ktp_udp_flow val{};
        bool gone = bpf_map_lookup_elem(flows_fd_, &f.map_key, &val) != 0;
        if (gone || f.ended || now - f.last > idle) {
            close_flow(f);
            retired_.push_back(std::move(it->second));
            it = flows_.erase(it);
        } else {
            ++it;
        }
    }
    live_.store(flows_.size(), std::memory_order_relaxed);
    // Keys of unconnected sockets that sent nothing for the idle timeout
    // (a socket's release deletes only its last KTP_UDP_SOCK_KEYS keys).
    // Collected first: deleting while walking a hash restarts the walk.
    const uint64_t now_ns = monotonic_ns();
    const uint64_t idle_ns = uint64_t(cfg_.idle_timeout * 1e9);
    std::vector<ktp_udp_key> stale;
    ktp_udp_key k{}, next{};
    void* prev = nullptr;
    for (size_t n = 0; n < (1u << 22) && bpf_map_get_next_key(flows_fd_, prev, &next) == 0; ++n) {
        k = next;
        prev = &k;
        ktp_udp_flow val{};
        if (bpf_map_lookup_elem(flows_fd_, &k, &val) != 0)
            continue;
        if (!(val.flags & KTP_UDP_F_CONNECTED) && now_ns > val.last_ns && now_ns - val.last_ns > idle_ns)
            stale.push_back(k);
        // A connected IPv6 flow filed just as its socket was released: the
        // release hook ran before the filing and could not delete it.
        ktp_udp_flow c6{};
        if ((val.flags & KTP_UDP_F_CONNECTED) && k.family == KTP_AF_INET6 &&
            bpf_map_lookup_elem(conn6_fd_, &val.cookie, &c6) != 0)
            stale.push_back(k);
    }
    for (const auto& s : stale)
        bpf_map_delete_elem(flows_fd_, &s);
}

}  // namespace ktp
