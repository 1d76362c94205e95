// Instance names and the per-cgroup ownership lock.
#include "daemon/ownership.h"

#include "base/error.h"
#include "base/text_file.h"
#include "daemon/instance.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>

namespace ktp {

std::string instance_name(std::string_view mount, std::string_view cgroup_path)
{
    std::string_view rel = cgroup_path.substr(std::min(cgroup_path.size(), mount.size()));
    while (!rel.empty() && rel.front() == '/')
        rel.remove_prefix(1);
    while (!rel.empty() && rel.back() == '/')
        rel.remove_suffix(1);
    if (rel.empty())
        return "root";
    std::string out;
    for (char ch : rel) {
        if (ch == '/')
            out += '_';
        else if (ch == '_')
            out += "%5F";
        else if (ch == '%')
            out += "%25";
        else
            out += ch;
    }
    return out;
}

std::string bpffs_name(std::string_view instance_name)
{
    std::string out;
    for (char ch : instance_name) {
        if (ch == '.')
            out += "%2E";
        else
            out += ch;
    }
    return out;
}

std::string InstanceLock::path_of(const std::string& name) { return std::string(kRunDir) + "/" + name + ".lock"; }

namespace {

int read_pid(int fd)
{
    char buf[32] = {};
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    return n > 0 ? std::atoi(buf) : 0;
}

}  // namespace

InstanceLock InstanceLock::lock(const std::string& name, bool create, int* owner)
{
    if (create && mkdir(kRunDir, 0755) != 0 && errno != EEXIST)
        fail_errno("create {}", kRunDir);
    InstanceLock l;
    l.path_ = path_of(name);
    // A lock file removed by `cleanup` between our open and our flock is not
    // the one the next locker finds: lock, then check that the path still
    // names the file locked, else start over (bounded: it only loses to
    // another cleanup).
    for (int attempt = 0; attempt < 20; ++attempt) {
        UniqueFd fd(::open(l.path_.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600));
        if (!fd) {
            if (!create && errno == ENOENT)
                return l;
            fail_errno("open the instance lock {}", l.path_);
        }
        if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK)
                fail_errno("lock {}", l.path_);
            if (owner)
                *owner = read_pid(fd.get());
            return l;
        }
        struct stat held {}, now {};
        if (fstat(fd.get(), &held) == 0 && stat(l.path_.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
            held.st_dev == now.st_dev) {
            l.fd_ = std::move(fd);
            return l;
        }
        if (!create)
            return l;
    }
    fail("lock {}: it keeps being replaced", l.path_);
}

InstanceLock InstanceLock::acquire(const std::string& name)
{
    int owner = 0;
    InstanceLock l = lock(name, true, &owner);
    if (!l)
        fail("the cgroup is already served by ktproxy pid {} (it holds {}); stop it first",
             owner > 0 ? fmt::format("{}", owner) : std::string("?"), l.path_);
    return l;
}

InstanceLock InstanceLock::try_acquire(const std::string& name, int* owner)
{
    *owner = 0;
    return lock(name, false, owner);
}

void InstanceLock::record_owner() const
{
    std::string pid = fmt::format("{}\n", getpid());
    if (ftruncate(fd_.get(), 0) != 0 || pwrite(fd_.get(), pid.data(), pid.size(), 0) != ssize_t(pid.size()))
        fail_errno("record the owner in {}", path_);
}

void InstanceLock::remove()
{
    if (fd_)
        ::unlink(path_.c_str());
}

std::string legacy_pin_owner_file(const std::string& name)
{
    return std::string(kRunDir) + "/" + name + ".pin-owner";
}

void write_legacy_pin_owner(const std::string& name)
{
    std::ofstream f(legacy_pin_owner_file(name), std::ios::trunc);
    f << getpid() << "\n";
}

int live_ktproxy_in(const std::string& file)
{
    int pid = std::atoi(read_text_file(file).c_str());
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    std::string comm = read_text_file(fmt::format("/proc/{}/comm", pid));
    return comm.rfind("ktproxy", 0) == 0 ? pid : 0;
}

int legacy_live_pin_owner(const std::string& name) { return live_ktproxy_in(legacy_pin_owner_file(name)); }

}  // namespace ktp
