// ktp-delay: a WAN link between two network namespaces, for scripts/bench and
// tests/e2e/upstream_wan.sh. This kernel has no sch_netem, so the delay is
// done in user space: one TUN device in each namespace, and every IP packet
// read from one is written to the other `--delay` milliseconds later.
//
// TUN (not TAP, not a veth read through AF_PACKET) because the kernel hands a
// TUN device whole, checksummed IP packets no larger than its MTU, with no
// ARP and no GSO super-frames to care about. Queues are bounded (a full one
// drops, like a router's); SIGINT/SIGTERM end it cleanly; the devices go
// away with the process.

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

[[noreturn]] void die(const std::string& what)
{
    fmt::print(stderr, "ktp-delay: {}\n", what);
    std::exit(1);
}

// A TUN device named dev in the namespace /run/netns/ns (or the current one
// when ns is empty). The fd stays tied to the device wherever we go next.
int open_tun(const std::string& ns, const std::string& dev)
{
    if (!ns.empty()) {
        std::string path = ns.find('/') == std::string::npos ? "/run/netns/" + ns : ns;
        int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (nsfd < 0)
            die(fmt::format("open {}: {}", path, strerror(errno)));
        if (setns(nsfd, CLONE_NEWNET) != 0)
            die(fmt::format("setns {}: {}", path, strerror(errno)));
        close(nsfd);
    }
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        die(fmt::format("open /dev/net/tun: {}", strerror(errno)));
    ifreq ifr{};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (dev.size() >= IFNAMSIZ)
        die(fmt::format("device name '{}' is longer than {} bytes", dev, IFNAMSIZ - 1));
    std::memcpy(ifr.ifr_name, dev.data(), dev.size());
    if (ioctl(fd, TUNSETIFF, &ifr) != 0)
        die(fmt::format("TUNSETIFF {} in {}: {}", dev, ns.empty() ? "this namespace" : ns, strerror(errno)));
    return fd;
}

struct Packet {
    Clock::time_point due;
    std::vector<char> bytes;
};

// One direction of the link: packets read from `from`, due on `to` later.
struct Lane {
    int from, to;
    std::deque<Packet> queue;
    uint64_t forwarded = 0, dropped = 0;
};

}  // namespace

int main(int argc, char** argv)
{
    CLI::App app{"ktp-delay: delay every packet between two namespaces (a user-space netem for tests)"};
    std::string ns_a, dev_a = "ktpdA", ns_b, dev_b = "ktpdB";
    double delay_ms = 5;
    size_t limit = 10000;
    app.add_option("--ns-a", ns_a, "namespace of side A (name under /run/netns or a path)")->required();
    app.add_option("--dev-a", dev_a, "TUN device to create in side A");
    app.add_option("--ns-b", ns_b, "namespace of side B")->required();
    app.add_option("--dev-b", dev_b, "TUN device to create in side B");
    app.add_option("--delay", delay_ms, "one-way delay in milliseconds (RTT = 2x)")->check(CLI::Range(0.0, 10000.0));
    app.add_option("--limit", limit, "packets queued per direction; more are dropped")->check(CLI::Range(1, 1000000));
    CLI11_PARSE(app, argc, argv);

    int fd_a = open_tun(ns_a, dev_a);
    int fd_b = open_tun(ns_b, dev_b);
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    const auto delay = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(delay_ms));
    Lane lanes[2] = {{fd_a, fd_b, {}}, {fd_b, fd_a, {}}};
    fmt::print("ktp-delay: {} ({}) <-> {} ({}), {} ms each way\n", dev_a, ns_a, dev_b, ns_b, delay_ms);
    std::fflush(stdout);

    std::vector<char> buf(65536);
    while (!g_stop) {
        // Forward what is due, then sleep until the next packet is, or input.
        auto now = Clock::now();
        Clock::time_point next = now + std::chrono::seconds(1);
        for (Lane& l : lanes) {
            while (!l.queue.empty() && l.queue.front().due <= now) {
                const auto& p = l.queue.front().bytes;
                // A TUN write hands the packet to the other namespace's stack;
                // it does not block. A failure (device down) drops the packet.
                if (write(l.to, p.data(), p.size()) < 0)
                    ++l.dropped;
                else
                    ++l.forwarded;
                l.queue.pop_front();
            }
            if (!l.queue.empty())
                next = std::min(next, l.queue.front().due);
        }
        auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(next - now);
        timespec ts{static_cast<time_t>(wait.count() / 1'000'000'000), static_cast<long>(wait.count() % 1'000'000'000)};
        pollfd pfd[2] = {{fd_a, POLLIN, 0}, {fd_b, POLLIN, 0}};
        int n = ppoll(pfd, 2, &ts, nullptr);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die(fmt::format("ppoll: {}", strerror(errno)));
        }
        now = Clock::now();
        for (int i = 0; i < 2; ++i) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            // Drain what is there: each packet keeps its own arrival time.
            for (int k = 0; k < 256; ++k) {
                ssize_t r = read(lanes[i].from, buf.data(), buf.size());
                if (r <= 0)
                    break;
                if (lanes[i].queue.size() >= limit) {
                    ++lanes[i].dropped;
                    continue;
                }
                lanes[i].queue.push_back(Packet{now + delay, std::vector<char>(buf.data(), buf.data() + r)});
            }
        }
    }
    fmt::print("ktp-delay: stopped; A->B {} forwarded {} dropped, B->A {} forwarded {} dropped\n", lanes[0].forwarded,
               lanes[0].dropped, lanes[1].forwarded, lanes[1].dropped);
    return 0;
}
