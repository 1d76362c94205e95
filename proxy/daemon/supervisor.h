// The main thread of a running instance: signals (SIGHUP reload, SIGUSR1
// counters, the rest stop it), the control socket and metrics endpoint, the
// command of `ktproxy run`, and the app cgroup's re-creation.
#pragma once

#include "base/unique_fd.h"
#include "config/options.h"
#include "daemon/cgroup_follower.h"
#include "daemon/instance_cgroups.h"
#include "daemon/kernel_side.h"
#include "daemon/priv_helper.h"
#include "daemon/routing.h"
#include "daemon/run_command.h"
#include "daemon/signals.h"
#include "daemon/workers.h"
#include "kernel/dry_run_events.h"
#include "ops/dry_run_log.h"
#include "ops/local_server.h"
#include "ops/report.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace ktp {

class Supervisor {
public:
    struct Parts {
        const Options& options;
        int argc;
        const char* const* argv;  // parsed again on SIGHUP
        SignalFd& signals;
        KernelSide& kernel;
        RouterSlot& router;
        Workers& workers;
        InstanceCgroups& cgroups;
        std::string listening;  // for status
        uint16_t udp_port;      // for status: 0 when UDP is not intercepted
        std::string udp;        // for status: ListenerPlan::udp_state()
    };
    // Opens the control socket and the metrics endpoint (their errors come
    // before the hooks are attached) and forks `run`'s command, which waits
    // for run() (forked now, while this process may still set its uid).
    explicit Supervisor(Parts parts);

    // Once privileges are dropped, what needs root goes through the helper.
    void use_helper(PrivHelper* helper) { helper_ = helper; }
    const std::string& control_path() const { return control_.path(); }
    int command_pidfd() const { return child_ ? child_->pidfd() : -1; }

    // Releases `run`'s command, then serves until a stop signal, the command's
    // exit or the loss of the app cgroup. Returns the process's exit code.
    int run();
    // The signal that stopped the instance, or 0.
    int stop_signal() const { return stop_sig_; }

private:
    void on_signal(const signalfd_siginfo& si);
    InstanceInfo info() const;
    // `ktproxy ctl dry-run on|off`: the reply line ("ok: ..." or "error: ...").
    std::string switch_dry_run(bool on);
    // Reads the dry run's events and logs them; tick: the once-a-second
    // bookkeeping of the log (rate-limit summary, lost events) is due.
    void read_dry_run_events(bool tick);

    Parts p_;
    const std::chrono::steady_clock::time_point started_;
    ControlSocket control_;
    UniqueFd metrics_;
    std::optional<CgroupFollower> follower_;
    std::unique_ptr<Child> child_;
    PrivHelper* helper_ = nullptr;
    bool helper_lost_ = false;
    ReloadCount reloads_;
    DryRunLog dry_log_;
    std::optional<DryRunEvents> dry_events_;
    std::chrono::steady_clock::time_point dry_tick_{};
    int stop_sig_ = 0;
};

}  // namespace ktp
