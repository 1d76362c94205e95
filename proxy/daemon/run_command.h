// `ktproxy run`: a transient cgroup for one command, and the command itself
// started inside it with the caller's identity.
#pragma once

#include "base/unique_fd.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace ktp {

struct Credentials {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
    std::string user, home;
};

// --user NAME if given; else the sudo caller (SUDO_UID/SUDO_GID); else the
// current user. Throws Error for an unknown user.
Credentials resolve_run_user(const std::string& user_flag);

// A cgroup made for one run and removed afterwards. Prefix "ktproxy-run-" so
// that `ktproxy cleanup` can find ones whose owner was killed.
class TransientCgroup {
public:
    static constexpr const char* kPrefix = "ktproxy-run-";
    TransientCgroup(const std::string& mount, int owner_pid);
    ~TransientCgroup();
    TransientCgroup(const TransientCgroup&) = delete;
    TransientCgroup& operator=(const TransientCgroup&) = delete;

    const std::string& path() const { return path_; }
    // Kills whatever the command left running in the cgroup (they must not
    // outlive the hooks and connect directly), waits up to 2s for it to empty.
    void kill_leftovers();

private:
    std::string path_;
};

// Kills the processes of a cgroup and removes it; false if it would not go.
bool remove_cgroup(const std::string& path);

class Child {
public:
    // Forks; the child joins cgroup_dir, takes creds and execs argv once
    // release() is called (so the hooks are in place before its first connect).
    Child(const std::vector<std::string>& argv, const std::string& cgroup_dir, const Credentials& creds);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    // Lets the child exec; throws Error with the reason if exec failed.
    void release();
    pid_t pid() const { return pid_; }
    int pidfd() const { return pidfd_.get(); }
    // After pidfd is readable: the exit status as a shell reports it
    // (code, or 128 + signal).
    int reap();

private:
    pid_t pid_ = -1;
    UniqueFd pidfd_;
    UniqueFd go_;      // write end: one byte lets the child continue
    UniqueFd report_;  // read end: errno from the child if exec fails (CLOEXEC pipe)
    bool reaped_ = false;
};

}  // namespace ktp
