// The main thread of an instance and the two one-shot commands.
#include "daemon/instance.h"

#include "kernel/bpffs.h"
#include "daemon/cgroup.h"
#include "daemon/cgroup_watch.h"
#include "base/error.h"
#include "loop/event_loop.h"
#include "kernel/gateway.h"
#include "loop/listener.h"
#include "ops/local_server.h"
#include "base/log.h"
#include "daemon/ownership.h"
#include "daemon/preflight.h"
#include "ops/report.h"
#include "kernel/route_compiler.h"
#include "route/router.h"
#include "daemon/run_command.h"
#include "kernel/sock_hooks.h"

#include <dirent.h>
#include <sys/stat.h>
#include <poll.h>
#include <malloc.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <fmt/ranges.h>

#include <chrono>
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

// How long a removed app cgroup may take to be created again before ktproxy
// gives up and exits (systemctl restart re-creates it within milliseconds;
// a service that stays stopped should not leave ktproxy up and useless).
constexpr int kReattachWaitS = 30;

// Before the instance lock (ownership.h), --fail-closed instances wrote
// their pid here; `cleanup` still honours such files for pins that have no
// lock file (made by an older ktproxy that may still be running).
std::string legacy_pin_owner_file(const std::string& name)
{
    return std::string(kRunDir) + "/" + name + ".pin-owner";
}

// An older `ktproxy cleanup` (mid-upgrade) knows only that file: without
// it, it would unpin this instance. Written once startup has succeeded.
void write_legacy_pin_owner(const std::string& name)
{
    std::ofstream f(legacy_pin_owner_file(name), std::ios::trunc);
    f << getpid() << "\n";
}

// The pid of the live ktproxy that owns pin dir `name`, or 0.
int legacy_live_pin_owner(const std::string& name)
{
    int pid = std::atoi(read_text(legacy_pin_owner_file(name).c_str()).c_str());
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    std::string comm = read_text(fmt::format("/proc/{}/comm", pid).c_str());
    return comm.rfind("ktproxy", 0) == 0 ? pid : 0;
}

// One listener set (IPv4 and, unless disabled, IPv6) per worker, all on the
// same port: the hooks rewrite to a single port, SO_REUSEPORT spreads the
// connections over the workers. transparent: the gateway's listeners.
std::vector<std::vector<Listener>> open_listeners(const Options& o, unsigned workers, bool transparent)
{
    const bool want6 = !o.listen6.empty();
    const bool reuse = workers > 1;
    const char* w4 = transparent ? "gateway listener" : "--listen4";
    const char* w6 = transparent ? "gateway listener" : "--listen6";
    const uint16_t first_port = transparent ? 0 : o.port;
    // The connect hooks check the cgroup listeners' mark; the gateway's are
    // reached by bpf_sk_assign and keep none.
    const uint32_t mark = transparent ? 0 : o.mark;
    for (int attempt = 0;; ++attempt) {
        std::vector<std::vector<Listener>> sets(workers);
        try {
            uint16_t port = first_port;
            // With port 0, every other attempt lets the IPv6 bind pick the
            // port: the kernel hands bind() odd ports first, and when each
            // one free on the IPv4 address is taken on the IPv6 one (the
            // apps' TIME_WAITs to ktproxy's [::1] after heavy traffic), an
            // IPv4-first pick fails every time.
            const bool v6_first = want6 && port == 0 && attempt % 2 == 1;
            for (unsigned w = 0; w < workers; ++w) {
                if (v6_first && w == 0) {
                    Listener l6 = listen_tcp(*SockAddr::parse_ip(o.listen6, 0), w6, reuse, transparent, mark);
                    port = l6.addr.port();
                    sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen4, port), w4, reuse, transparent, mark));
                    sets[w].push_back(std::move(l6));
                    continue;
                }
                sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen4, port), w4, reuse, transparent, mark));
                port = sets[w][0].addr.port();
                if (want6)
                    sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen6, port), w6, reuse, transparent, mark));
            }
            return sets;
        } catch (const Error& e) {
            // With port 0 the first bind picks the port; if the other
            // family finds it taken, try another.
            if (first_port == 0 && attempt < 20 &&
                std::string_view(e.what()).find("in use") != std::string_view::npos)
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

// The kernel side of an instance: socket hooks on a cgroup and/or the
// gateway's TC program; the same rules go to both.
struct KernelSide {
    std::unique_ptr<SockHooks> sock;
    std::unique_ptr<GatewayHooks> gateway;

    void set_routes(const Routing& r)
    {
        if (sock)
            sock->set_routes(r.kernel, r.default_action);
        if (gateway)
            gateway->set_routes(r.kernel, r.default_action);
    }
    Counters counters() const
    {
        Counters c{};
        if (sock)
            c = sock->counters();
        if (gateway) {
            Counters g = gateway->counters();
            for (size_t i = 0; i < c.size(); ++i)
                c[i] += g[i];
        }
        return c;
    }
    MapOccupancy occupancy() const { return sock ? sock->occupancy() : MapOccupancy{}; }
    std::string counters_line() const { return format_counters(counters(), occupancy()); }
};

struct ReloadCount {
    uint64_t applied = 0, refused = 0;
    std::string last_error;

    void refuse(std::string why)
    {
        log::error("reload refused, keeping the rules in force: {}", why);
        ++refused;
        last_error = std::move(why);
    }
};

void reload(int argc, const char* const* argv, KernelSide& kernel, RouterSlot& slot, ReloadCount& count)
{
    // Re-read flags and the config file; a bad new config changes nothing.
    // Everything that can fail (parsing, rules, upstream names, compiling
    // for the kernel) happens before anything is swapped in.
    Options fresh;
    ParseResult pr = parse_command_line(argc, argv, fresh);
    if (!pr.run) {
        count.refuse(pr.exit_code == 0 ? std::string("--help or --version on the command line") : pr.message);
        return;
    }
    try {
        Routing next = build_routing(fresh);
        kernel.set_routes(next);
        slot.store(next.router, std::memory_order_release);
        ++count.applied;
        log::info("reloaded: {}", next.router->describe());
    } catch (const Error& e) {
        count.refuse(e.what());
    }
}

// Keeps the hooks on the app cgroup across its removal and re-creation at
// the same path (systemctl restart): the hooks go with the removed cgroup.
struct CgroupFollower {
    CgroupWatch watch;
    bool fail_closed;
    uint32_t reattached = 0;
    bool waiting = false;
    std::chrono::steady_clock::time_point gone_since, last_reattach;

    // How long the main thread may sleep before the next look.
    int poll_timeout_ms() const { return waiting ? 50 : 2000; }

    // False: the cgroup cannot be followed (logged); ktproxy must exit.
    bool follow(std::optional<Cgroup>& app, SockHooks& hooks)
    {
        auto state = watch.check();
        auto now = std::chrono::steady_clock::now();
        if (state != CgroupWatch::State::attached && !waiting) {
            waiting = true;
            gone_since = now;
            log::warn("cgroup {} was removed: its hooks went with it; waiting up to {}s for it to be created again",
                      app->path, kReattachWaitS);
        }
        if (state == CgroupWatch::State::replaced) {
            try {
                Cgroup fresh = open_cgroup2_dir(app->path);
                hooks.reattach(app->fd.get(), fresh.fd.get(), fresh.path);
                watch.attached_to(cgroup_id_of(fresh.fd.get()));
                app = std::move(fresh);
            } catch (const Error& e) {
                log::error("cannot attach the hooks to the new cgroup {}: {}: exiting{}", app->path, e.what(),
                           fail_closed ? "; hooks stay pinned (fail-closed)" : "");
                return false;
            }
            waiting = false;
            ++reattached;
            last_reattach = std::chrono::steady_clock::now();
            log::info("re-attached the hooks to cgroup {} (created again; {:.1f} ms from seeing it to attached)",
                      app->path, std::chrono::duration<double, std::milli>(last_reattach - now).count());
        } else if (waiting && now - gone_since > std::chrono::seconds(kReattachWaitS)) {
            log::error("cgroup {} was removed and not created again within {}s: exiting{}", app->path,
                       kReattachWaitS,
                       fail_closed ? "; hooks stay pinned (fail-closed): a restarted ktproxy attaches them to the "
                                     "new cgroup"
                                   : "");
            return false;
        }
        return true;
    }

    double since_last_reattach_s() const
    {
        return reattached ? std::chrono::duration<double>(std::chrono::steady_clock::now() - last_reattach).count()
                          : 0;
    }
};

WorkerSnapshot gather(std::vector<std::unique_ptr<EventLoop>>& loops, bool with_conns)
{
    std::vector<std::future<WorkerSnapshot>> fs;
    for (auto& l : loops)
        fs.push_back(l->snapshot(with_conns));
    WorkerSnapshot all;
    for (auto& f : fs)
        if (f.wait_for(std::chrono::seconds(1)) == std::future_status::ready)
            all.merge(f.get());
    return all;
}

}  // namespace

int run_instance(const Options& o, int argc, const char* const* argv)
{
    log::set_level(o.log_level);
    log::set_json(o.log_format == LogFormat::json);
    require_privileges();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    // Signals are read by the main thread from a signalfd; block them before
    // any worker starts so that no worker is interrupted by one.
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGQUIT})
        sigaddset(&mask, s);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    UniqueFd sigfd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd)
        fail_errno("signalfd");

    const bool run_mode = o.command == Command::run;
    const auto started = std::chrono::steady_clock::now();
    // Only a cgroup to intercept needs the hierarchy (a gateway does not);
    // ktproxy mounts it when its mount namespace has none (ip netns exec).
    const std::string mount = run_mode || !o.cgroup.empty() ? cgroup2_mount(true) : std::string();
    std::optional<Credentials> creds;
    std::unique_ptr<TransientCgroup> transient;
    std::string app_path;
    if (run_mode) {
        creds = resolve_run_user(o.run_user);
        transient = std::make_unique<TransientCgroup>(mount, getpid());
        app_path = transient->path();
    } else if (!o.cgroup.empty()) {
        app_path = resolve_cgroup_path(mount, o.cgroup);
    }
    const bool cgroup_mode = !app_path.empty();
    const bool gateway_mode = !o.gateway_ifaces.empty();
    std::optional<Cgroup> app, own;
    if (cgroup_mode) {
        app = open_cgroup2_dir(app_path);
        auto self = cgroup2_path_of_self(read_text("/proc/self/cgroup"));
        if (!self)
            fail("cannot find ktproxy's own cgroup2 path in /proc/self/cgroup");
        // /proc/self/cgroup gives a path inside the hierarchy ("/a/b"), not a
        // filesystem path: it is relative to the cgroup2 mount.
        own = open_cgroup2_dir(hierarchy_to_fs_path(mount, *self));
    }
    const std::string name = cgroup_mode ? instance_name(mount, app->path) : "gateway";
    // One instance per cgroup, decided before anything of the cgroup's (pins,
    // control socket, hooks) is touched.
    std::optional<InstanceLock> owner_lock;
    if (cgroup_mode) {
        owner_lock = InstanceLock::acquire(bpffs_name(name));
        owner_lock->record_owner();
    }

    Routing routing = build_routing(o);
    unsigned workers = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::vector<Listener>> listener_sets(workers);
    std::optional<SockAddr> listen4, listen6, gw4, gw6;
    if (cgroup_mode) {
        listener_sets = open_listeners(o, workers, false);
        std::vector<const Listener*> ours;
        for (const auto& set : listener_sets)
            for (const auto& l : set)
                ours.push_back(&l);
        refuse_shared_listeners(ours);
        listen4 = listener_sets[0][0].addr;
        if (listener_sets[0].size() > 1)
            listen6 = listener_sets[0][1].addr;
    }
    if (gateway_mode) {
        auto gw_sets = open_listeners(o, workers, true);
        gw4 = gw_sets[0][0].addr;
        if (gw_sets[0].size() > 1)
            gw6 = gw_sets[0][1].addr;
        for (unsigned w = 0; w < workers; ++w)
            for (auto& l : gw_sets[w])
                listener_sets[w].push_back(std::move(l));
    }

    KernelSide kernel;
    if (cgroup_mode) {
        HookConfig hc;
        hc.listen4 = *listen4;
        hc.listen6 = listen6;
        hc.mark = o.mark;
        hc.netns_cookie = netns_cookie_of(listener_sets[0][0].fd.get());
        hc.max_conns = o.max_conns;
        if (o.fail_closed) {
            ensure_bpffs(kBpffs, cgroup2_mounted_here());
            if (mkdir(kPinRoot, 0700) != 0 && errno != EEXIST)
                fail_errno("--fail-closed: create {}", kPinRoot);
            hc.pin_dir = std::string(kPinRoot) + "/" + bpffs_name(name);
        }
        kernel.sock = std::make_unique<SockHooks>(hc);
    }
    if (gateway_mode) {
        GatewayConfig gc;
        gc.ifaces = o.gateway_ifaces;
        gc.listen4 = *gw4;
        gc.listen6 = gw6;
        gc.mark = o.gateway_mark;
        gc.table = o.gateway_table;
        kernel.gateway = std::make_unique<GatewayHooks>(gc);
    }
    kernel.set_routes(routing);
    // Rules in the maps before the first packet meets the program: attached
    // earlier, SYNs would get the compiled-in default for that instant.
    if (kernel.gateway)
        kernel.gateway->attach();

    RouterSlot slot(routing.router);
    LoopConfig lc;
    lc.mark = o.mark;
    lc.connect_timeout = o.connect_timeout;
    lc.sniff_timeout = o.sniff_timeout;
    lc.idle_timeout = o.idle_timeout;
    lc.buffer_size = o.buffer_size;
    lc.buffers = o.buffers;
    lc.splice = o.relay == "splice";
    lc.keepalive_idle = o.keepalive_idle;
    lc.keepalive_intvl = o.keepalive_intvl;
    lc.keepalive_cnt = o.keepalive_cnt;
    lc.user_timeout_ms = o.user_timeout > 0 ? std::max<uint32_t>(1, static_cast<uint32_t>(o.user_timeout * 1000)) : 0;
    lc.dead_cache = o.dead_cache;
    lc.dead_dst_fd = kernel.sock ? kernel.sock->dead_dst_fd() : -1;
    std::vector<std::unique_ptr<EventLoop>> loops;
    for (auto& set : listener_sets)
        loops.push_back(std::make_unique<EventLoop>(lc, std::move(set), slot));

    std::string control_path = o.control_socket.empty()
                                   ? fmt::format("{}/{}.sock", kRunDir, run_mode ? fmt::format("run-{}", getpid()) : name)
                                   : o.control_socket;
    ControlSocket control(control_path);
    UniqueFd metrics = o.metrics.empty() ? UniqueFd() : listen_metrics(o.metrics);

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
    // Whatever happens below, workers are stopped and joined.
    struct Joiner {
        std::vector<std::unique_ptr<EventLoop>>& loops;
        std::vector<std::thread>& threads;
        ~Joiner()
        {
            for (auto& l : loops)
                l->stop();
            for (auto& t : threads)
                if (t.joinable())
                    t.join();
        }
    } joiner{loops, threads};

    if (kernel.sock)
        kernel.sock->attach(app->fd.get(), app->path, own->fd.get(), own->path);
    // Loading the BPF objects parsed the kernel's BTF (megabytes of heap,
    // freed by now but still resident): hand those pages back.
    malloc_trim(0);
    std::string where, listening;
    if (cgroup_mode) {
        where = fmt::format("listening on {}{}, cgroup {}", listen4->to_string(),
                            listen6 ? " and " + listen6->to_string() : std::string(), app->path);
        listening = fmt::format("{}{}", listen4->to_string(), listen6 ? " " + listen6->to_string() : std::string());
    }
    if (gateway_mode) {
        where += fmt::format("{}gateway on {} via {}{}", where.empty() ? "" : ", ", fmt::join(o.gateway_ifaces, ","),
                             gw4->to_string(), gw6 ? " and " + gw6->to_string() : std::string());
        listening += fmt::format("{}gateway {} via {}{}", listening.empty() ? "" : " ",
                                 fmt::join(o.gateway_ifaces, ","), gw4->to_string(),
                                 gw6 ? " " + gw6->to_string() : std::string());
    }
    log::info("ready: {}, {} workers, relay {}, {}{}{}", where, workers, o.relay, routing.router->describe(),
              o.fail_closed ? (kernel.sock && kernel.sock->took_over() ? ", fail-closed (took over pinned hooks)"
                                                                      : ", fail-closed")
                            : "",
              o.metrics.empty() ? "" : ", metrics on " + o.metrics);
    if (o.fail_closed && kernel.sock)
        write_legacy_pin_owner(bpffs_name(name));

    // The app cgroup removed and created again (systemctl restart) takes its
    // hooks with it: watch for that and attach to the new one (not for `run`,
    // whose cgroup is ktproxy's own).
    std::optional<CgroupFollower> follower;
    if (cgroup_mode && !run_mode)
        follower.emplace(CgroupFollower{CgroupWatch(app->path, cgroup_id_of(app->fd.get())), o.fail_closed});

    ReloadCount reloads;
    auto info = [&] {
        InstanceInfo i;
        i.cgroup = cgroup_mode ? app->path : "-";
        i.listen = listening;
        if (follower) {
            i.reattached = follower->reattached;
            i.reattached_ago_s = follower->since_last_reattach_s();
        }
        i.pid = getpid();
        i.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        i.kernel = kernel.counters();
        auto occ = kernel.occupancy();
        i.live_tuples = occ.tuples;
        i.reloads_applied = reloads.applied;
        i.reloads_refused = reloads.refused;
        i.last_reload_error = reloads.last_error;
        return i;
    };

    std::unique_ptr<Child> child;
    if (run_mode) {
        child = std::make_unique<Child>(o.run_argv, app->path, *creds);
        try {
            child->release();
        } catch (const Error& e) {
            log::write(log::Level::error, e.what());
            return 127;
        }
    }

    int exit_code = 0;
    int stop_sig = 0;
    while (stop_sig == 0) {
        pollfd pfds[5] = {{sigfd.get(), POLLIN, 0}, {control.fd(), POLLIN, 0}, {metrics.get(), POLLIN, 0},
                          {child ? child->pidfd() : -1, POLLIN, 0}, {follower ? follower->watch.fd() : -1, POLLIN, 0}};
        // inotify wakes the loop at once; the timeout is the fallback that
        // catches what it cannot see.
        if (poll(pfds, 5, follower ? follower->poll_timeout_ms() : -1) < 0 && errno != EINTR)
            fail_errno("poll");
        if (follower && !follower->follow(app, *kernel.sock)) {
            exit_code = 1;
            break;
        }
        if (pfds[0].revents & POLLIN) {
            signalfd_siginfo si{};
            while (::read(sigfd.get(), &si, sizeof(si)) == sizeof(si)) {
                int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGUSR1) {
                    log::info("{}", kernel.counters_line());
                } else if (sig == SIGHUP) {
                    reload(argc, argv, kernel, slot, reloads);
                } else if (child) {
                    // Ctrl-C from the terminal already reached the command
                    // (same process group); a signal sent to ktproxy itself is
                    // passed on. ktproxy keeps running until the command exits.
                    if (si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE)
                        kill(child->pid(), sig);
                } else {
                    stop_sig = sig;
                }
            }
        }
        if (pfds[1].revents & POLLIN)
            serve_control(control.fd(), [&](std::string_view req) {
                auto snap = gather(loops, true);
                return req == "status json" ? render_status_json(info(), snap) : render_status_text(info(), snap);
            });
        if (metrics && (pfds[2].revents & POLLIN))
            serve_metrics(metrics.get(), [&] { return render_metrics(info(), gather(loops, false)); });
        if (child && (pfds[3].revents & POLLIN)) {
            exit_code = child->reap();
            break;
        }
    }

    // Order matters: leftovers of the command die while the hooks still hold
    // them (no direct connection can slip out), then the hooks go.
    if (transient)
        transient->kill_leftovers();
    if (run_mode) {
        // The command's sockets are closed now; give their relays a moment
        // to see it, so that every connection is finished and logged.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        auto live = [&] {
            size_t n = 0;
            for (auto& loop : loops)
                n += loop->live_connections();
            return n;
        };
        while (live() > 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (kernel.sock)
        kernel.sock->detach();
    size_t open = 0;
    for (auto& loop : loops)
        open += loop->live_connections();
    log::info("{}", kernel.counters_line());
    if (run_mode)
        log::debug("command exited with status {}, {} connections were open", exit_code, open);
    else
        log::info("stopped by {}, {} connections were open{}",
                  stop_sig ? sigabbrev_np(stop_sig) : "the loss of its cgroup", open,
                  o.fail_closed ? "; hooks stay pinned (fail-closed) until restart or `ktproxy cleanup`" : "");
    // The hooks are off (or pinned): the next instance may have the cgroup.
    if (owner_lock)
        owner_lock->remove();
    return exit_code;
}

int run_status(const Options& o)
{
    std::vector<std::string> paths;
    if (!o.control_socket.empty()) {
        paths.push_back(o.control_socket);
    } else if (DIR* d = opendir(kRunDir)) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 5 && n.substr(n.size() - 5) == ".sock")
                paths.push_back(std::string(kRunDir) + "/" + n);
        }
        closedir(d);
    }
    if (paths.empty())
        fail("no running ktproxy found (no control socket in {}; pass --control PATH)", kRunDir);
    int reached = 0;
    for (const auto& p : paths) {
        try {
            std::string reply = query_control(p, o.status_json ? "status json" : "status");
            std::fputs(reply.c_str(), stdout);
            ++reached;
        } catch (const Error& e) {
            if (!o.control_socket.empty())
                throw;
            log::debug("skipping {}: {}", p, e.what());
        }
    }
    if (reached == 0)
        fail("no running ktproxy answered (stale sockets in {}; `ktproxy cleanup` removes them)", kRunDir);
    return 0;
}

int run_cleanup(const Options&)
{
    require_privileges();
    int pins = 0;
    if (DIR* d = opendir(kPinRoot)) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n == "." || n == "..")
                continue;
            std::string p = std::string(kPinRoot) + "/" + n;
            if (e->d_type != DT_DIR) {
                pins += ::unlink(p.c_str()) == 0;
                continue;
            }
            // Held while the pins go, so that no instance starts on them
            // half-way through.
            int owner = 0;
            InstanceLock lock = InstanceLock::try_acquire(n, &owner);
            if (!lock && ::access(InstanceLock::path_of(n).c_str(), F_OK) == 0) {
                log::info("cleanup: {} belongs to running ktproxy pid {}: left alone", p, owner);
                continue;
            }
            if (int legacy = lock ? 0 : legacy_live_pin_owner(n)) {
                log::info("cleanup: {} belongs to running ktproxy pid {}: left alone", p, legacy);
                continue;
            }
            pins += SockHooks::unpin_all(p);
            rmdir(p.c_str());
            ::unlink(legacy_pin_owner_file(n).c_str());
            lock.remove();
        }
        closedir(d);
    }
    rmdir(kPinRoot);  // only if nothing is left in it
    int cgroups = 0;
    // Without a visible hierarchy there are no transient cgroups to remove.
    const std::string mount = find_cgroup2_mount(read_text("/proc/self/mounts")).value_or("");
    if (DIR* d = mount.empty() ? nullptr : opendir(mount.c_str())) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.rfind(TransientCgroup::kPrefix, 0) != 0)
                continue;
            int owner = std::atoi(n.c_str() + std::strlen(TransientCgroup::kPrefix));
            if (owner > 0 && kill(owner, 0) == 0)
                continue;  // its ktproxy run is alive
            if (remove_cgroup(mount + "/" + n))
                ++cgroups;
        }
        closedir(d);
    }
    int sockets = 0;
    if (DIR* d = opendir(kRunDir)) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 5 && n.substr(n.size() - 5) == ".lock") {
                // Left by a killed instance; a held one is a live instance's.
                int holder = 0;
                if (InstanceLock lock = InstanceLock::try_acquire(n.substr(0, n.size() - 5), &holder)) {
                    lock.remove();
                    ++sockets;
                }
                continue;
            }
            if (n.size() <= 5 || n.substr(n.size() - 5) != ".sock")
                continue;
            std::string p = std::string(kRunDir) + "/" + n;
            try {
                query_control(p, "ping");
            } catch (const Error&) {
                if (::unlink(p.c_str()) == 0)
                    ++sockets;
            }
        }
        closedir(d);
    }
    Options defaults;
    int gw = 0;
    try {
        gw = GatewayHooks::remove_leftovers(defaults.gateway_mark, defaults.gateway_table);
    } catch (const Error& e) {
        // A live gateway owns its state: not a leftover, and not a failure.
        log::info("cleanup: gateway state left alone: {}", e.what());
    }
    log::info("cleanup: removed {} pinned BPF objects, {} transient cgroups, {} stale control sockets and lock "
              "files, {} gateway leftovers",
              pins, cgroups, sockets, gw);
    return 0;
}

}  // namespace ktp
