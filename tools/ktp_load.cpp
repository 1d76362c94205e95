// ktp-load: the load generator behind scripts/bench. Connection rate, sequential
// latency, many idle connections held open, and an echo server, on one epoll loop.
//
// Every mode prints one `mode=... key=value ...` line on stdout and is bounded by
// --timeout. It stays dynamically linked and calls libc's connect() so that
// LD_PRELOAD proxies (proxychains4) can hook it like any other program.

#include "ktp_load_rpc.h"

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

// Exit statuses: the harness tells "ran, some connections failed" from "gave up".
constexpr int kExitOk = 0;
constexpr int kExitFailures = 1;
constexpr int kExitSetup = 2;
constexpr int kExitTimeout = 3;

volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_end_hold = 0;  // SIGUSR1: the harness has measured, verify now

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

struct Endpoint {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family() const { return ss.ss_family; }
    const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
};

// "10.0.0.1:80" or "[fd00::1]:80".
Endpoint parse_endpoint(const std::string& text) {
    Endpoint ep;
    std::string host;
    std::string port;
    if (!text.empty() && text[0] == '[') {
        auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            throw std::runtime_error(fmt::format("bad address '{}': want [IPv6]:PORT", text));
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string::npos) throw std::runtime_error(fmt::format("bad address '{}': want IP:PORT", text));
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    char* end = nullptr;
    unsigned long p = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p == 0 || p > 65535)
        throw std::runtime_error(fmt::format("bad port in '{}'", text));
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ep.ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ep.ss);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(p));
        ep.len = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(p));
        ep.len = sizeof(sockaddr_in6);
    } else {
        throw std::runtime_error(fmt::format("bad IP address '{}' (no host names: give an address)", host));
    }
    return ep;
}

// Tens of thousands of sockets need more than the usual 1024 descriptors.
void raise_nofile(uint64_t want) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur >= want) return;
    rlim_t target = want;
    if (rl.rlim_max < target) {
        rlimit raised{target, target};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;  // needs CAP_SYS_RESOURCE
        target = rl.rlim_max;
    }
    rlimit soft{target, rl.rlim_max};
    setrlimit(RLIMIT_NOFILE, &soft);
    if (target < want)
        fmt::print(stderr, "ktp-load: warning: RLIMIT_NOFILE is {} (wanted {}); some connections may fail\n",
                   target, want);
}

class Epoll {
public:
    Epoll() : fd_(epoll_create1(EPOLL_CLOEXEC)) {
        if (!fd_) throw std::runtime_error(fmt::format("epoll_create1: {}", strerror(errno)));
    }
    void add(int fd, uint32_t events, uint64_t data) { ctl(EPOLL_CTL_ADD, fd, events, data); }
    void mod(int fd, uint32_t events, uint64_t data) { ctl(EPOLL_CTL_MOD, fd, events, data); }
    int wait(epoll_event* ev, int max, int timeout_ms) {
        int n = epoll_wait(fd_.get(), ev, max, timeout_ms);
        if (n < 0 && errno != EINTR) throw std::runtime_error(fmt::format("epoll_wait: {}", strerror(errno)));
        return n < 0 ? 0 : n;
    }

private:
    void ctl(int op, int fd, uint32_t events, uint64_t data) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = data;
        if (epoll_ctl(fd_.get(), op, fd, &ev) != 0)
            throw std::runtime_error(fmt::format("epoll_ctl: {}", strerror(errno)));
    }
    Fd fd_;
};

// Starts a non-blocking connect. Returns the socket and whether it is already
// connected (proxychains4 makes connect() blocking and returns 0 after its handshake).
struct Started {
    Fd fd;
    bool connected = false;
    int error = 0;
};

Started start_connect(const Endpoint& to) {
    Started s;
    s.fd = Fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!s.fd) {
        s.error = errno;
        return s;
    }
    int one = 1;
    setsockopt(s.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(s.fd.get(), to.sa(), to.len) == 0) {
        s.connected = true;
    } else if (errno != EINPROGRESS) {
        s.error = errno;
        s.fd.reset();
    }
    // proxychains4 may hand the socket back blocking; keep it non-blocking.
    if (s.fd) {
        int fl = fcntl(s.fd.get(), F_GETFL);
        if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(s.fd.get(), F_SETFL, fl | O_NONBLOCK);
    }
    return s;
}

int socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

double percentile(std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    auto idx = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(idx, sorted.size() - 1)];
}

// Counts failures by cause, so that the result line says why.
struct Failures {
    uint64_t connect = 0, io = 0, bad_response = 0, timeout = 0, closed = 0;
    uint64_t total() const { return connect + io + bad_response + timeout + closed; }
    std::string str() const {
        return fmt::format("failed={} fail_connect={} fail_io={} fail_response={} fail_timeout={} fail_closed={}",
                           total(), connect, io, bad_response, timeout, closed);
    }
};

// ---- rate / latency: short connections, C at a time ----------------------------

struct RequestSpec {
    std::string bytes;
    bool http = false;   // check for "HTTP/1.x 200" and read to EOF
};

struct ShortConn {
    enum class State { Idle, Connecting, Sending, Reading };
    State state = State::Idle;
    Fd fd;
    size_t sent = 0;
    size_t received = 0;
    char head[16]{};
    uint64_t start_ns = 0;
};

// One failed connection, for --fail-log: when (wall clock) and why.
struct FailEvent {
    double unix_s;
    const char* kind;
    int err;
};

double unix_now() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Pacing for `rate --per-second`: a steady arrival rate, as a soak needs,
// instead of "as fast as the slots free up".
struct Pace {
    double per_second = 0;  // 0: unpaced
    bool log_failures = false;
};

struct ShortResult {
    uint64_t done = 0, ok = 0, bytes = 0;
    Failures fail;
    std::vector<FailEvent> fail_log;
    std::vector<double> lat_us;
    double seconds = 0;
    bool timed_out = false;
};

ShortResult run_short(const Endpoint& to, uint64_t total, unsigned concurrency, const RequestSpec& req,
                      double timeout_s, double conn_timeout_s, const Pace& pace = {}) {
    Epoll ep;
    std::vector<ShortConn> slots(concurrency);
    ShortResult r;
    r.lat_us.reserve(total);
    uint64_t launched = 0;
    const uint64_t t0 = now_ns();
    const uint64_t deadline = t0 + static_cast<uint64_t>(timeout_s * 1e9);
    const auto conn_timeout_ns = static_cast<uint64_t>(conn_timeout_s * 1e9);
    char buf[65536];
    std::vector<size_t> idle;  // paced: slots waiting for their start time
    auto due = [&](uint64_t now) -> uint64_t {
        if (pace.per_second <= 0) return total;
        auto d = static_cast<uint64_t>(static_cast<double>(now - t0) / 1e9 * pace.per_second) + 1;
        return std::min(d, total);
    };
    auto note_failure = [&](const char* kind, int err) {
        if (pace.log_failures) r.fail_log.push_back({unix_now(), kind, err});
    };

    auto finish = [&](size_t i, bool ok, uint64_t* fail_counter, const char* kind = "", int err = 0) {
        ShortConn& c = slots[i];
        if (ok) {
            ++r.ok;
            r.lat_us.push_back(static_cast<double>(now_ns() - c.start_ns) / 1000.0);
        } else if (fail_counter) {
            ++*fail_counter;
            note_failure(kind, err);
        }
        r.bytes += c.received;
        ++r.done;
        c.fd.reset();
        c.state = ShortConn::State::Idle;
    };
    auto send_some = [&](size_t i) -> bool {  // false: failed and finished
        ShortConn& c = slots[i];
        while (c.sent < req.bytes.size()) {
            ssize_t n = ::send(c.fd.get(), req.bytes.data() + c.sent, req.bytes.size() - c.sent, MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<size_t>(n);
                continue;
            }
            if (n < 0 && errno == EAGAIN) {
                ep.mod(c.fd.get(), EPOLLOUT, i);
                return true;
            }
            finish(i, false, &r.fail.io, "send", n < 0 ? errno : 0);
            return false;
        }
        // Raw bytes: half-close so that an echo or discard server ends the exchange.
        if (!req.http) ::shutdown(c.fd.get(), SHUT_WR);
        c.state = ShortConn::State::Reading;
        ep.mod(c.fd.get(), EPOLLIN | EPOLLRDHUP, i);
        return true;
    };
    auto launch = [&](size_t i) {
        while (launched < total) {
            if (launched >= due(now_ns())) {
                idle.push_back(i);
                return;
            }
            ++launched;
            ShortConn& c = slots[i];
            c.sent = c.received = 0;
            c.start_ns = now_ns();
            Started s = start_connect(to);
            if (!s.fd) {
                c.state = ShortConn::State::Idle;
                ++r.fail.connect;
                note_failure("connect", s.error);
                ++r.done;
                continue;
            }
            c.fd = std::move(s.fd);
            if (s.connected) {
                c.state = ShortConn::State::Sending;
                ep.add(c.fd.get(), EPOLLOUT, i);
                if (!send_some(i)) continue;
            } else {
                c.state = ShortConn::State::Connecting;
                ep.add(c.fd.get(), EPOLLOUT, i);
            }
            return;
        }
    };

    for (size_t i = 0; i < slots.size(); ++i) launch(i);
    std::vector<epoll_event> events(concurrency + 1);
    uint64_t last_sweep = t0;
    while (r.done < total && !g_stop) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            r.timed_out = true;
            break;
        }
        while (!idle.empty() && launched < due(now)) {
            size_t i = idle.back();
            idle.pop_back();
            launch(i);
        }
        int n = ep.wait(events.data(), static_cast<int>(events.size()), pace.per_second > 0 ? 2 : 50);
        for (int k = 0; k < n; ++k) {
            auto i = static_cast<size_t>(events[k].data.u64);
            ShortConn& c = slots[i];
            switch (c.state) {
            case ShortConn::State::Idle:
                break;
            case ShortConn::State::Connecting: {
                int err = socket_error(c.fd.get());
                if (err != 0) {
                    finish(i, false, &r.fail.connect, "connect", err);
                    launch(i);
                    break;
                }
                c.state = ShortConn::State::Sending;
                if (!send_some(i)) launch(i);
                break;
            }
            case ShortConn::State::Sending:
                if (!send_some(i)) launch(i);
                break;
            case ShortConn::State::Reading:
                for (;;) {
                    ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, 0);
                    if (got > 0) {
                        size_t keep = std::min(sizeof c.head, c.received + static_cast<size_t>(got));
                        if (c.received < keep)
                            std::memcpy(c.head + c.received, buf, keep - c.received);
                        c.received += static_cast<size_t>(got);
                        continue;
                    }
                    if (got < 0 && errno == EAGAIN) break;
                    if (got < 0) {
                        finish(i, false, &r.fail.io, "recv", errno);
                    } else if (req.http && (c.received < 12 || std::memcmp(c.head, "HTTP/1.", 7) != 0 ||
                                            std::memcmp(c.head + 8, " 200", 4) != 0)) {
                        finish(i, false, &r.fail.bad_response, "response");
                    } else if (!req.http && c.received == 0 && !req.bytes.empty()) {
                        finish(i, false, &r.fail.bad_response, "response");
                    } else {
                        finish(i, true, nullptr);
                    }
                    launch(i);
                    break;
                }
                break;
            }
        }
        now = now_ns();
        if (now - last_sweep > 100'000'000ULL) {
            last_sweep = now;
            for (size_t i = 0; i < slots.size(); ++i) {
                if (slots[i].state != ShortConn::State::Idle && now - slots[i].start_ns > conn_timeout_ns) {
                    finish(i, false, &r.fail.timeout, "timeout");
                    launch(i);
                }
            }
        }
    }
    r.seconds = static_cast<double>(now_ns() - t0) / 1e9;
    if (r.done < total) r.fail.timeout += total - r.done;
    std::sort(r.lat_us.begin(), r.lat_us.end());
    return r;
}

RequestSpec make_request(const std::string& http_path, int raw_bytes, const Endpoint& to) {
    RequestSpec req;
    if (raw_bytes >= 0) {
        req.bytes.assign(static_cast<size_t>(raw_bytes), 'k');
        return req;
    }
    char host[INET6_ADDRSTRLEN]{};
    if (to.family() == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&to.ss)->sin_addr, host, sizeof host);
    else
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&to.ss)->sin6_addr, host, sizeof host);
    req.http = true;
    req.bytes = fmt::format("GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: ktp-load\r\n\r\n", http_path,
                            to.family() == AF_INET6 ? fmt::format("[{}]", host) : std::string(host));
    return req;
}

int report_short(const char* mode, const ShortResult& r, uint64_t total, unsigned concurrency) {
    // "fail UNIXTIME KIND ERRNO-NAME": the soak matches these against the
    // server's down windows.
    for (const FailEvent& f : r.fail_log)
        fmt::print("fail {:.3f} {} {}\n", f.unix_s, f.kind, f.err ? strerrorname_np(f.err) : "-");
    std::vector<double> lat = r.lat_us;
    double cps = r.seconds > 0 ? static_cast<double>(r.ok) / r.seconds : 0;
    fmt::print("mode={} conns={} concurrency={} ok={} {} seconds={:.3f} conns_per_s={:.1f} "
               "p50_us={:.1f} p90_us={:.1f} p99_us={:.1f} max_us={:.1f} bytes={} timeout={}\n",
               mode, total, concurrency, r.ok, r.fail.str(), r.seconds, cps, percentile(lat, 50),
               percentile(lat, 90), percentile(lat, 99), lat.empty() ? 0.0 : lat.back(), r.bytes,
               r.timed_out ? 1 : 0);
    std::fflush(stdout);
    if (r.timed_out) return kExitTimeout;
    return r.fail.total() ? kExitFailures : kExitOk;
}

// ---- hold: many idle connections, then one echo exchange each ------------------

struct HeldConn {
    enum class State { Pending, Connecting, Idle, Echoing, Done };
    State state = State::Pending;
    Fd fd;
    std::string expect;
    size_t received = 0;
    bool ok = false;
};

int run_hold(const Endpoint& to, uint64_t total, double hold_s, unsigned connect_window, unsigned verify_window,
             double timeout_s) {
    Epoll ep;
    std::vector<HeldConn> conns(total);
    Failures fail;
    const uint64_t t0 = now_ns();
    const uint64_t deadline = t0 + static_cast<uint64_t>(timeout_s * 1e9);
    std::mt19937_64 rng(t0 ^ static_cast<uint64_t>(getpid()));
    const uint64_t nonce = rng();
    uint64_t next = 0, in_flight = 0, open = 0, settled = 0;
    char buf[4096];
    std::vector<epoll_event> events(1024);
    bool timed_out = false;

    auto fail_conn = [&](size_t i, uint64_t& counter) {
        HeldConn& c = conns[i];
        if (c.state == HeldConn::State::Idle || c.state == HeldConn::State::Echoing) --open;
        c.fd.reset();
        c.state = HeldConn::State::Done;
        ++counter;
    };
    auto launch = [&] {
        while (next < total && in_flight < connect_window) {
            size_t i = next++;
            HeldConn& c = conns[i];
            Started s = start_connect(to);
            if (!s.fd) {
                c.state = HeldConn::State::Done;
                ++fail.connect;
                ++settled;
                continue;
            }
            c.fd = std::move(s.fd);
            if (s.connected) {
                c.state = HeldConn::State::Idle;
                ep.add(c.fd.get(), EPOLLRDHUP, i);
                ++open;
                ++settled;
            } else {
                c.state = HeldConn::State::Connecting;
                ep.add(c.fd.get(), EPOLLOUT, i);
                ++in_flight;
            }
        }
    };
    // One pass over ready events; an idle connection that reports anything was closed on us.
    auto pump = [&](int timeout_ms) {
        int n = ep.wait(events.data(), static_cast<int>(events.size()), timeout_ms);
        for (int k = 0; k < n; ++k) {
            auto i = static_cast<size_t>(events[k].data.u64);
            HeldConn& c = conns[i];
            switch (c.state) {
            case HeldConn::State::Connecting:
                --in_flight;
                ++settled;
                if (socket_error(c.fd.get()) != 0) {
                    fail_conn(i, fail.connect);
                } else {
                    c.state = HeldConn::State::Idle;
                    ++open;
                    ep.mod(c.fd.get(), EPOLLRDHUP, i);
                }
                break;
            case HeldConn::State::Idle:
                fail_conn(i, fail.closed);
                break;
            case HeldConn::State::Echoing:
                for (;;) {
                    ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, 0);
                    if (got < 0 && errno == EAGAIN) break;
                    if (got <= 0) {
                        fail_conn(i, got == 0 ? fail.closed : fail.io);
                        break;
                    }
                    auto g = static_cast<size_t>(got);
                    if (c.received + g > c.expect.size() ||
                        std::memcmp(c.expect.data() + c.received, buf, g) != 0) {
                        fail_conn(i, fail.bad_response);
                        break;
                    }
                    c.received += g;
                    if (c.received == c.expect.size()) {
                        c.ok = true;
                        c.fd.reset();
                        c.state = HeldConn::State::Done;
                        --open;
                        break;
                    }
                }
                break;
            default:
                break;
            }
        }
    };

    // Phase 1: open them all, at most connect_window handshakes at a time.
    launch();
    while (settled < total && !g_stop) {
        if (now_ns() >= deadline) {
            timed_out = true;
            break;
        }
        pump(50);
        launch();
    }
    const double connect_s = static_cast<double>(now_ns() - t0) / 1e9;
    const uint64_t held = open;
    fmt::print("held {} failed={} connect_seconds={:.3f} pid={}\n", held, fail.total(), connect_s, getpid());
    std::fflush(stdout);

    // Phase 2: stay idle (the harness measures the proxy now), noticing connections cut meanwhile.
    const uint64_t hold_end = now_ns() + static_cast<uint64_t>(hold_s * 1e9);
    while (!timed_out && !g_stop && !g_end_hold && now_ns() < hold_end) {
        if (now_ns() >= deadline) {
            timed_out = true;
            break;
        }
        pump(50);
    }

    // Phase 3: one unique echo exchange per connection, verify_window at a time.
    uint64_t ok = 0;
    size_t cursor = 0;
    uint64_t echoing = 0;
    if (!timed_out && !g_stop) {
        for (;;) {
            echoing = 0;
            for (auto& c : conns) echoing += c.state == HeldConn::State::Echoing;
            while (cursor < conns.size() && echoing < verify_window) {
                HeldConn& c = conns[cursor];
                if (c.state == HeldConn::State::Idle) {
                    c.expect = fmt::format("ktp-load {} {:016x}\n", cursor, nonce);
                    ssize_t n = ::send(c.fd.get(), c.expect.data(), c.expect.size(), MSG_NOSIGNAL);
                    if (n != static_cast<ssize_t>(c.expect.size())) {
                        fail_conn(cursor, fail.io);
                    } else {
                        c.state = HeldConn::State::Echoing;
                        ep.mod(c.fd.get(), EPOLLIN | EPOLLRDHUP, cursor);
                        ++echoing;
                    }
                }
                ++cursor;
            }
            if (cursor >= conns.size() && echoing == 0) break;
            if (now_ns() >= deadline || g_stop) {
                timed_out = true;
                break;
            }
            pump(50);
        }
    }
    for (size_t i = 0; i < conns.size(); ++i) {
        HeldConn& c = conns[i];
        if (c.ok) ++ok;
        else if (c.state != HeldConn::State::Done) fail_conn(i, fail.timeout);
    }
    const double seconds = static_cast<double>(now_ns() - t0) / 1e9;
    fmt::print("mode=hold conns={} held={} ok={} {} connect_seconds={:.3f} seconds={:.3f} timeout={}\n", total,
               held, ok, fail.str(), connect_s, seconds, timed_out ? 1 : 0);
    std::fflush(stdout);
    if (timed_out) return kExitTimeout;
    return ok == total ? kExitOk : kExitFailures;
}

// ---- echo: the server side of `hold`, good for tens of thousands of sockets -----

struct EchoConn {
    Fd fd;
    std::string pending;  // bytes read but not yet written back
};

int run_echo(const Endpoint& at, double timeout_s) {
    Fd lfd(::socket(at.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!lfd) throw std::runtime_error(fmt::format("socket: {}", strerror(errno)));
    int one = 1;
    setsockopt(lfd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(lfd.get(), at.sa(), at.len) != 0) throw std::runtime_error(fmt::format("bind: {}", strerror(errno)));
    if (::listen(lfd.get(), 4096) != 0) throw std::runtime_error(fmt::format("listen: {}", strerror(errno)));
    fmt::print(stderr, "ktp-load: echo listening\n");
    Epoll ep;
    constexpr uint64_t kListener = ~0ULL;
    ep.add(lfd.get(), EPOLLIN, kListener);
    std::vector<EchoConn> conns;
    std::vector<size_t> free_slots;
    uint64_t accepted = 0, bytes = 0;
    const uint64_t deadline = now_ns() + static_cast<uint64_t>(timeout_s * 1e9);
    std::vector<epoll_event> events(1024);
    char buf[16384];
    auto drop = [&](size_t i) {
        conns[i].fd.reset();
        conns[i].pending.clear();
        free_slots.push_back(i);
    };
    auto flush = [&](size_t i) -> bool {  // false: connection gone
        EchoConn& c = conns[i];
        while (!c.pending.empty()) {
            ssize_t n = ::send(c.fd.get(), c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EAGAIN) break;
            if (n <= 0) {
                drop(i);
                return false;
            }
            c.pending.erase(0, static_cast<size_t>(n));
        }
        // Backpressure: stop reading while the peer is not taking our writes.
        ep.mod(c.fd.get(), c.pending.empty() ? EPOLLIN | EPOLLRDHUP : EPOLLOUT, i);
        return true;
    };
    bool timed_out = false;
    while (!g_stop) {
        if (now_ns() >= deadline) {
            timed_out = true;
            break;
        }
        int n = ep.wait(events.data(), static_cast<int>(events.size()), 200);
        for (int k = 0; k < n; ++k) {
            uint64_t id = events[k].data.u64;
            if (id == kListener) {
                for (;;) {
                    int cfd = ::accept4(lfd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    ++accepted;
                    size_t slot;
                    if (!free_slots.empty()) {
                        slot = free_slots.back();
                        free_slots.pop_back();
                    } else {
                        slot = conns.size();
                        conns.emplace_back();
                    }
                    conns[slot].fd = Fd(cfd);
                    ep.add(cfd, EPOLLIN | EPOLLRDHUP, slot);
                }
                continue;
            }
            auto i = static_cast<size_t>(id);
            EchoConn& c = conns[i];
            if (!c.fd) continue;
            if (!c.pending.empty()) {
                flush(i);
                continue;
            }
            ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, 0);
            if (got < 0 && errno == EAGAIN) continue;
            if (got <= 0) {
                drop(i);
                continue;
            }
            bytes += static_cast<uint64_t>(got);
            c.pending.assign(buf, static_cast<size_t>(got));
            flush(i);
        }
    }
    fmt::print("mode=echo accepted={} bytes={} timeout={}\n", accepted, bytes, timed_out ? 1 : 0);
    std::fflush(stdout);
    return timed_out ? kExitTimeout : kExitOk;
}

void on_signal(int) { g_stop = 1; }
void on_usr1(int) { g_end_hold = 1; }

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ktp-load: load generator for scripts/bench (connection rate, latency, idle hold, echo server).\n"
                 "Each mode prints one line of key=value pairs on stdout. Exit: 0 all ok, 1 some connections\n"
                 "failed, 2 setup error, 3 --timeout reached."};
    app.require_subcommand(1);

    std::string to_text;
    double timeout_s = 60;
    double conn_timeout_s = 10;
    uint64_t conns = 1000;
    unsigned concurrency = 50;
    int raw_bytes = -1;
    std::string http_path = "/";
    uint64_t count = 1000;
    double hold_s = 2;
    unsigned connect_window = 256;
    unsigned verify_window = 128;
    std::string listen_text;

    auto common = [&](CLI::App* sub) {
        sub->add_option("--timeout", timeout_s, "give up after this many seconds, exit 3")
            ->capture_default_str()->check(CLI::Range(0.1, 1e6));
    };
    auto* rate = app.add_subcommand("rate", "N short connections, C at a time: connect, request, read to EOF, close");
    rate->add_option("--to", to_text, "IP:PORT to connect to")->required();
    rate->add_option("--conns", conns, "connections to make")->capture_default_str()->check(CLI::Range(1, 100000000));
    rate->add_option("--concurrency", concurrency, "connections in progress at once")
        ->capture_default_str()->check(CLI::Range(1, 100000));
    rate->add_option("--request", raw_bytes, "send this many fixed bytes and half-close instead of an HTTP GET")
        ->check(CLI::Range(0, 1 << 20));
    rate->add_option("--http", http_path, "path of the HTTP/1.0 GET (the default request)")->capture_default_str();
    rate->add_option("--conn-timeout", conn_timeout_s, "seconds one connection may take")
        ->capture_default_str()->check(CLI::Range(0.01, 3600.0));
    Pace pace;
    rate->add_option("--per-second", pace.per_second, "start connections at this steady rate (needs --concurrency "
                                                      "above rate x connection time)")
        ->check(CLI::Range(1.0, 1e6));
    rate->add_flag("--fail-log", pace.log_failures, "print `fail UNIXTIME KIND ERRNO` for each failed connection");
    common(rate);

    auto* lat = app.add_subcommand("latency", "N sequential connect+request+response; p50/p99/max in microseconds");
    lat->add_option("--to", to_text, "IP:PORT to connect to")->required();
    lat->add_option("--count", count, "exchanges to time")->capture_default_str()->check(CLI::Range(1, 100000000));
    lat->add_option("--request", raw_bytes, "send this many fixed bytes and half-close instead of an HTTP GET")
        ->check(CLI::Range(0, 1 << 20));
    lat->add_option("--http", http_path, "path of the HTTP/1.0 GET (the default request)")->capture_default_str();
    lat->add_option("--conn-timeout", conn_timeout_s, "seconds one exchange may take")
        ->capture_default_str()->check(CLI::Range(0.01, 3600.0));
    common(lat);

    auto* hold = app.add_subcommand("hold", "open N idle connections to an echo server, print `held N ... pid=P`, "
                                            "wait --hold-seconds or until SIGUSR1, verify each with a unique echo, close");
    hold->add_option("--to", to_text, "IP:PORT of the echo server")->required();
    hold->add_option("--conns", conns, "connections to hold")->capture_default_str()->check(CLI::Range(1, 1000000));
    hold->add_option("--hold-seconds", hold_s, "seconds to keep them idle after `held`")
        ->capture_default_str()->check(CLI::Range(0.0, 86400.0));
    hold->add_option("--connect-window", connect_window, "handshakes in progress at once")
        ->capture_default_str()->check(CLI::Range(1, 100000));
    hold->add_option("--verify-window", verify_window, "echo exchanges in progress at once")
        ->capture_default_str()->check(CLI::Range(1, 1000000));
    common(hold);

    auto* echo = app.add_subcommand("echo", "echo server for `hold` (runs until SIGTERM or --timeout)");
    echo->add_option("--listen", listen_text, "IP:PORT to listen on")->required();
    common(echo);

    ktp_load::RpcOptions rpc_opt;
    auto* rpc = app.add_subcommand("rpc", "RPC-style short connections: --clients blocking threads, each: connect, "
                                          "send --request bytes, read --reply bytes, close");
    rpc->add_option("--to", to_text, "IP:PORT of an rpc-server")->required();
    rpc->add_option("--conns", rpc_opt.conns, "exchanges in all")->capture_default_str()->check(CLI::Range(1, 100000000));
    rpc->add_option("--clients", rpc_opt.clients, "client threads")->capture_default_str()->check(CLI::Range(1, 1024));
    rpc->add_option("--request", rpc_opt.request, "request bytes")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    rpc->add_option("--reply", rpc_opt.reply, "reply bytes (as the server's)")
        ->capture_default_str()->check(CLI::Range(1, 1 << 20));
    rpc->add_option("--conn-timeout", rpc_opt.conn_timeout_s, "seconds one exchange may take")
        ->capture_default_str()->check(CLI::Range(0.01, 3600.0));
    common(rpc);
    auto* rpc_server = app.add_subcommand("rpc-server", "server for `rpc`: reads --request bytes, answers --reply "
                                                        "bytes, closes (runs until SIGTERM or --timeout)");
    rpc_server->add_option("--listen", listen_text, "IP:PORT to listen on")->required();
    rpc_server->add_option("--request", rpc_opt.request, "request bytes")
        ->capture_default_str()->check(CLI::Range(1, 1 << 20));
    rpc_server->add_option("--reply", rpc_opt.reply, "reply bytes")->capture_default_str()->check(CLI::Range(1, 65536));
    common(rpc_server);

    CLI11_PARSE(app, argc, argv);

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    struct sigaction su{};
    su.sa_handler = on_usr1;
    sigaction(SIGUSR1, &su, nullptr);
    signal(SIGPIPE, SIG_IGN);

    try {
        if (rate->parsed() || lat->parsed()) {
            Endpoint to = parse_endpoint(to_text);
            RequestSpec req = make_request(http_path, raw_bytes, to);
            if (rate->parsed()) {
                raise_nofile(concurrency + 64);
                auto r = run_short(to, conns, concurrency, req, timeout_s, conn_timeout_s, pace);
                return report_short("rate", r, conns, concurrency);
            }
            raise_nofile(64);
            auto r = run_short(to, count, 1, req, timeout_s, conn_timeout_s);
            return report_short("latency", r, count, 1);
        }
        if (rpc->parsed() || rpc_server->parsed()) {
            rpc_opt.timeout_s = timeout_s;
            if (rpc->parsed()) {
                Endpoint to = parse_endpoint(to_text);
                return ktp_load::run_rpc_client(to.sa(), to.len, rpc_opt, g_stop);
            }
            Endpoint at = parse_endpoint(listen_text);
            raise_nofile(1 << 20);
            return ktp_load::run_rpc_server(at.sa(), at.len, rpc_opt, g_stop);
        }
        if (hold->parsed()) {
            Endpoint to = parse_endpoint(to_text);
            raise_nofile(conns + 64);
            return run_hold(to, conns, hold_s, connect_window, verify_window, timeout_s);
        }
        Endpoint at = parse_endpoint(listen_text);
        raise_nofile(1 << 20);
        return run_echo(at, timeout_s);
    } catch (const std::exception& e) {
        fmt::print(stderr, "ktp-load: error: {}\n", e.what());
        return kExitSetup;
    }
}
