// The seccomp filters installed after setup, hand-written classic BPF (no
// libseccomp): a deny list answering EPERM, so that a bug in a parser cannot
// reach the kernel interfaces an exploit wants (io_uring_setup to escape
// seccomp, bpf to load programs, ptrace, mount, namespaces, modules).
#pragma once

namespace ktp {

enum class SeccompProfile {
    // The unprivileged relay: also bpf() limited to map commands on fds it
    // holds, sockets limited to inet/unix/netlink and no raw or packet
    // sockets (what CAP_NET_RAW would otherwise allow), no new namespaces.
    relay,
    // The privileged helper: bpf stays (it detaches and re-attaches hooks).
    helper,
};

// Installs the filter on the calling thread (threads created later inherit
// it). Needs NoNewPrivs or CAP_SYS_ADMIN. Throws Error.
void install_seccomp(SeccompProfile profile);

}  // namespace ktp
