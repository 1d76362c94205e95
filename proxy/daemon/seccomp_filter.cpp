// Building the filters: syscall numbers of this build's architecture only;
// any other architecture's calls (x32, ia32 on x86_64) are refused whole.
#include "daemon/seccomp_filter.h"

#include "base/error.h"

#include <linux/audit.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace ktp {
namespace {

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
#error "ktproxy's seccomp filter knows x86_64 and aarch64"
#endif

constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr uint32_t kDeny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
constexpr uint32_t kNoSys = SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA);

// Refused in both processes: nothing ktproxy does after setup needs them.
constexpr long kDenied[] = {
    __NR_io_uring_setup,  // rings are made before; a new one would escape this filter
    __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev, __NR_mount, __NR_umount2, __NR_pivot_root,
    __NR_chroot, __NR_unshare, __NR_kexec_load, __NR_kexec_file_load, __NR_init_module,
    __NR_finit_module, __NR_delete_module, __NR_reboot, __NR_swapon, __NR_swapoff, __NR_acct,
    __NR_perf_event_open, __NR_userfaultfd, __NR_keyctl, __NR_add_key, __NR_request_key, __NR_open_by_handle_at,
    __NR_name_to_handle_at, __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick, __NR_move_mount,
    __NR_open_tree, __NR_mount_setattr, __NR_settimeofday, __NR_clock_settime, __NR_clock_adjtime,
    __NR_adjtimex, __NR_syslog, __NR_quotactl, __NR_vhangup,
#if defined(__x86_64__)
    __NR_iopl, __NR_ioperm, __NR_uselib,
#endif
};

// bpf() commands the relay uses, all on map fds it holds: lookups for the
// counters and status, updates of the rules (SIGHUP) and the dead cache.
constexpr uint32_t kRelayBpfCmds[] = {
    BPF_MAP_LOOKUP_ELEM,      BPF_MAP_UPDATE_ELEM,       BPF_MAP_DELETE_ELEM,
    BPF_MAP_GET_NEXT_KEY,     BPF_OBJ_GET_INFO_BY_FD,    BPF_MAP_LOOKUP_BATCH,
    BPF_MAP_LOOKUP_AND_DELETE_BATCH, BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH,
};

constexpr uint32_t kNewNamespaces =
    CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;

class Program {
public:
    void stmt(uint16_t code, uint32_t k) { f_.push_back(BPF_STMT(code, k)); }
    void jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { f_.push_back(BPF_JUMP(code, k, jt, jf)); }
    void load_nr() { stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)); }
    // The low 32 bits of argument i (ints, flags and commands all fit).
    void load_arg(int i) { stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args) + 8 * i); }
    void ret(uint32_t action) { stmt(BPF_RET | BPF_K, action); }
    // if A == k: return action; else go on.
    void when_eq(uint32_t k, uint32_t action)
    {
        jump(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 1);
        ret(action);
    }
    // if nr == k: run `block` (which must end in a return); else skip it.
    template <typename Block>
    void on_syscall(long nr, Block block)
    {
        Program b;
        block(b);
        jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, static_cast<uint8_t>(b.f_.size()));
        f_.insert(f_.end(), b.f_.begin(), b.f_.end());
    }
    std::vector<sock_filter>& code() { return f_; }

private:
    std::vector<sock_filter> f_;
};

}  // namespace

void install_seccomp(SeccompProfile profile)
{
    Program p;
    p.stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
    p.jump(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0);
    p.ret(kDeny);
    p.load_nr();
#if defined(__x86_64__)
    p.jump(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1);
    p.ret(kDeny);
#endif
    for (long nr : kDenied)
        p.when_eq(static_cast<uint32_t>(nr), kDeny);
    // setns: never in the relay; in the helper only into a network
    // namespace (the containers' sockets, netns/netns_broker.cpp).
    if (profile == SeccompProfile::relay) {
        p.when_eq(__NR_setns, kDeny);
    } else {
        p.on_syscall(__NR_setns, [](Program& b) {
            b.load_arg(1);
            b.when_eq(CLONE_NEWNET, kAllow);
            b.ret(kDeny);
        });
    }
    if (profile == SeccompProfile::relay) {
        p.on_syscall(__NR_bpf, [](Program& b) {
            b.load_arg(0);
            for (uint32_t cmd : kRelayBpfCmds)
                b.when_eq(cmd, kAllow);
            b.ret(kDeny);
        });
        p.on_syscall(__NR_socket, [](Program& b) {
            b.load_arg(0);
            b.jump(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 4, 0);
            b.jump(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 3, 0);
            b.jump(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 2, 0);
            b.jump(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 1, 0);  // getaddrinfo asks rtnetlink
            b.ret(kDeny);
            b.load_arg(1);
            b.stmt(BPF_ALU | BPF_AND | BPF_K, 0xf);  // the type without SOCK_NONBLOCK/SOCK_CLOEXEC
            b.when_eq(SOCK_RAW, kDeny);
            b.when_eq(SOCK_PACKET, kDeny);
            b.ret(kAllow);
        });
        // clone: threads only (CLONE_THREAD), without namespace flags. The
        // relay forks nothing after the drop (run's command and the helper
        // are forked before): a child would have its own pid, out of the
        // setsockopt guard's sight (ktp_relay_guard), with CAP_NET_RAW.
        p.on_syscall(__NR_clone, [](Program& b) {
            b.load_arg(0);
            b.jump(BPF_JMP | BPF_JSET | BPF_K, kNewNamespaces, 0, 1);
            b.ret(kDeny);
            b.jump(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1);
            b.ret(kAllow);
            b.ret(kDeny);
        });
#ifdef __NR_fork
        p.when_eq(__NR_fork, kDeny);
#endif
#ifdef __NR_vfork
        p.when_eq(__NR_vfork, kDeny);
#endif
        // clone3's flags sit behind a pointer seccomp cannot read: ENOSYS
        // makes glibc create threads with clone, which is checked above.
        p.when_eq(__NR_clone3, kNoSys);
        // Signals: to this process only (a worker's SIGTERM to it, thread
        // wake-ups), or signal 0 (is a pin's owner alive?). Every instance's
        // relay runs as the same user: one taken over could otherwise kill
        // or stop the others, whose hooks then go (fail-open) or whose apps
        // hang. The command of `ktproxy run` is signalled by the helper.
        const uint32_t self = static_cast<uint32_t>(getpid());
        auto own_or_probe = [self](int pid_arg, int sig_arg) {
            return [=](Program& b) {
                b.load_arg(pid_arg);
                b.when_eq(self, kAllow);
                if (sig_arg >= 0) {
                    b.load_arg(sig_arg);
                    b.when_eq(0, kAllow);
                }
                b.ret(kDeny);
            };
        };
        p.on_syscall(__NR_kill, own_or_probe(0, 1));
        p.on_syscall(__NR_tgkill, own_or_probe(0, 2));
        p.on_syscall(__NR_rt_sigqueueinfo, own_or_probe(0, -1));
        p.on_syscall(__NR_rt_tgsigqueueinfo, own_or_probe(0, -1));
        p.when_eq(__NR_tkill, kDeny);
        p.when_eq(__NR_pidfd_send_signal, kDeny);
    }
    p.ret(kAllow);
    auto& code = p.code();
    sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
        fail_errno("install the seccomp filter");
}

}  // namespace ktp
