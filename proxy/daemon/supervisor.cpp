// The instance's main thread loop.
#include "daemon/supervisor.h"

#include "base/error.h"
#include "base/log.h"
#include "daemon/instance.h"
#include "ops/watch.h"

#include <poll.h>

#include <algorithm>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <fmt/format.h>

namespace ktp {
namespace {

std::string default_control_path(const Options& o, const std::string& name)
{
    if (!o.control_socket.empty())
        return o.control_socket;
    return fmt::format("{}/{}.sock", kRunDir, o.command == Command::run ? fmt::format("run-{}", getpid()) : name);
}

}  // namespace

Supervisor::Supervisor(Parts parts)
    : p_(std::move(parts)),
      started_(std::chrono::steady_clock::now()),
      control_(default_control_path(p_.options, p_.cgroups.name)),
      metrics_(p_.options.metrics.empty() ? UniqueFd() : listen_metrics(p_.options.metrics))
{
    // The app cgroup removed and created again (systemctl restart) takes its
    // hooks with it: follow it (not for `run`, whose cgroup is ktproxy's own).
    if (p_.cgroups.app && p_.options.command != Command::run)
        follower_.emplace(*p_.cgroups.app, p_.options.fail_closed);
    if (p_.kernel.sock())
        dry_events_.emplace(p_.kernel.sock()->events_fd(), [this](const ktp_dry_event& ev) {
            auto router = p_.router.load(std::memory_order_acquire);
            dry_log_.on_event(ev, router ? &router->rules() : nullptr, std::chrono::steady_clock::now());
        });
    if (p_.options.command == Command::run)
        child_ = std::make_unique<Child>(p_.options.run_argv, p_.cgroups.app->path, *p_.cgroups.creds);
}

std::string Supervisor::switch_dry_run(bool on)
{
    if (std::string why = p_.kernel.dry_run_refusal(); !why.empty() && (on || !p_.kernel.sock()))
        return fmt::format("error: dry run refused: {}\n", why);
    try {
        const bool was = p_.kernel.dry_run();
        p_.kernel.set_dry_run(on);
        if (was != on)
            log::info("dry run {} (ktproxy ctl)", on ? "on" : "off");
    } catch (const Error& e) {
        return fmt::format("error: {}\n", e.what());
    }
    return fmt::format("ok: dry run {}\n", on ? "on" : "off");
}

void Supervisor::read_dry_run_events(bool tick)
{
    if (!dry_events_)
        return;
    dry_events_->drain();
    const auto now = std::chrono::steady_clock::now();
    if (tick || now - dry_tick_ >= std::chrono::seconds(1)) {
        dry_log_.tick(now, p_.kernel.counters()[KTP_CTR_DRY_EVENTS_LOST]);
        dry_tick_ = now;
    }
}

InstanceInfo Supervisor::info() const
{
    InstanceInfo i;
    i.cgroup = p_.cgroups.app ? p_.cgroups.app->path : "-";
    i.listen = p_.listening;
    i.udp_port = p_.udp_port;
    i.udp = p_.udp;
    if (follower_) {
        i.reattached = follower_->reattached();
        i.reattached_ago_s = follower_->since_last_reattach_s();
    }
    i.pid = getpid();
    i.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    i.kernel = p_.kernel.counters();
    i.live_tuples = p_.kernel.occupancy().tuples;
    i.reloads_applied = reloads_.applied;
    i.reloads_refused = reloads_.refused;
    i.last_reload_error = reloads_.last_error;
    i.dry_run = p_.kernel.dry_run();
    i.dry_run_events = dry_log_.events();
    i.dry_run_unlogged = dry_log_.unlogged();
    auto state = [&](const Upstream& u, const std::string& group) {
        InstanceInfo::UpstreamState st;
        st.name = u.name;
        st.group = group;
        st.up = u.health->failures.load() == 0;  // down from a failure until a success (a probe or a connection)
        st.failures = u.health->failures.load();
        st.failed_total = u.health->failed_total.load();
        st.retried_total = u.health->retried_total.load();
        return st;
    };
    if (auto router = p_.router.load())
        for (const auto& u : router->upstreams()) {
            if (!u->members.empty()) {
                i.upstreams.push_back(state(*u, u->name));
                for (const Upstream* m : u->members)
                    i.upstreams.push_back(state(*m, u->name));
            } else if (u->url.kind != UpstreamUrl::Kind::direct) {
                i.upstreams.push_back(state(*u, ""));
            }
        }
    return i;
}

void Supervisor::on_signal(const signalfd_siginfo& si)
{
    int sig = static_cast<int>(si.ssi_signo);
    if (sig == SIGUSR1) {
        log::info("{}", p_.kernel.counters_line());
    } else if (sig == SIGHUP) {
        ConfigReader via_helper;
        if (helper_)
            via_helper = [this] { return helper_->read_config(); };
        reload(p_.argc, p_.argv, p_.kernel, p_.router, reloads_, p_.options.config_file, via_helper);
    } else if (child_) {
        // Ctrl-C from the terminal already reached the command (same process
        // group); a signal sent to ktproxy itself is passed on. ktproxy keeps
        // running until the command exits.
        if (si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE) {
            if (!helper_)
                kill(child_->pid(), sig);
            else
                try {
                    helper_->signal_command(sig);
                } catch (const Error& e) {
                    log::warn("pass {} on to the command: {}", sigabbrev_np(sig), e.what());
                }
        }
    } else {
        stop_sig_ = sig;
    }
}

int Supervisor::run()
{
    if (child_) {
        try {
            child_->release();
        } catch (const Error& e) {
            log::write(log::Level::error, e.what());
            return 127;
        }
    }
    while (stop_sig_ == 0) {
        pollfd pfds[8] = {{p_.signals.fd(), POLLIN, 0},
                          {control_.fd(), POLLIN, 0},
                          {metrics_.get(), POLLIN, 0},
                          {child_ ? child_->pidfd() : -1, POLLIN, 0},
                          {follower_ ? follower_->fd() : -1, POLLIN, 0},
                          {dry_events_ ? dry_events_->fd() : -1, POLLIN, 0},
                          {helper_ && !helper_lost_ ? helper_->fd() : -1, POLLIN, 0},
                          {helper_ && !helper_lost_ ? helper_->lost_fd() : -1, POLLIN, 0}};
        // inotify wakes the loop at once; the timeout is the fallback that
        // catches what it cannot see. A dry-run log with lines held back by
        // its rate limit needs a wake-up to say so.
        int timeout = follower_ ? follower_->poll_timeout_ms() : -1;
        if (dry_log_.pending())
            timeout = timeout < 0 ? 1000 : std::min(timeout, 1000);
        int ready = poll(pfds, 8, timeout);
        if (ready < 0 && errno != EINTR)
            fail_errno("poll");
        if (pfds[6].revents != 0 || pfds[7].revents != 0) {
            // Killed (OOM, a stray kill), or hung (a request unanswered):
            // reattaching a recreated cgroup, rereading a root-only config
            // and undoing setup all went with it. A daemon stops so that
            // its unit restarts it whole; `run` keeps relaying for its
            // command, which the relay cannot stop.
            helper_lost_ = true;
            log::error("privileged helper (pid {}) {}: {}", helper_->pid(),
                       pfds[6].revents != 0 ? "died" : "stopped answering",
                       child_ ? "no reattach, reload or cleanup until the command exits"
                              : "stopping (no reattach, reload or cleanup without it)");
            if (!child_)
                return 1;
        }
        if ((pfds[5].revents & POLLIN) || (ready == 0 && dry_log_.pending()))
            read_dry_run_events(ready == 0);
        auto reattach = [this](const Cgroup& old, const Cgroup& fresh) {
            if (helper_)
                helper_->reattach();
            else
                p_.kernel.sock()->reattach(old.fd.get(), fresh.fd.get(), fresh.path);
        };
        if (follower_ && !follower_->follow(p_.cgroups.app, reattach))
            return 1;
        if (pfds[0].revents & POLLIN)
            while (auto si = p_.signals.next())
                on_signal(*si);
        if (pfds[1].revents & POLLIN)
            serve_control(control_.fd(), [&](std::string_view req) {
                if (req == "dry-run on" || req == "dry-run off")
                    return switch_dry_run(req == "dry-run on");
                auto snap = p_.workers.gather(true);
                if (req == "status watch")
                    return render_watch_sample(snap);
                return req == "status json" ? render_status_json(info(), snap) : render_status_text(info(), snap);
            });
        if (metrics_ && (pfds[2].revents & POLLIN))
            serve_metrics(metrics_.get(), [&] { return render_metrics(info(), p_.workers.gather(false)); });
        if (child_ && (pfds[3].revents & POLLIN))
            return child_->reap();
    }
    return 0;
}

}  // namespace ktp
