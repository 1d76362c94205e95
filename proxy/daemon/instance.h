// One running ktproxy: hooks on a cgroup (given, or transient for `run`),
// worker loops, and the main thread that handles signals, the control socket,
// the metrics endpoint and, for `run`, the command's exit.
#pragma once

#include "config/options.h"

#include <string>
#include <vector>

namespace ktp {

// Returns the process exit code (CMD's status for `run`).
int run_instance(const Options& o, int argc, const char* const* argv);

// `ktproxy status`: asks every control socket in /run/ktproxy (or --control).
int run_status(const Options& o);

// The control sockets to ask: --control, else every one in /run/ktproxy.
std::vector<std::string> control_sockets(const Options& o);

// `ktproxy ctl dry-run on|off`: switches one running instance.
int run_ctl(const Options& o);

// `ktproxy cleanup`: unpins fail-closed hooks, removes transient cgroups of
// dead `ktproxy run`s and stale control sockets.
int run_cleanup(const Options& o);

constexpr const char* kRunDir = "/run/ktproxy";
constexpr const char* kBpffs = "/sys/fs/bpf";
constexpr const char* kPinRoot = "/sys/fs/bpf/ktproxy";

}  // namespace ktp
