// Dropping root once setup is done: the process that parses and relays
// untrusted bytes runs as an unprivileged user with NoNewPrivs and keeps
// only the capability SO_MARK needs on its upstream sockets.
#pragma once

#include <sys/types.h>

#include <string>

namespace ktp {

struct Options;

struct DropTarget {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string name;
};

// The user --proxy-user names (a name or a number). The default "ktproxy"
// falls back to nobody (with a log line) when the system has no such user;
// an explicit name that does not exist is an error. uid 0 means: keep root.
DropTarget resolve_proxy_user(const std::string& flag, bool given);

// The capability kept after the drop: SO_MARK needs CAP_NET_RAW since
// Linux 5.17 (CAP_NET_ADMIN before); the narrower one where it suffices.
int mark_capability();
// Before Linux 6.5 every bpf() command, map lookups on held fds included,
// needs CAP_BPF when unprivileged BPF is disabled (the distributions'
// default): the relay then keeps CAP_BPF too, and its seccomp filter still
// allows only map commands.
bool bpf_capability_needed();

// Sets the groups, gid and uid to the target's, keeps mark_capability() (and
// CAP_BPF where bpf_capability_needed()) in the effective and permitted sets (nothing else, bounding set included) and
// sets NoNewPrivs. Must run before any thread starts: capabilities are per
// thread. Throws Error naming what failed.
void drop_privileges(const DropTarget& to);

// The helper stays uid 0 (it owns root's files: the lock, the cgroup tree,
// the pins) but keeps only the capabilities its requests need:
// CAP_NET_ADMIN (attach, gateway filters and routes), CAP_BPF and
// CAP_PERFMON (links and pins), CAP_KILL (`run`'s command, another user's),
// CAP_DAC_OVERRIDE (the cgroup2 root is 0555: removing `run`'s transient
// cgroup needs it; also a --config owned by another user). Throws Error.
// containers: the helper also enters the app cgroup's network namespaces
// (setns needs CAP_SYS_ADMIN; opening another process's /proc/PID/ns/net,
// CAP_SYS_PTRACE when that process has capabilities the helper lacks).
void limit_helper_capabilities(bool containers);

// One warning line when the --config file holds upstream passwords and its
// group or others may read it (as ssh refuses a readable key).
void warn_if_config_exposed(const Options& o);

// KTPROXY_PRIV_SELFTEST=1 (tests/e2e/privilege.sh): from a worker thread,
// tries what the drop and seccomp must refuse and logs one line with each
// call's errno. Returns the line ("" when the variable is not set).
std::string privilege_self_test();

// This process's pid as BPF programs see it (the initial pid namespace's),
// or 0 when ktproxy runs in another pid namespace and cannot know it.
uint32_t pid_as_the_kernel_sees_it();
// With KTPROXY_PRIV_SELFTEST_NETNS=COOKIE[,COOKIE] (tests only): asks for a
// socket in each namespace as the relay would and logs the answer; the helper must
// refuse any namespace its own scan of the cgroup did not find.
class NetnsSockets;
void netns_self_test(NetnsSockets& maker);

}  // namespace ktp
