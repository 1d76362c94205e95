// ktp-load's RPC-style workload: short connections whose server does almost
// nothing, so that what a proxy costs per connection (setup, teardown,
// wake-ups) is most of what is measured. Each client thread, blocking as a
// plain RPC client would be: connect, send the request, read the whole reply,
// close. The server (one epoll thread) reads the request, writes the reply and
// closes.
#include "ktp_load_rpc.h"

#include <fmt/core.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <thread>
#include <vector>

namespace ktp_load {

namespace {

uint64_t mono_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

struct ThreadResult {
    uint64_t ok = 0, fail_connect = 0, fail_io = 0, fail_short = 0;
    std::vector<double> lat_us;
};

// One exchange on a fresh blocking socket. 0: ok, else the failure kind.
enum class Outcome { ok, connect, io, short_reply };

Outcome exchange(const sockaddr* to, socklen_t to_len, const std::string& req, size_t reply, double conn_timeout_s)
{
    int fd = ::socket(to->sa_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return Outcome::connect;
    // Bounded: a lost reply fails this exchange instead of hanging the thread.
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(conn_timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((conn_timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    Outcome out = Outcome::ok;
    if (::connect(fd, to, to_len) != 0) {
        out = Outcome::connect;
    } else if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        out = Outcome::io;
    } else {
        char buf[4096];
        size_t got = 0;
        while (got < reply) {
            ssize_t n = ::recv(fd, buf, std::min(sizeof buf, reply - got), 0);
            if (n > 0) {
                got += static_cast<size_t>(n);
                continue;
            }
            out = n == 0 ? Outcome::short_reply : Outcome::io;
            break;
        }
    }
    ::close(fd);
    return out;
}

}  // namespace

int run_rpc_client(const sockaddr* to, socklen_t to_len, const RpcOptions& o, const volatile std::sig_atomic_t& stop)
{
    const std::string req(o.request, 'r');
    std::atomic<uint64_t> next{0};
    const uint64_t t0 = mono_ns();
    const uint64_t deadline = t0 + static_cast<uint64_t>(o.timeout_s * 1e9);
    std::atomic<bool> timed_out{false};
    std::vector<ThreadResult> results(o.clients);
    std::vector<std::thread> threads;
    threads.reserve(o.clients);
    for (unsigned t = 0; t < o.clients; ++t) {
        threads.emplace_back([&, t] {
            ThreadResult& r = results[t];
            r.lat_us.reserve(o.conns / o.clients + 1);
            while (!stop && next.fetch_add(1, std::memory_order_relaxed) < o.conns) {
                const uint64_t s = mono_ns();
                if (s >= deadline) {
                    timed_out = true;
                    break;
                }
                switch (exchange(to, to_len, req, o.reply, o.conn_timeout_s)) {
                case Outcome::ok:
                    ++r.ok;
                    r.lat_us.push_back(static_cast<double>(mono_ns() - s) / 1000.0);
                    break;
                case Outcome::connect: ++r.fail_connect; break;
                case Outcome::io: ++r.fail_io; break;
                case Outcome::short_reply: ++r.fail_short; break;
                }
            }
        });
    }
    for (auto& th : threads)
        th.join();
    const double seconds = static_cast<double>(mono_ns() - t0) / 1e9;
    ThreadResult all;
    for (auto& r : results) {
        all.ok += r.ok;
        all.fail_connect += r.fail_connect;
        all.fail_io += r.fail_io;
        all.fail_short += r.fail_short;
        all.lat_us.insert(all.lat_us.end(), r.lat_us.begin(), r.lat_us.end());
    }
    std::sort(all.lat_us.begin(), all.lat_us.end());
    auto pct = [&](double p) {
        if (all.lat_us.empty())
            return 0.0;
        auto i = static_cast<size_t>(p / 100.0 * static_cast<double>(all.lat_us.size() - 1) + 0.5);
        return all.lat_us[std::min(i, all.lat_us.size() - 1)];
    };
    const uint64_t failed = all.fail_connect + all.fail_io + all.fail_short;
    fmt::print("mode=rpc conns={} clients={} request={} reply={} ok={} failed={} fail_connect={} fail_io={} "
               "fail_short={} seconds={:.3f} conns_per_s={:.1f} p50_us={:.1f} p90_us={:.1f} p99_us={:.1f} "
               "max_us={:.1f} timeout={}\n",
               o.conns, o.clients, o.request, o.reply, all.ok, failed, all.fail_connect, all.fail_io, all.fail_short,
               seconds, seconds > 0 ? static_cast<double>(all.ok) / seconds : 0.0, pct(50), pct(90), pct(99),
               all.lat_us.empty() ? 0.0 : all.lat_us.back(), timed_out ? 1 : 0);
    std::fflush(stdout);
    if (timed_out)
        return 3;
    return failed ? 1 : 0;
}

int run_rpc_server(const sockaddr* at, socklen_t at_len, const RpcOptions& o, const volatile std::sig_atomic_t& stop)
{
    int lfd = ::socket(at->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (lfd < 0)
        throw std::runtime_error(fmt::format("socket: {}", strerror(errno)));
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(lfd, at, at_len) != 0)
        throw std::runtime_error(fmt::format("bind: {}", strerror(errno)));
    if (::listen(lfd, 4096) != 0)
        throw std::runtime_error(fmt::format("listen: {}", strerror(errno)));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        throw std::runtime_error(fmt::format("epoll_create1: {}", strerror(errno)));
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    fmt::print(stderr, "ktp-load: rpc server listening\n");

    // Bytes of the request seen so far, per fd (fds are small integers).
    std::vector<uint32_t> got;
    const std::string reply(o.reply, 'R');
    uint64_t served = 0, dropped = 0;
    const uint64_t deadline = mono_ns() + static_cast<uint64_t>(o.timeout_s * 1e9);
    bool timed_out = false;
    epoll_event evs[256];
    char buf[4096];
    auto done = [&](int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
    };
    while (!stop) {
        if (mono_ns() >= deadline) {
            timed_out = true;
            break;
        }
        int n = epoll_wait(ep, evs, 256, 200);
        for (int k = 0; k < n; ++k) {
            const int fd = evs[k].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    if (static_cast<size_t>(c) >= got.size())
                        got.resize(static_cast<size_t>(c) + 1024);
                    got[static_cast<size_t>(c)] = 0;
                    epoll_event ev{};
                    ev.events = EPOLLIN | EPOLLRDHUP;
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            ssize_t r = ::recv(fd, buf, sizeof buf, 0);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0) {
                ++dropped;
                done(fd);
                continue;
            }
            got[static_cast<size_t>(fd)] += static_cast<uint32_t>(r);
            if (got[static_cast<size_t>(fd)] < o.request)
                continue;
            // A reply this small always fits an empty send buffer.
            if (::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(reply.size()))
                ++served;
            else
                ++dropped;
            done(fd);
        }
    }
    ::close(ep);
    ::close(lfd);
    fmt::print("mode=rpc-server served={} dropped={} timeout={}\n", served, dropped, timed_out ? 1 : 0);
    std::fflush(stdout);
    return timed_out ? 3 : 0;
}

}  // namespace ktp_load
