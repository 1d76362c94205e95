// ktproxy entry point: parse flags, preflight, listen, load and attach the
// hooks, run the relay loop; every failure ends as one line and exit 1.
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

#include <cstdio>
#include <fstream>
#include <sstream>

namespace ktp {
namespace {

std::string read_text(const char* path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<Listener> open_listeners(const Options& o)
{
    const bool want6 = !o.listen6.empty();
    // With --port 0 the v4 listener picks the port and v6 must get the same
    // one (the hooks rewrite to a single port); retry if v6 finds it taken.
    for (int attempt = 0;; ++attempt) {
        std::vector<Listener> ls;
        ls.push_back(listen_tcp(*SockAddr::parse_ip(o.listen4, o.port), "--listen4"));
        if (!want6)
            return ls;
        try {
            ls.push_back(listen_tcp(*SockAddr::parse_ip(o.listen6, ls[0].addr.port()), "--listen6"));
            return ls;
        } catch (const Error& e) {
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

int run(const Options& o, int argc, const char* const* argv)
{
    log::set_level(o.log_level);
    require_privileges();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);

    std::string mount = cgroup2_mount();
    Cgroup app = open_cgroup2_dir(resolve_cgroup_path(mount, o.cgroup));
    auto self = cgroup2_path_of_self(read_text("/proc/self/cgroup"));
    if (!self)
        fail("cannot find ktproxy's own cgroup2 path in /proc/self/cgroup");
    Cgroup own = open_cgroup2_dir(resolve_cgroup_path(mount, *self == "/" ? "" : *self));

    Routing routing = build_routing(o);
    std::vector<Listener> listeners = open_listeners(o);

    HookConfig hc;
    hc.listen4 = listeners[0].addr;
    if (listeners.size() > 1)
        hc.listen6 = listeners[1].addr;
    hc.mark = o.mark;
    hc.netns_cookie = netns_cookie_of(listeners[0].fd.get());
    hc.max_conns = o.max_conns;

    SockHooks hooks(hc);
    hooks.set_routes(routing.kernel, routing.default_action);
    LoopConfig lc{o.mark, o.connect_timeout, o.sniff_timeout, o.buffer_size};
    EventLoop* loop_ptr = nullptr;
    EventLoop::Hooks loop_hooks;
    loop_hooks.on_usr1 = [&hooks] { log::info("{}", format_counters(hooks.counters(), hooks.occupancy())); };
    loop_hooks.on_hup = [&] {
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
            loop_ptr->set_router(next.router);
            log::info("reloaded: {}", next.router->describe());
        } catch (const Error& e) {
            log::error("reload refused, keeping the rules in force: {}", e.what());
        }
    };
    EventLoop loop(lc, listeners, routing.router, loop_hooks);
    loop_ptr = &loop;

    hooks.attach(app.fd.get(), app.path, own.fd.get(), own.path);
    log::info("ready: listening on {}{}, cgroup {}, {}", listeners[0].addr.to_string(),
              listeners.size() > 1 ? " and " + listeners[1].addr.to_string() : std::string(), app.path,
              routing.router->describe());

    int sig = loop.run();
    // Detach first so new connects go direct while we wind down.
    hooks.detach();
    log::info("{}", format_counters(hooks.counters(), hooks.occupancy()));
    log::info("stopped by {}, {} connections were open", strsignal(sig), loop.live_connections());
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
