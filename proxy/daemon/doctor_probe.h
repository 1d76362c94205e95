// Kernel probes behind `ktproxy doctor`: each asks the kernel one question
// without leaving anything behind (programs are loaded and closed, never
// attached; netlink is only dumped).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ktp::probe {

// Loads "r0 = 1; exit" as prog_type with expected_attach_type. Empty when it
// loads, else why not (strerror, or the verifier's first complaint).
std::string load_tiny(uint32_t prog_type, uint32_t attach_type);

// Does prog_type (with attach_type) know this helper? nullopt: cannot tell
// (the probe program itself did not load for another reason).
std::optional<bool> has_helper(uint32_t prog_type, uint32_t attach_type, int helper_id);

// cgroup bpf_link (BPF_LINK_CREATE on a cgroup attach type). Empty if there.
std::string cgroup_link();

// A program attached to a cgroup, as BPF_PROG_QUERY reports it.
struct AttachedProg {
    uint32_t id = 0;
    std::string name;       // the program's name (15 chars at most)
    uint32_t attach_flags;  // of the cgroup for this attach type: BPF_F_ALLOW_MULTI, _OVERRIDE or 0
};
// Programs attached directly to the cgroup at dir for attach_type (not the
// inherited ones). Throws Error when the query fails.
std::vector<AttachedProg> cgroup_progs(const std::string& dir, uint32_t attach_type);

// An ip rule (RTM_GETRULE dump of this network namespace).
struct IpRule {
    int family = 0;
    uint32_t priority = 0;
    uint32_t table = 0;
    bool has_fwmark = false;
    uint32_t fwmark = 0, fwmask = 0xffffffff;
};
std::vector<IpRule> ip_rules(int family);

// A TC filter on an interface's clsact ingress (RTM_GETTFILTER dump).
struct TcFilter {
    uint32_t handle = 0;
    uint32_t priority = 0;
    std::string kind;     // "bpf", "u32", ...
    std::string bpf_name; // for kind bpf: the program's section or name
    uint32_t bpf_id = 0;
};
std::vector<TcFilter> tc_ingress_filters(int ifindex);

// Can a clsact qdisc be created? Tried on lo in a throwaway network
// namespace (a forked child), so no real interface is touched.
std::string clsact_in_scratch_netns();

// The output of a tool such as `nft -j list ruleset`, run without a shell,
// with /dev/null as stdin, for at most 5 s and 16 MiB of output.
struct ToolRun {
    bool found = false;  // the program exists (PATH, /usr/sbin, /sbin)
    int status = -1;     // exit status; -1 when it did not exit normally in time
    std::string out;     // stdout
    std::string err;     // the first line of stderr
    bool truncated = false;  // stdout went past 16 MiB: `out` is only its start
};
ToolRun run_tool(const std::vector<std::string>& argv);

}  // namespace ktp::probe
