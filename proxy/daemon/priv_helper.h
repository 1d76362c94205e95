// The privileged half of a dropped instance: a process forked before the
// drop that keeps root and does, on request over a socketpair, the few
// things the unprivileged relay cannot (cilium/proxy's privileged_calls
// has the same shape). Five fixed requests, none taking a path or a pid:
// the helper acts only on the objects it inherited at fork.
#pragma once

#include "base/unique_fd.h"

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace ktp {

class KernelSide;
struct InstanceCgroups;

enum class PrivRequest : uint32_t {
    read_config = 1,     // the bytes of the --config file given at start (root-only files included)
    reattach = 2,        // the app cgroup was created again: attach the hooks to it
    signal_command = 3,  // pass a stop/reload signal on to `run`'s command (arg: the signal)
    kill_leftovers = 4,  // `run`: kill what is left in the transient cgroup
    finish = 5,          // orderly stop: detach, remove gateway routes, lock, cgroup, control socket
};

class PrivHelper {
public:
    // What setup made and the helper's copy of it will undo or change.
    struct Held {
        KernelSide& kernel;
        InstanceCgroups& cgroups;
        std::string control_path;
        pid_t command = 0;  // `run`'s command, 0 otherwise
        std::string config_file;
    };

    // Forks the helper (which never returns from here) and returns its
    // client in the calling process. No thread may run yet.
    static std::unique_ptr<PrivHelper> start(Held held);
    ~PrivHelper();
    PrivHelper(const PrivHelper&) = delete;
    PrivHelper& operator=(const PrivHelper&) = delete;

    // Each throws Error with the helper's reason.
    std::string read_config();
    void reattach();
    void signal_command(int sig);
    void kill_leftovers();
    // Waits for the helper to undo setup and exit.
    void finish();

    pid_t pid() const { return pid_; }
    // Readable (EOF) only once the helper is gone: it never speaks unasked.
    int fd() const { return sock_.get(); }

private:
    PrivHelper(UniqueFd sock, pid_t pid) : sock_(std::move(sock)), pid_(pid) {}
    std::string call(PrivRequest r, int32_t arg = 0);

    UniqueFd sock_;
    pid_t pid_;
    bool reaped_ = false;
};

}  // namespace ktp
