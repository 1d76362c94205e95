// The helper's loop and its client. Requests are a fixed 24-byte header
// (type, an int, and a namespace cookie, socket kind, port and count for
// netns_sockets); replies are (status, length) and at most kMaxReply bytes:
// a status of 0 carries the config bytes or the scan's list, any other an
// error line. netns_sockets' fds ride on the reply's header (SCM_RIGHTS).
#include "daemon/priv_helper.h"

#include "base/error.h"
#include "base/log.h"
#include "daemon/instance_cgroups.h"
#include "daemon/kernel_side.h"
#include "daemon/pinned_config.h"
#include "daemon/privileges.h"
#include "daemon/seccomp_filter.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ktp {
namespace {

struct Request {
    uint32_t type;
    int32_t arg;
    uint64_t cookie;
    uint32_t kind;
    uint16_t port;
    uint16_t count;
};
static_assert(sizeof(Request) == 24);
struct ReplyHead {
    int32_t status;
    uint32_t len;
};

constexpr uint32_t kMaxReply = 4u << 20;  // a config file larger than this is refused
// The relay waits this long at most for an answer (finish detaches and
// removes routes: milliseconds; a stuck helper must not stall stopping).
constexpr int kReplyTimeoutMs = 15000;

bool io_full(int fd, void* buf, size_t n, bool reading, int timeout_ms)
{
    auto* p = static_cast<char*>(buf);
    while (n > 0) {
        if (timeout_ms >= 0) {
            pollfd pfd{fd, static_cast<short>(reading ? POLLIN : POLLOUT), 0};
            int r = poll(&pfd, 1, timeout_ms);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return false;
        }
        ssize_t k = reading ? ::read(fd, p, n) : ::send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

// The reply's header, with fds attached to its first byte.
bool send_head(int fd, const void* head, size_t n, const std::vector<UniqueFd>& fds)
{
    if (fds.empty())
        return io_full(fd, const_cast<void*>(head), n, false, -1);
    iovec iov{const_cast<void*>(head), n};
    std::vector<char> ctl(CMSG_SPACE(sizeof(int) * fds.size()));
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.data();
    m.msg_controllen = ctl.size();
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
        int v = fds[i].get();
        std::memcpy(CMSG_DATA(c) + i * sizeof(int), &v, sizeof(int));
    }
    ssize_t k;
    do
        k = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    while (k < 0 && errno == EINTR);
    if (k <= 0)
        return false;
    return io_full(fd, static_cast<char*>(const_cast<void*>(head)) + k, n - static_cast<size_t>(k), false, -1);
}

// The reply's header and whatever fds came with it (close-on-exec).
bool recv_head(int fd, void* head, size_t n, std::vector<UniqueFd>& fds, int timeout_ms)
{
    auto* p = static_cast<char*>(head);
    while (n > 0) {
        pollfd pfd{fd, POLLIN, 0};
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        iovec iov{p, n};
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * NetnsSockets::kMaxBatch)];
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl;
        m.msg_controllen = sizeof(ctl);
        ssize_t k = ::recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
                    int v;
                    std::memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                    fds.emplace_back(v);
                }
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

// Signals the command may be sent: those the supervisor passes on.
bool forwardable(int sig) { return sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT || sig == SIGUSR1; }

// The helper keeps the kernel objects it may have to undo (BPF programs,
// maps and links, cgroup directories, netlink) and drops what is the
// relay's: rings, listeners, the control and metrics sockets, pipes.
void close_relay_fds(int keep, int keep_too)
{
    std::vector<int> close_these;
    if (DIR* d = opendir("/proc/self/fd")) {
        while (dirent* e = readdir(d)) {
            int fd = std::atoi(e->d_name);
            if (e->d_name[0] == '.' || fd <= 2 || fd == keep || fd == keep_too || fd == dirfd(d))
                continue;
            char link[128] = {};
            std::string self = "/proc/self/fd/" + std::string(e->d_name);
            if (readlink(self.c_str(), link, sizeof(link) - 1) <= 0)
                continue;
            std::string_view l(link);
            bool relay = l.rfind("pipe:", 0) == 0 || l == "anon_inode:[io_uring]" || l == "anon_inode:[eventfd]" ||
                         l == "anon_inode:[signalfd]" || l == "anon_inode:[pidfd]" || l == "anon_inode:inotify";
            if (l.rfind("socket:", 0) == 0) {
                int domain = 0;
                socklen_t len = sizeof(domain);
                relay = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain != AF_NETLINK;
                // The workers' sock_diag sockets (AppSocketProbe) are the
                // relay's; route netlink is what the helper may need.
                int proto = 0;
                len = sizeof(proto);
                if (domain == AF_NETLINK && getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 &&
                    proto == NETLINK_SOCK_DIAG)
                    relay = true;
            }
            if (relay)
                close_these.push_back(fd);
        }
        closedir(d);
    }
    for (int fd : close_these)
        ::close(fd);
}

// Undoes setup in the order shut_down would: leftovers die while the hooks
// still hold them, then the hooks go, then the lock and the cgroup.
void tear_down(PrivHelper::Held& h)
{
    if (h.cgroups.transient)
        h.cgroups.transient->kill_leftovers();
    h.kernel.release();
    if (h.cgroups.lock)
        h.cgroups.lock->remove();
    h.cgroups.transient.reset();
    ::unlink(h.control_path.c_str());
}

[[noreturn]] void serve(PrivHelper::Held h, const PinnedConfig& config, int sock, pid_t parent)
{
    prctl(PR_SET_NAME, "ktproxy-priv", 0, 0, 0);
    // The relay's death (however it dies) ends the helper too: a killed
    // instance leaves what a killed ktproxy always left, for `cleanup`.
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent)
        _exit(0);
    close_relay_fds(sock, h.command_pidfd);
    // The pidfd the relay opened when it forked the command, inherited: a
    // pid opened here could already name another process.
    UniqueFd command(h.command_pidfd);
    std::unique_ptr<NetnsBroker> netns;
    try {
        if (h.netns)
            netns = std::make_unique<NetnsBroker>(std::move(*h.netns));
        limit_helper_capabilities(netns != nullptr);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            fail_errno("PR_SET_NO_NEW_PRIVS");
        install_seccomp(SeccompProfile::helper);
    } catch (const Error& e) {
        log::error("privileged helper: {}", e.what());
        _exit(1);
    }
    for (;;) {
        Request req{};
        if (!io_full(sock, &req, sizeof(req), true, -1))
            _exit(0);  // the relay died without asking to finish: leave everything as a kill would
        int32_t status = 0;
        std::string body;
        std::vector<UniqueFd> fds;
        try {
            switch (static_cast<PrivRequest>(req.type)) {
            case PrivRequest::read_config:
                if (config.empty())
                    fail("no --config file was given at start");
                body = config.read(kMaxReply);
                break;
            case PrivRequest::reattach: {
                if (!h.cgroups.app || !h.kernel.sock())
                    fail("no app cgroup");
                Cgroup fresh = open_cgroup2_dir(h.cgroups.app->path);
                h.kernel.sock()->reattach(h.cgroups.app->fd.get(), fresh.fd.get(), fresh.path);
                h.cgroups.app = std::move(fresh);
                break;
            }
            case PrivRequest::signal_command:
                if (!command || !forwardable(req.arg))
                    fail("signal {} to the command refused", req.arg);
                if (syscall(SYS_pidfd_send_signal, command.get(), req.arg, nullptr, 0) != 0 && errno != ESRCH)
                    fail_errno("signal the command");
                break;
            case PrivRequest::kill_leftovers:
                if (h.cgroups.transient)
                    h.cgroups.transient->kill_leftovers();
                break;
            case PrivRequest::finish:
                tear_down(h);
                break;
            case PrivRequest::netns_scan:
                if (!netns)
                    fail("no app cgroup: no container namespaces");
                for (const NetnsFound& f : netns->scan()) {
                    uint32_t len = static_cast<uint32_t>(f.cgroup.size());
                    body.append(reinterpret_cast<const char*>(&f.cookie), sizeof(f.cookie));
                    body.append(reinterpret_cast<const char*>(&len), sizeof(len));
                    body += f.cgroup;
                }
                if (body.size() > kMaxReply)
                    fail("{} namespaces: too many to answer", body.size() / 12);
                break;
            case PrivRequest::netns_sockets:
                if (!netns)
                    fail("no app cgroup: no container namespaces");
                fds = netns->make(req.cookie, static_cast<NetnsSocketKind>(req.kind), req.port, req.count);
                break;
            default:
                fail("unknown request {}", req.type);
            }
        } catch (const Error& e) {
            status = EIO;
            body = e.what();
        }
        ReplyHead head{status, static_cast<uint32_t>(body.size())};
        if (!send_head(sock, &head, sizeof(head), fds) || !io_full(sock, body.data(), body.size(), false, -1))
            _exit(0);
        if (static_cast<PrivRequest>(req.type) == PrivRequest::finish)
            _exit(status == 0 ? 0 : 1);
    }
}

}  // namespace

std::unique_ptr<PrivHelper> PrivHelper::start(Held held)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        fail_errno("privileged helper: socketpair");
    UniqueFd mine(sv[0]), theirs(sv[1]);
    // Pinned before the fork, as root: the helper rereads from this
    // directory only (pinned_config.h says why).
    PinnedConfig config(held.config_file);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        fail_errno("privileged helper: fork");
    if (pid == 0) {
        mine.reset();
        serve(std::move(held), config, theirs.release(), parent);
    }
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd)
        fail_errno("privileged helper: pidfd_open");
    return std::unique_ptr<PrivHelper>(new PrivHelper(std::move(mine), pid, std::move(pidfd)));
}

PrivHelper::PrivHelper(UniqueFd sock, pid_t pid, UniqueFd pidfd)
    : sock_(std::move(sock)), pid_(pid), pidfd_(std::move(pidfd)), lost_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
    if (!lost_fd_)
        fail_errno("privileged helper: eventfd");
}

PrivHelper::~PrivHelper()
{
    sock_.reset();
    if (!reaped_)
        waitpid(pid_, nullptr, 0);
}

std::string PrivHelper::call(PrivRequest r, Args a, std::vector<UniqueFd>* fds)
{
    std::lock_guard lock(mu_);
    Request req{static_cast<uint32_t>(r), a.arg, a.cookie, a.kind, a.port, a.count};
    ReplyHead head{};
    std::vector<UniqueFd> got;
    // A request or reply cut short by the timeout leaves the stream out of
    // step: a later call would read this one's late reply (sockets of one
    // namespace handed out for another). The socket goes, and with it
    // every later request.
    auto lost = [&] {
        sock_.reset();
        uint64_t one = 1;
        (void)!::write(lost_fd_.get(), &one, sizeof(one));
        fail("privileged helper (pid {}) did not answer; no further requests go to it", pid_);
    };
    if (!sock_)
        fail("privileged helper (pid {}) did not answer earlier; no further requests go to it", pid_);
    if (!io_full(sock_.get(), &req, sizeof(req), false, kReplyTimeoutMs) ||
        !recv_head(sock_.get(), &head, sizeof(head), got, kReplyTimeoutMs) || head.len > kMaxReply)
        lost();
    std::string body(head.len, '\0');
    if (!io_full(sock_.get(), body.data(), body.size(), true, kReplyTimeoutMs))
        lost();
    if (head.status != 0)
        fail("{}", body);
    if (fds)
        *fds = std::move(got);
    return body;
}

std::string PrivHelper::read_config() { return call(PrivRequest::read_config); }
void PrivHelper::reattach() { call(PrivRequest::reattach); }
void PrivHelper::signal_command(int sig) { call(PrivRequest::signal_command, {sig, 0, 0, 0, 0}); }

std::vector<NetnsFound> PrivHelper::scan()
{
    std::string b = call(PrivRequest::netns_scan);
    std::vector<NetnsFound> out;
    for (size_t at = 0; at + 12 <= b.size();) {
        NetnsFound f;
        uint32_t len;
        std::memcpy(&f.cookie, b.data() + at, 8);
        std::memcpy(&len, b.data() + at + 8, 4);
        at += 12;
        if (len > b.size() - at)
            break;
        f.cgroup = b.substr(at, len);
        at += len;
        out.push_back(std::move(f));
    }
    return out;
}

std::vector<UniqueFd> PrivHelper::make(uint64_t cookie, NetnsSocketKind kind, uint16_t port, unsigned count)
{
    std::vector<UniqueFd> fds;
    Args a{};
    a.cookie = cookie;
    a.kind = static_cast<uint32_t>(kind);
    a.port = port;
    a.count = static_cast<uint16_t>(std::min(count, NetnsSockets::kMaxBatch));
    call(PrivRequest::netns_sockets, a, &fds);
    if (fds.empty())
        fail("privileged helper: no socket in namespace {}", cookie);
    return fds;
}
void PrivHelper::kill_leftovers() { call(PrivRequest::kill_leftovers); }

void PrivHelper::finish()
{
    call(PrivRequest::finish);
    sock_.reset();
    waitpid(pid_, nullptr, 0);
    reaped_ = true;
}

}  // namespace ktp
