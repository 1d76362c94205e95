// The privileged half of a dropped instance: a process forked before the
// drop that keeps root and does, on request over a socketpair, the few
// things the unprivileged relay cannot (cilium/proxy's privileged_calls
// has the same shape). Seven fixed requests, none taking a path or a pid:
// the helper acts only on the objects it inherited at fork, and on the
// network namespaces its own scan of the intercepted cgroup found.
#pragma once

#include "base/unique_fd.h"
#include "netns/netns_broker.h"

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
    // Containers (proxy/netns/netns_broker.h): the namespaces of the
    // intercepted cgroup's processes (reply: cookie and cgroup of each) ...
    netns_scan = 6,
    // ... and sockets made inside one of them, named by a cookie the last
    // scans returned (args: cookie, kind, port, count; reply: the fds,
    // passed with SCM_RIGHTS). Any other cookie is refused.
    netns_sockets = 7,
};

class PrivHelper final : public NetnsSockets {
public:
    // What setup made and the helper's copy of it will undo or change.
    struct Held {
        KernelSide& kernel;
        InstanceCgroups& cgroups;
        std::string control_path;
        // `run`'s command: the relay's pidfd of it (the helper's copy from
        // the fork is kept, so no pid is looked up again), -1 otherwise.
        int command_pidfd = -1;
        std::string config_file;
        // Set when the instance has an app cgroup: its containers'
        // namespaces are entered by the helper (CAP_SYS_ADMIN for setns,
        // CAP_SYS_PTRACE to open another process's namespace).
        std::optional<NetnsBrokerConfig> netns;
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
    // NetnsSockets, answered by the helper's broker.
    std::vector<NetnsFound> scan() override;
    std::vector<UniqueFd> make(uint64_t cookie, NetnsSocketKind kind, uint16_t port, unsigned count) override;

    pid_t pid() const { return pid_; }
    // Readable once the helper is gone (a pidfd: the socket is read by the
    // namespace thread and workers too, so its readability says nothing).
    int fd() const { return pidfd_.get(); }
    // Readable once a request went unanswered (the helper hangs): the relay
    // has given up on it and stops as on its death.
    int lost_fd() const { return lost_fd_.get(); }

private:
    PrivHelper(UniqueFd sock, pid_t pid, UniqueFd pidfd);
    struct Args {  // value-initialised: all 0
        int32_t arg;
        uint64_t cookie;
        uint32_t kind;
        uint16_t port;
        uint16_t count;
    };
    std::string call(PrivRequest r, Args a = {}, std::vector<UniqueFd>* fds = nullptr);

    // Requests come from the main thread, the namespace thread and the
    // workers (egress sockets): one at a time on the socket.
    std::mutex mu_;
    UniqueFd sock_;
    pid_t pid_;
    UniqueFd pidfd_;
    UniqueFd lost_fd_;  // eventfd
    bool reaped_ = false;
};

}  // namespace ktp
