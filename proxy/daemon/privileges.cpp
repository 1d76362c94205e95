// setresuid/capset/prctl without libcap: the few calls the drop needs.
#include "daemon/privileges.h"

#include "base/error.h"
#include "base/log.h"
#include "base/text_file.h"
#include "config/options.h"
#include "netns/netns_broker.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sched.h>
#include <signal.h>
#include <string.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>
#include <cstdlib>

namespace ktp {
namespace {

// The running kernel's major.minor, 0 if unreadable.
int kernel_version()
{
    utsname u{};
    int major = 0, minor = 0;
    if (uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2)
        return 0;
    return major * 1000 + minor;
}

}  // namespace

DropTarget resolve_proxy_user(const std::string& flag, bool given)
{
    const passwd* pw = getpwnam(flag.c_str());
    if (!pw && !flag.empty() && flag.find_first_not_of("0123456789") == std::string::npos)
        pw = getpwuid(static_cast<uid_t>(std::strtoul(flag.c_str(), nullptr, 10)));
    if (!pw && !given) {
        pw = getpwnam("nobody");
        if (pw)
            log::info("no user {}: the relay runs as nobody (scripts/setup and the package create {})", flag, flag);
    }
    if (!pw)
        fail("--proxy-user {}: no such user", flag);
    return DropTarget{pw->pw_uid, pw->pw_gid, pw->pw_name};
}

int mark_capability() { return kernel_version() >= 5017 ? CAP_NET_RAW : CAP_NET_ADMIN; }

bool bpf_capability_needed()
{
    if (kernel_version() >= 6005)
        return false;
    std::ifstream f("/proc/sys/kernel/unprivileged_bpf_disabled");
    int disabled = 1;
    return !(f >> disabled) || disabled != 0;
}

namespace {

#ifndef CAP_BPF
constexpr int CAP_BPF = 39;
#endif
#ifndef CAP_PERFMON
constexpr int CAP_PERFMON = 38;
#endif

bool in(uint64_t mask, int cap) { return cap >= 0 && ((mask >> cap) & 1u) != 0; }

// The bounding set first, while CAP_SETPCAP is still held: nothing this
// process or a child execs can regain what is dropped here. Without
// CAP_SETPCAP (a unit that bounds it away) the set stays as the unit bounded
// it; NoNewPrivs already stops an exec from gaining any.
void bound_to(uint64_t keep)
{
    for (int cap = 0; cap <= 63; ++cap)
        if (!in(keep, cap) && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno != EPERM)
                fail_errno("drop privileges: PR_CAPBSET_DROP {}", cap);
            break;
        }
}

uint64_t permitted_now()
{
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2]{};
    if (syscall(SYS_capget, &hdr, d) != 0)
        return 0;
    return d[0].permitted | (static_cast<uint64_t>(d[1].permitted) << 32);
}

void set_caps(uint64_t keep)
{
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2]{};
    for (int cap = 0; cap <= 63; ++cap)
        if (in(keep, cap)) {
            d[cap / 32].effective |= 1u << (cap % 32);
            d[cap / 32].permitted |= 1u << (cap % 32);
        }
    if (syscall(SYS_capset, &hdr, d) != 0)
        fail_errno("drop privileges: capset");
}

}  // namespace

void limit_helper_capabilities(bool containers)
{
    uint64_t keep = 0;
    for (int cap : {CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_KILL, CAP_DAC_OVERRIDE})
        keep |= 1ull << cap;
    if (containers)
        keep |= (1ull << CAP_SYS_ADMIN) | (1ull << CAP_SYS_PTRACE);
    // Under a unit that bounds some of these away (the daemon has no `run`
    // command to signal or cgroup to remove), the helper keeps the rest.
    keep &= permitted_now();
    bound_to(keep);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        fail_errno("drop privileges: clear ambient capabilities");
    set_caps(keep);
}

void drop_privileges(const DropTarget& to)
{
    uint64_t keep = 1ull << mark_capability();
    if (bpf_capability_needed())
        keep |= 1ull << CAP_BPF;
    for (int cap = 0; cap <= 63; ++cap)
        if (in(keep, cap) && !in(permitted_now(), cap))
            fail("drop privileges: capability {} is needed after the drop (SO_MARK) but not permitted; add it to "
                 "the unit's CapabilityBoundingSet, or give --proxy-user root",
                 cap);
    bound_to(keep);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        fail_errno("drop privileges: clear ambient capabilities");
    // Without KEEPCAPS, setresuid away from 0 empties the permitted set.
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        fail_errno("drop privileges: PR_SET_KEEPCAPS");
    if (setgroups(0, nullptr) != 0)
        fail_errno("drop privileges: setgroups");
    if (setresgid(to.gid, to.gid, to.gid) != 0)
        fail_errno("drop privileges: setresgid {}", to.gid);
    if (setresuid(to.uid, to.uid, to.uid) != 0)
        fail_errno("drop privileges: setresuid {} ({})", to.uid, to.name);
    set_caps(keep);
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
        fail_errno("drop privileges: clear PR_SET_KEEPCAPS");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail_errno("drop privileges: PR_SET_NO_NEW_PRIVS");
    // A setuid that silently left us root would make all of this theatre.
    if (getuid() != to.uid || geteuid() != to.uid || (to.uid != 0 && setresuid(0, 0, 0) == 0))
        fail("drop privileges: still able to become root after the drop");
}

void warn_if_config_exposed(const Options& o)
{
    struct stat st {};
    if (o.config_file.empty() || stat(o.config_file.c_str(), &st) != 0 || (st.st_mode & 077) == 0)
        return;
    std::string text;
    try {
        text = read_text_file(o.config_file);
    } catch (const Error&) {
        return;
    }
    for (const std::string& u : o.upstreams) {
        auto scheme = u.find("://");
        auto at = u.find('@', scheme == std::string::npos ? 0 : scheme);
        if (scheme == std::string::npos || at == std::string::npos || text.find(u.substr(u.find('=') + 1)) == std::string::npos)
            continue;
        log::warn("config {}: permissions {:04o} let other users read the upstream passwords in it; chmod 600 it",
                  o.config_file, st.st_mode & 07777);
        return;
    }
}

uint32_t pid_as_the_kernel_sees_it()
{
    // NSpid lists the pid in each pid namespace from the initial one down:
    // one entry means this is the initial one.
    std::ifstream f("/proc/self/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("NSpid:", 0) == 0) {
            std::istringstream in(line.substr(6));
            std::vector<long> pids;
            for (long p; in >> p;)
                pids.push_back(p);
            return pids.size() == 1 ? static_cast<uint32_t>(pids[0]) : 0;
        }
    return 0;
}

std::string privilege_self_test()
{
    const char* v = getenv("KTPROXY_PRIV_SELFTEST");
    if (!v || std::string_view(v) != "1")
        return {};
    auto outcome = [](long rc) { return rc >= 0 ? std::string("ALLOWED") : std::string(strerrorname_np(errno)); };
    io_uring_params p{};
    long ring = syscall(__NR_io_uring_setup, 1, &p);
    std::string r_ring = outcome(ring);
    if (ring >= 0)
        ::close(static_cast<int>(ring));
    // The smallest valid program: r0 = 0; exit.
    bpf_insn insns[2] = {};
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[1].code = BPF_JMP | BPF_EXIT;
    char license[] = "GPL";
    bpf_attr a{};
    a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    a.insns = reinterpret_cast<uint64_t>(insns);
    a.insn_cnt = 2;
    a.license = reinterpret_cast<uint64_t>(license);
    long prog = syscall(__NR_bpf, BPF_PROG_LOAD, &a, sizeof(a));
    std::string r_prog = outcome(prog);
    if (prog >= 0)
        ::close(static_cast<int>(prog));
    long raw = ::socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
    std::string r_raw = outcome(raw);
    if (raw >= 0)
        ::close(static_cast<int>(raw));
    std::string r_uid = outcome(setuid(0) == 0 ? 0 : -1);
    std::string r_ns = outcome(unshare(CLONE_NEWUSER));
    // Entering its own namespace again: harmless if it worked, and the
    // relay must not be able to enter any (containers' sockets come from
    // the helper).
    int self_ns = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    std::string r_setns = outcome(self_ns < 0 ? -1 : setns(self_ns, CLONE_NEWNET));
    if (self_ns >= 0)
        ::close(self_ns);
    // A process of the relay's own user that is not this relay (the test
    // starts one, standing for another instance's relay): no signal but 0.
    std::string r_peer = "none";
    if (const char* peer = getenv("KTPROXY_PRIV_SELFTEST_PEER"); peer && *peer)
        r_peer = outcome(::kill(static_cast<pid_t>(std::atol(peer)), SIGCONT));
    std::string r_self = outcome(::kill(getpid(), 0) == 0 && ::kill(getpid(), SIGCONT) == 0 ? 0 : -1);
    // The hooks' set of intercepted cgroups (--cgroup-match): the relay's
    // fd of it is read-only (the helper keeps it).
    std::string r_cgroups = "absent";
    for (int fd = 3; fd < 1024; ++fd) {
        bpf_map_info info{};
        bpf_attr q{};
        q.info.bpf_fd = static_cast<uint32_t>(fd);
        q.info.info_len = sizeof(info);
        q.info.info = reinterpret_cast<uint64_t>(&info);
        if (syscall(__NR_bpf, BPF_OBJ_GET_INFO_BY_FD, &q, sizeof(q)) != 0 ||
            std::string_view(info.name) != "ktp_cgroups")
            continue;
        uint64_t key = 1;
        uint8_t one = 1;
        bpf_attr u{};
        u.map_fd = static_cast<uint32_t>(fd);
        u.key = reinterpret_cast<uint64_t>(&key);
        u.value = reinterpret_cast<uint64_t>(&one);
        long rc = syscall(__NR_bpf, BPF_MAP_UPDATE_ELEM, &u, sizeof(u));
        r_cgroups = outcome(rc);
        if (rc == 0) {
            bpf_attr d{};
            d.map_fd = u.map_fd;
            d.key = u.key;
            syscall(__NR_bpf, BPF_MAP_DELETE_ELEM, &d, sizeof(d));
        }
        break;
    }
    // CAP_NET_RAW is kept for SO_MARK = --mark only (the hooks' setsockopt
    // guard): any address (IP_TRANSPARENT) or another mark is refused.
    std::string r_transparent = "?", r_mark = "?";
    if (int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); s >= 0) {
        int one = 1;
        r_transparent = outcome(setsockopt(s, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)));
        uint32_t other = 0x7a7a7a7a;
        r_mark = outcome(setsockopt(s, SOL_SOCKET, SO_MARK, &other, sizeof(other)));
        ::close(s);
    }
    // A child would be a pid of its own, out of the guard's sight.
    pid_t child = ::fork();
    if (child == 0)
        _exit(0);
    if (child > 0)
        waitpid(child, nullptr, 0);
    std::string r_fork = outcome(child);
    std::string line = fmt::format("privilege self-test: io_uring_setup={} bpf_prog_load={} raw_socket={} setuid0={} "
                                   "unshare_user={} setns_net={} signal_peer={} signal_self={} cgroups_map_write={} "
                                   "ip_transparent={} other_mark={} fork={}",
                                   r_ring, r_prog, r_raw, r_uid, r_ns, r_setns, r_peer, r_self, r_cgroups,
                                   r_transparent, r_mark, r_fork);
    log::info("{}", line);
    return line;
}

void netns_self_test(NetnsSockets& maker)
{
    const char* v = getenv("KTPROXY_PRIV_SELFTEST_NETNS");
    if (!v || !*v)
        return;
    // Cookies separated by commas.
    for (char* end = nullptr; *v; v = *end ? end + 1 : end) {
        uint64_t cookie = std::strtoull(v, &end, 10);
        try {
            maker.make(cookie, NetnsSocketKind::egress4, 0, 1);
            log::info("netns self-test: a socket in namespace {}: ALLOWED", cookie);
        } catch (const Error& e) {
            log::info("netns self-test: a socket in namespace {}: {}", cookie, e.what());
        }
        // A listener on a port of the relay's choosing (a container's
        // service's port): the helper picks ports itself.
        for (auto kind : {NetnsSocketKind::listen4, NetnsSocketKind::udp6})
            try {
                maker.make(cookie, kind, 8081, 1);
                log::info("netns self-test: port 8081 in namespace {}: ALLOWED", cookie);
            } catch (const Error& e) {
                log::info("netns self-test: port 8081 in namespace {}: {}", cookie, e.what());
            }
        if (end == v)
            break;
    }
}

}  // namespace ktp
