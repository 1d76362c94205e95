// ktproxy entry point: parse flags, preflight, listen, load and attach the
// hooks, run one event loop per worker thread; the main thread only waits for
// signals. Every failure ends as one line and exit 1.
#include "cgroup.h"
#include "error.h"
#include "event_loop.h"
#include "listener.h"
#include "log.h"
#include "options.h"
#include "preflight.h"
#include "route_compiler.h"
#include "router.h"
#include "sock_hooks.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace ktp {
namespace {

std::string read_text(const char* path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// One listener set (IPv4 and, unless disabled, IPv6) per worker, all on the
// same port: the hooks rewrite to a single port, SO_REUSEPORT spreads the
// connections over the workers.
std::vector<std::vector<Listener>> open_listeners(const Options& o, unsigned workers)
{
    const bool want6 = !o.listen6.empty();
    const bool reuse = workers > 1;
    for (int attempt = 0;; ++attempt) {
        std::vector<std::vector<Listener>> sets(workers);
        try {
            uint16_t port = o.port;
            for (unsigned w = 0; w < workers; ++w) {
                sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen4, port), "--listen4", reuse));
                port = sets[w][0].addr.port();
                if (want6)
                    sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen6, port), "--listen6", reuse));
            }
            return sets;
        } catch (const Error& e) {
            // With --port 0 the first IPv4 bind picks the port; if the IPv6
            // side finds it taken, try another.
            if (o.port == 0 && attempt < 20 && std::string_view(e.what()).find("in use") != std::string_view::npos)
                continue;
            throw;
        }
    }
}

// Everything that SIGHUP may change: rules, upstreams, default action.
struct Routing {
    std::shared_ptr<const Router> router;
    std::vector<CompiledRoute> kernel;
    uint32_t default_action;
};

Routing build_routing(const Options& o)
{
    auto router = std::make_shared<const Router>(o.rules, o.upstreams, o.default_action);
    auto kernel = compile_routes(router->rules());
    return Routing{router, std::move(kernel), to_kernel_action(router->default_action())};
}

void reload(int argc, const char* const* argv, SockHooks& hooks, RouterSlot& slot)
{
    // Re-read flags and the config file; a bad new config changes nothing.
    Options fresh;
    ParseResult pr = parse_command_line(argc, argv, fresh);
    if (!pr.run) {
        log::error("reload refused, keeping the rules in force: {}", pr.message);
        return;
    }
    try {
        Routing next = build_routing(fresh);
        hooks.set_routes(next.kernel, next.default_action);
        slot.store(next.router, std::memory_order_release);
        log::info("reloaded: {}", next.router->describe());
    } catch (const Error& e) {
        log::error("reload refused, keeping the rules in force: {}", e.what());
    }
}

int run(const Options& o, int argc, const char* const* argv)
{
    log::set_level(o.log_level);
    require_privileges();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    // Signals are taken by the main thread with sigwaitinfo; block them before
    // any worker starts so that no worker is interrupted by one.
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGHUP})
        sigaddset(&mask, s);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);

    std::string mount = cgroup2_mount();
    Cgroup app = open_cgroup2_dir(resolve_cgroup_path(mount, o.cgroup));
    auto self = cgroup2_path_of_self(read_text("/proc/self/cgroup"));
    if (!self)
        fail("cannot find ktproxy's own cgroup2 path in /proc/self/cgroup");
    Cgroup own = open_cgroup2_dir(resolve_cgroup_path(mount, *self == "/" ? "" : *self));

    Routing routing = build_routing(o);
    unsigned workers = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
    auto listener_sets = open_listeners(o, workers);
    const SockAddr listen4 = listener_sets[0][0].addr;
    const std::optional<SockAddr> listen6 =
        listener_sets[0].size() > 1 ? std::optional<SockAddr>(listener_sets[0][1].addr) : std::nullopt;

    HookConfig hc;
    hc.listen4 = listen4;
    hc.listen6 = listen6;
    hc.mark = o.mark;
    hc.netns_cookie = netns_cookie_of(listener_sets[0][0].fd.get());
    hc.max_conns = o.max_conns;
    SockHooks hooks(hc);
    hooks.set_routes(routing.kernel, routing.default_action);

    RouterSlot slot(routing.router);
    LoopConfig lc;
    lc.mark = o.mark;
    lc.connect_timeout = o.connect_timeout;
    lc.sniff_timeout = o.sniff_timeout;
    lc.idle_timeout = o.idle_timeout;
    lc.buffer_size = o.buffer_size;
    lc.buffers = o.buffers;
    std::vector<std::unique_ptr<EventLoop>> loops;
    for (auto& set : listener_sets)
        loops.push_back(std::make_unique<EventLoop>(lc, std::move(set), slot));

    std::vector<std::thread> threads;
    for (auto& loop : loops)
        threads.emplace_back([&loop] {
            try {
                loop->run();
            } catch (const Error& e) {
                log::error("worker stopped: {}", e.what());
                kill(getpid(), SIGTERM);
            }
        });

    hooks.attach(app.fd.get(), app.path, own.fd.get(), own.path);
    log::info("ready: listening on {}{}, cgroup {}, {} workers, {}", listen4.to_string(),
              listen6 ? " and " + listen6->to_string() : std::string(), app.path, workers, routing.router->describe());

    int sig = 0;
    while (sig != SIGINT && sig != SIGTERM) {
        siginfo_t info{};
        sig = sigwaitinfo(&mask, &info);
        if (sig == SIGUSR1)
            log::info("{}", format_counters(hooks.counters(), hooks.occupancy()));
        else if (sig == SIGHUP)
            reload(argc, argv, hooks, slot);
    }
    // Detach first so that new connects go direct while we wind down.
    hooks.detach();
    size_t open = 0;
    for (auto& loop : loops) {
        open += loop->live_connections();
        loop->stop();
    }
    for (auto& t : threads)
        t.join();
    log::info("{}", format_counters(hooks.counters(), hooks.occupancy()));
    log::info("stopped by {}, {} connections were open", sigabbrev_np(sig), open);
    return 0;
}

}  // namespace
}  // namespace ktp

int main(int argc, char** argv)
{
    ktp::Options opts;
    ktp::ParseResult pr = ktp::parse_command_line(argc, argv, opts);
    if (!pr.run) {
        if (pr.exit_code == 0)
            std::fputs(pr.message.c_str(), stdout);
        else
            ktp::log::write(ktp::log::Level::error, pr.message);
        return pr.exit_code;
    }
    try {
        return ktp::run(opts, argc, argv);
    } catch (const ktp::Error& e) {
        ktp::log::write(ktp::log::Level::error, e.what());
    } catch (const std::exception& e) {
        ktp::log::write(ktp::log::Level::error, fmt::format("unexpected failure: {}", e.what()));
    }
    return 1;
}
