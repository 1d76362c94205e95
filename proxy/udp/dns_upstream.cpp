// DNS over TCP, through an upstream proxy or straight to a resolver, on a
// small thread pool.
#include "udp/dns_upstream.h"

#include "base/error.h"
#include "base/unique_fd.h"
#include "dns/dns_message.h"
#include "upstream/http_connect.h"
#include "upstream/socks5.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <chrono>

namespace ktp {
namespace {

constexpr size_t kMaxQueued = 256;

// Waits until fd is ready for `events` or the deadline passed.
bool wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline)
{
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return false;
        pollfd p{fd, events, 0};
        int n = poll(&p, 1, int(left.count()));
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

bool send_all(int fd, std::string_view data, std::chrono::steady_clock::time_point deadline)
{
    while (!data.empty()) {
        if (!wait_fd(fd, POLLOUT, deadline))
            return false;
        ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        if (n > 0)
            data.remove_prefix(size_t(n));
    }
    return true;
}

// Appends what arrives to buf; false on EOF, error or the deadline.
bool recv_some(int fd, std::string& buf, std::chrono::steady_clock::time_point deadline)
{
    char tmp[4096];
    for (;;) {
        if (!wait_fd(fd, POLLIN, deadline))
            return false;
        ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n > 0) {
            buf.append(tmp, size_t(n));
            return true;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            return false;
    }
}

}  // namespace

std::string dns_over_tcp(const Upstream* up, const SockAddr& resolver, const std::string& query, uint32_t mark,
                         int timeout_ms, std::string& error, const std::function<UniqueFd(int family)>& make_socket)
{
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    const std::string framed = dns::frame_tcp_message(query);
    if (framed.empty()) {
        error = "query too long for DNS over TCP";
        return {};
    }
    const SockAddr& peer = up ? up->addr : resolver;
    const std::string what = up ? fmt::format("upstream {}", up->addr) : fmt::format("resolver {}", resolver);
    UniqueFd fd = make_socket ? make_socket(peer.family())
                              : UniqueFd(socket(peer.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        error = fmt::format("socket: {}", errno_text(errno));
        return {};
    }
    // The mark keeps ktproxy's own connect out of the hooks (no loop).
    if (mark)
        (void)setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
    if (connect(fd.get(), peer.get(), peer.size()) != 0 && errno != EINPROGRESS) {
        error = fmt::format("connect to {}: {}", what, errno_text(errno));
        return {};
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (!wait_fd(fd.get(), POLLOUT, deadline) || getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 ||
        soerr) {
        error = fmt::format("connect to {}: {}", what, soerr ? errno_text(soerr) : "timed out");
        return {};
    }
    std::string in;
    if (up) {
        std::unique_ptr<Handshake> hs;
        Target t{{}, resolver};
        if (up->url.kind == UpstreamUrl::Kind::socks5)
            hs = std::make_unique<Socks5Handshake>(up->url.user, up->url.password, t);
        else
            hs = std::make_unique<HttpConnectHandshake>(up->url.user, up->url.password, t);
        HandshakeStep step = hs->start();
        for (int rounds = 0; step.kind != HandshakeStep::done; ++rounds) {
            if (step.kind == HandshakeStep::failed) {
                error = fmt::format("upstream {}: {}", up->name, step.error);
                return {};
            }
            if (rounds > 16) {
                error = fmt::format("upstream {}: handshake did not finish", up->name);
                return {};
            }
            const bool sent = step.kind == HandshakeStep::send;
            if (sent && !send_all(fd.get(), step.out, deadline)) {
                error = fmt::format("upstream {}: handshake send failed", up->name);
                return {};
            }
            in.erase(0, step.consumed);
            // need_more saw every byte there is; after a send, read unless
            // the upstream's next reply is already here.
            if ((!sent || in.empty()) && !recv_some(fd.get(), in, deadline)) {
                error = fmt::format("upstream {}: closed or timed out in the handshake", up->name);
                return {};
            }
            step = hs->feed(in);
        }
        in.erase(0, step.consumed);
    }
    if (!send_all(fd.get(), framed, deadline)) {
        error = up ? "sending the query through the tunnel failed" : fmt::format("sending the query to {} failed", what);
        return {};
    }
    for (;;) {
        dns::TcpFrame f = dns::take_tcp_message(in);
        if (f.status == dns::TcpFrame::whole)
            return std::string(f.message);
        if (f.status == dns::TcpFrame::bad) {
            error = fmt::format("a malformed answer from {}{}", resolver, up ? " through " + up->name : "");
            return {};
        }
        if (!recv_some(fd.get(), in, deadline)) {
            error = fmt::format("no answer from {}{}", resolver, up ? " through " + up->name : "");
            return {};
        }
    }
}

SockAddr parse_dns_resolver(const std::string& text)
{
    std::string ip = text;
    uint16_t port = 53;
    size_t colon = text.rfind(':');
    const bool bracketed = !text.empty() && text[0] == '[';
    if (bracketed || (colon != std::string::npos && text.find(':') == colon)) {
        size_t close = bracketed ? text.find(']') : colon;
        if (close == std::string::npos || (bracketed && close + 1 < text.size() && text[close + 1] != ':'))
            fail("--dns-resolver {}: expected IP, IP:PORT or [IPv6]:PORT", text);
        ip = text.substr(bracketed ? 1 : 0, bracketed ? close - 1 : close);
        std::string p = bracketed ? (close + 1 < text.size() ? text.substr(close + 2) : "53") : text.substr(colon + 1);
        char* end = nullptr;
        unsigned long v = std::strtoul(p.c_str(), &end, 10);
        if (p.empty() || *end || v == 0 || v > 65535)
            fail("--dns-resolver {}: bad port '{}'", text, p);
        port = uint16_t(v);
    }
    auto a = SockAddr::parse_ip(ip, port);
    if (!a)
        fail("--dns-resolver {}: '{}' is not an IP address", text, ip);
    return *a;
}

DnsUpstreamPool::DnsUpstreamPool(uint32_t mark, unsigned threads) : mark_(mark)
{
    for (unsigned i = 0; i < threads; ++i)
        threads_.emplace_back([this] { run(); });
}

DnsUpstreamPool::~DnsUpstreamPool()
{
    {
        std::lock_guard lock(mu_);
        stop_ = true;
        queue_.clear();
    }
    cv_.notify_all();
    for (auto& t : threads_)
        t.join();
}

bool DnsUpstreamPool::submit(DnsUpstreamJob job)
{
    {
        std::lock_guard lock(mu_);
        if (queue_.size() >= kMaxQueued)
            return false;
        queue_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
}

void DnsUpstreamPool::run()
{
    for (;;) {
        DnsUpstreamJob job;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
            if (stop_)
                return;
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        std::string error;
        std::string answer = dns_over_tcp(job.upstream, job.resolver, job.query, mark_, 5000, error, job.make_socket);
        job.done(answer, error);
    }
}

}  // namespace ktp
