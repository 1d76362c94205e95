// Transient cgroup and child process of `ktproxy run`.
#include "daemon/run_command.h"

#include "base/error.h"
#include "base/log.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ktp {

namespace {

Credentials from_passwd(const passwd* pw)
{
    Credentials c;
    c.uid = pw->pw_uid;
    c.gid = pw->pw_gid;
    c.user = pw->pw_name;
    c.home = pw->pw_dir;
    int n = 64;
    std::vector<gid_t> groups(static_cast<size_t>(n));
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) {
        groups.resize(static_cast<size_t>(n));
        getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n);
    }
    groups.resize(static_cast<size_t>(n));
    c.groups = groups;
    return c;
}

bool cgroup_empty(const std::string& path)
{
    std::ifstream f(path + "/cgroup.procs");
    std::string line;
    return !std::getline(f, line) || line.empty();
}

void kill_cgroup(const std::string& path)
{
    // cgroup.kill (Linux >= 5.14) kills atomically, forks included; fall back
    // to signalling each listed process.
    if (std::ofstream k(path + "/cgroup.kill"); k && (k << "1").flush())
        return;
    std::ifstream f(path + "/cgroup.procs");
    pid_t pid;
    while (f >> pid)
        kill(pid, SIGKILL);
}

bool wait_empty(const std::string& path, std::chrono::milliseconds limit)
{
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!cgroup_empty(path)) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

}  // namespace

Credentials resolve_run_user(const std::string& user_flag)
{
    if (!user_flag.empty()) {
        const passwd* pw = getpwnam(user_flag.c_str());
        if (!pw) {
            char* end = nullptr;
            unsigned long uid = std::strtoul(user_flag.c_str(), &end, 10);
            if (end && *end == '\0')
                pw = getpwuid(static_cast<uid_t>(uid));
        }
        if (!pw)
            fail("--user {}: no such user", user_flag);
        return from_passwd(pw);
    }
    if (const char* su = getenv("SUDO_UID"); su && getuid() == 0) {
        uid_t uid = static_cast<uid_t>(std::strtoul(su, nullptr, 10));
        if (const passwd* pw = getpwuid(uid)) {
            Credentials c = from_passwd(pw);
            if (const char* sg = getenv("SUDO_GID"))
                c.gid = static_cast<gid_t>(std::strtoul(sg, nullptr, 10));
            return c;
        }
    }
    if (const passwd* pw = getpwuid(getuid())) {
        Credentials c = from_passwd(pw);
        c.gid = getgid();
        return c;
    }
    Credentials c;
    c.uid = getuid();
    c.gid = getgid();
    return c;
}

TransientCgroup::TransientCgroup(const std::string& mount, int owner_pid)
    : path_(mount + "/" + kPrefix + std::to_string(owner_pid))
{
    if (mkdir(path_.c_str(), 0755) != 0)
        fail_errno("create transient cgroup {}", path_);
}

TransientCgroup::~TransientCgroup()
{
    if (!remove_cgroup(path_))
        log::warn("transient cgroup {} could not be removed; `ktproxy cleanup` will retry", path_);
}

void TransientCgroup::kill_leftovers()
{
    if (cgroup_empty(path_))
        return;
    kill_cgroup(path_);
    wait_empty(path_, std::chrono::seconds(2));
}

bool remove_cgroup(const std::string& path)
{
    if (!cgroup_empty(path)) {
        kill_cgroup(path);
        wait_empty(path, std::chrono::seconds(2));
    }
    // rmdir can race the last process's exit; retry briefly.
    for (int i = 0; i < 100; ++i) {
        if (rmdir(path.c_str()) == 0 || errno == ENOENT)
            return true;
        if (errno != EBUSY)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

Child::Child(const std::vector<std::string>& argv, const std::string& cgroup_dir, const Credentials& creds)
{
    int go[2], report[2];
    if (pipe2(go, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0)
        fail_errno("pipe");
    UniqueFd go_r(go[0]), report_w(report[1]);
    go_ = UniqueFd(go[1]);
    report_ = UniqueFd(report[0]);

    // Everything the child needs is prepared before fork: after it, only
    // async-signal-safe calls.
    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e) {
        std::string_view kv(*e);
        if (kv.rfind("HOME=", 0) == 0 || kv.rfind("USER=", 0) == 0 || kv.rfind("LOGNAME=", 0) == 0)
            continue;
        env_store.emplace_back(kv);
    }
    if (!creds.home.empty())
        env_store.push_back("HOME=" + creds.home);
    if (!creds.user.empty()) {
        env_store.push_back("USER=" + creds.user);
        env_store.push_back("LOGNAME=" + creds.user);
    }
    std::vector<char*> envp, args;
    for (auto& s : env_store)
        envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_store = argv;
    for (auto& s : argv_store)
        args.push_back(s.data());
    args.push_back(nullptr);
    std::string procs = cgroup_dir + "/cgroup.procs";
    const bool drop = getuid() == 0 && creds.uid != 0;

    pid_ = fork();
    if (pid_ < 0)
        fail_errno("fork");
    if (pid_ == 0) {
        auto die = [&](int err) {
            [[maybe_unused]] ssize_t n = ::write(report_w.get(), &err, sizeof(err));
            _exit(127);
        };
        char byte;
        if (::read(go_r.get(), &byte, 1) != 1)
            _exit(127);  // the parent gave up: never run unproxied
        int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) != 1)
            die(errno);
        ::close(fd);
        if (drop) {
            if (setgroups(creds.groups.size(), creds.groups.data()) != 0 || setgid(creds.gid) != 0 ||
                setuid(creds.uid) != 0)
                die(errno);
        }
        // The command gets the signal state a shell would give it.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        signal(SIGPIPE, SIG_DFL);
        execvpe(args[0], args.data(), envp.data());
        die(errno);
    }
    pidfd_ = UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
    if (!pidfd_)
        fail_errno("pidfd_open (needs Linux >= 5.3)");
}

Child::~Child()
{
    if (pid_ > 0 && !reaped_) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
}

void Child::release()
{
    char byte = 1;
    if (::write(go_.get(), &byte, 1) != 1)
        fail_errno("start the command");
    go_.reset();
    int err = 0;
    // EOF (exec succeeded and closed the CLOEXEC pipe) or an errno.
    ssize_t n = ::read(report_.get(), &err, sizeof(err));
    if (n == sizeof(err)) {
        waitpid(pid_, nullptr, 0);
        reaped_ = true;
        fail("run: cannot start the command: {}", errno_text(err));
    }
}

int Child::reap()
{
    int status = 0;
    if (waitpid(pid_, &status, 0) < 0)
        return 1;
    reaped_ = true;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

}  // namespace ktp
