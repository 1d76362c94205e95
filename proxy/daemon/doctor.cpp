// `ktproxy doctor`: the checks, in the order ktproxy meets them at startup.
#include "daemon/doctor.h"

#include "base/error.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "daemon/cgroup.h"
#include "daemon/doctor_netfilter.h"
#include "daemon/doctor_probe.h"
#include "daemon/instance.h"
#include "base/text_file.h"
#include "daemon/ownership.h"
#include "daemon/preflight.h"
#include "kernel/sock_hooks.h"
#include "ops/local_server.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <liburing.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <net/if.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <dirent.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "tc_gateway.skel.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace ktp {

namespace {

using Checks = std::vector<CheckResult>;

void add(Checks& out, std::string name, CheckStatus s, std::string verdict, std::string fix = {})
{
    out.push_back({std::move(name), s, std::move(verdict), std::move(fix)});
}

std::string trim(std::string s)
{
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

void check_kernel(Checks& out)
{
    utsname u{};
    uname(&u);
    int major = 0, minor = 0;
    std::sscanf(u.release, "%d.%d", &major, &minor);
    const bool new_enough = major > 5 || (major == 5 && minor >= 19);
    if (!new_enough)
        add(out, "kernel", CheckStatus::fail, fmt::format("Linux {}: ktproxy needs 5.19 or later", u.release),
            "boot a kernel >= 5.19 (Debian 12's 6.1 works)");
    else if (major < 6 || (major == 6 && minor < 7))
        add(out, "kernel", CheckStatus::ok,
            fmt::format("Linux {} (>= 5.19; before 6.7 a reset through a fixed-file socket reaches the peer as a "
                        "close)",
                        u.release));
    else
        add(out, "kernel", CheckStatus::ok, fmt::format("Linux {} (>= 5.19)", u.release));

    if (access("/sys/kernel/btf/vmlinux", R_OK) == 0)
        add(out, "btf", CheckStatus::ok, "/sys/kernel/btf/vmlinux is there (CO-RE relocations work)");
    else
        add(out, "btf", CheckStatus::fail, "no /sys/kernel/btf/vmlinux: the BPF programs cannot be relocated",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every Debian kernel since 11 is)");
}

void check_privileges(Checks& out, const Caps& c)
{
    std::string have;
    for (auto [on, name] : {std::pair{c.sys_admin, "CAP_SYS_ADMIN"}, {c.bpf, "CAP_BPF"}, {c.net_admin, "CAP_NET_ADMIN"},
                            {c.perfmon, "CAP_PERFMON"}, {c.sys_resource, "CAP_SYS_RESOURCE"}})
        if (on)
            have += have.empty() ? name : fmt::format(" {}", name);
    if (have.empty())
        have = "none of them";
    if (!c.can_load() || !c.net_admin)
        add(out, "privileges", CheckStatus::fail,
            fmt::format("effective capabilities: {}; loading and attaching the hooks needs CAP_BPF CAP_NET_ADMIN "
                        "CAP_PERFMON (or CAP_SYS_ADMIN + CAP_NET_ADMIN)",
                        have),
            "run as root (sudo), or grant CAP_BPF CAP_NET_ADMIN CAP_PERFMON (systemd: AmbientCapabilities=)");
    else
        add(out, "privileges", CheckStatus::ok, fmt::format("effective capabilities: {}", have));
}

void check_cgroups(Checks& out, const Options& o, std::string& mount_out, std::string& app_out)
{
    auto mount = find_cgroup2_mount(read_text_file("/proc/self/mounts"));
    if (!mount) {
        add(out, "cgroup2", CheckStatus::fail, "no cgroup2 filesystem is mounted",
            "mount -t cgroup2 none /sys/fs/cgroup (or /sys/fs/cgroup/unified on a hybrid host)");
        return;
    }
    mount_out = *mount;
    add(out, "cgroup2", CheckStatus::ok,
        fmt::format("mounted at {}{}", *mount,
                    *mount == "/sys/fs/cgroup/unified" ? " (hybrid hierarchy: v1 controllers beside it)" : ""));
    if (o.cgroup.empty())
        return;
    std::string path = resolve_cgroup_path(*mount, o.cgroup);
    try {
        open_cgroup2_dir(path);
        app_out = path;
        add(out, "cgroup", CheckStatus::ok, fmt::format("{} is a cgroup2 directory", path));
    } catch (const Error& e) {
        add(out, "cgroup", CheckStatus::fail, e.what(),
            fmt::format("create it (mkdir {}) or start the slice or unit that owns it", path));
    }
}

struct HookProbe {
    const char* name;
    uint32_t prog_type, attach_type;
};

void check_bpf_features(Checks& out, const Caps& caps)
{
    if (!caps.can_load()) {
        add(out, "bpf-hooks", CheckStatus::skip, "not probed: loading programs needs the privileges above",
            "run ktproxy doctor as root");
        return;
    }
    const HookProbe hooks[] = {
        {"cgroup/connect4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT},
        {"cgroup/connect6", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_CONNECT},
        {"cgroup/getpeername4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_GETPEERNAME},
        {"cgroup/getpeername6", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_GETPEERNAME},
        {"sockops", BPF_PROG_TYPE_SOCK_OPS, 0},
        {"cgroup/getsockopt", BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_CGROUP_GETSOCKOPT},
    };
    std::string missing;
    for (const auto& h : hooks)
        if (std::string why = probe::load_tiny(h.prog_type, h.attach_type); !why.empty())
            missing += fmt::format("{}{} ({})", missing.empty() ? "" : ", ", h.name, why);
    if (missing.empty())
        add(out, "bpf-hooks", CheckStatus::ok,
            "connect4/6, getpeername4/6, sockops and getsockopt programs load");
    else
        add(out, "bpf-hooks", CheckStatus::fail, "the kernel refuses: " + missing,
            "boot a kernel >= 5.19 with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF");

    struct HelperProbe {
        const char* name;
        uint32_t prog_type, attach_type;
        int id;
    };
    const HelperProbe helpers[] = {
        {"bpf_sk_storage_get (connect4)", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT,
         BPF_FUNC_sk_storage_get},
        {"bpf_get_netns_cookie (connect4)", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT,
         BPF_FUNC_get_netns_cookie},
        {"bpf_set_retval (connect4)", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT,
         BPF_FUNC_set_retval},
        {"bpf_sk_lookup_tcp (connect4)", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT,
         BPF_FUNC_sk_lookup_tcp},
        {"bpf_sk_storage_get (sockops)", BPF_PROG_TYPE_SOCK_OPS, 0, BPF_FUNC_sk_storage_get},
        {"bpf_get_netns_cookie (getsockopt)", BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_CGROUP_GETSOCKOPT,
         BPF_FUNC_get_netns_cookie},
    };
    std::string no_helper;
    for (const auto& h : helpers)
        if (probe::has_helper(h.prog_type, h.attach_type, h.id) == std::optional<bool>(false))
            no_helper += fmt::format("{}{}", no_helper.empty() ? "" : ", ", h.name);
    if (no_helper.empty())
        add(out, "bpf-helpers", CheckStatus::ok,
            "sk_storage, netns cookie, set_retval and sk_lookup are available to the hooks");
    else
        add(out, "bpf-helpers", CheckStatus::fail, "missing: " + no_helper, "boot a kernel >= 5.19");

    if (std::string why = probe::cgroup_link(); why.empty())
        add(out, "bpf-link", CheckStatus::ok, "cgroup programs can be attached through bpf_link");
    else
        add(out, "bpf-link", CheckStatus::fail, why, "boot a kernel >= 5.7 (cgroup bpf_link)");

    // The real thing: ktproxy's own programs through the verifier, never attached.
    try {
        HookConfig hc;
        hc.listen4 = *SockAddr::parse_ip("127.0.0.1", 1);
        hc.listen6 = SockAddr::parse_ip("::1", 1);
        hc.mark = 0x6b74;
        hc.max_conns = 1024;
        SockHooks hooks(hc);
        add(out, "bpf-load", CheckStatus::ok, "ktproxy's socket hooks pass the verifier");
    } catch (const Error& e) {
        add(out, "bpf-load", CheckStatus::fail, e.what(),
            "see `ktproxy --log-level trace` for the verifier's log; boot a kernel >= 5.19 with BTF");
    }
}

void check_io_uring(Checks& out)
{
    std::string sysctl = trim(read_text_file("/proc/sys/kernel/io_uring_disabled"));
    const std::string setting = sysctl.empty() ? "" : fmt::format(" (kernel.io_uring_disabled = {})", sysctl);
    io_uring ring{};
    io_uring_params p{};
    int err = io_uring_queue_init_params(8, &ring, &p);
    if (err < 0) {
        add(out, "io-uring", CheckStatus::fail, fmt::format("io_uring_setup: {}{}", errno_text(-err), setting),
            sysctl.empty() || sysctl == "0"
                ? "boot a kernel >= 5.19 built with CONFIG_IO_URING"
                : "sysctl -w kernel.io_uring_disabled=0 (and drop it from /etc/sysctl.d), or set "
                  "kernel.io_uring_group to a group ktproxy runs in when it is 1");
        add(out, "buffer-rings", CheckStatus::skip, "not probed: no io_uring", "fix io_uring first");
        return;
    }
    std::string missing_ops;
    if (io_uring_probe* pr = io_uring_get_probe_ring(&ring)) {
        for (auto [op, name] : {std::pair{IORING_OP_ACCEPT, "accept"}, {IORING_OP_CONNECT, "connect"},
                                {IORING_OP_RECV, "recv"}, {IORING_OP_SEND, "send"}, {IORING_OP_POLL_ADD, "poll"},
                                {IORING_OP_LINK_TIMEOUT, "link_timeout"}, {IORING_OP_SHUTDOWN, "shutdown"},
                                {IORING_OP_ASYNC_CANCEL, "cancel"}})
            if (!io_uring_opcode_supported(pr, op))
                missing_ops += fmt::format(" {}", name);
        io_uring_free_probe(pr);
    }
    if (missing_ops.empty())
        add(out, "io-uring", CheckStatus::ok, "enabled, with every operation the relay uses" + setting);
    else
        add(out, "io-uring", CheckStatus::fail, "io_uring lacks:" + missing_ops, "boot a kernel >= 5.19");

    // Provided-buffer ring: the relay's buffers path and every connection
    // past the fd threshold need it.
    const uint32_t entries = 8;
    size_t bytes = entries * sizeof(io_uring_buf);
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    int rc = -ENOMEM;
    if (mem != MAP_FAILED) {
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<uint64_t>(mem);
        reg.ring_entries = entries;
        reg.bgid = 0;
        rc = io_uring_register_buf_ring(&ring, &reg, 0);
        if (rc == 0)
            io_uring_unregister_buf_ring(&ring, 0);
        munmap(mem, bytes);
    }
    int files = io_uring_register_files_sparse(&ring, 8);
    if (rc == 0 && files == 0)
        add(out, "buffer-rings", CheckStatus::ok, "provided-buffer rings and sparse fixed-file tables work");
    else
        add(out, "buffer-rings", CheckStatus::fail,
            fmt::format("register a provided-buffer ring: {}; sparse file table: {}", rc ? errno_text(-rc) : "ok",
                        files ? errno_text(-files) : "ok"),
            "boot a kernel >= 5.19");
    io_uring_queue_exit(&ring);
}

void check_netns_cookie(Checks& out)
{
    UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (s && getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) == 0)
        add(out, "netns-cookie", CheckStatus::ok, fmt::format("SO_NETNS_COOKIE works (this netns: {})", cookie));
    else
        add(out, "netns-cookie", CheckStatus::fail, "getsockopt(SO_NETNS_COOKIE): " + errno_text(errno),
            "boot a kernel >= 5.14");
}

void check_bpffs(Checks& out, const Options& o)
{
    struct statfs st {};
    const bool mounted = statfs(kBpffs, &st) == 0 && st.f_type == BPF_FS_MAGIC;
    if (!mounted) {
        std::string verdict =
            fmt::format("{} is not a bpffs{}", kBpffs,
                        o.fail_closed ? ": --fail-closed would mount a new, empty one (pins of an earlier instance "
                                        "in another mount are neither taken over nor cleaned up)"
                                      : " (only --fail-closed needs it)");
        add(out, "bpffs", o.fail_closed ? CheckStatus::fail : CheckStatus::warn, verdict,
            "mount -t bpf bpffs /sys/fs/bpf (systemd mounts it at boot; in a container, bind it in)");
        return;
    }
    // Pin directories whose owner is gone: hooks that refuse the cgroup's
    // connects until someone runs cleanup.
    std::string stale;
    DIR* d = opendir(kPinRoot);
    if (!d && errno == EACCES) {
        add(out, "bpffs", CheckStatus::ok,
            fmt::format("mounted at {} (leftover pins not checked: {} is not readable without root)", kBpffs,
                        kPinRoot));
        return;
    }
    if (d) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n == "." || n == ".." || e->d_type != DT_DIR)
                continue;
            if (!live_ktproxy_in(fmt::format("{}/{}.pin-owner", kRunDir, n)))
                stale += fmt::format(" {}", n);
        }
        closedir(d);
    }
    if (stale.empty())
        add(out, "bpffs", CheckStatus::ok, fmt::format("mounted at {}, no leftover pins", kBpffs));
    else
        add(out, "bpffs", CheckStatus::warn,
            fmt::format("pins of a dead --fail-closed ktproxy in {}:{} (their cgroups' connects are refused)",
                        kPinRoot, stale),
            "restart that instance (it takes the pins over) or run `ktproxy cleanup`");
}

void check_rlimit(Checks& out, const Options& o, const Caps& caps)
{
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t nr_open = 1u << 20;
    if (std::ifstream f("/proc/sys/fs/nr_open"); f)
        f >> nr_open;
    const rlim_t want = std::min<rlim_t>(1u << 20, nr_open);
    // What raise_fd_limit() will reach at startup.
    const rlim_t reach = caps.sys_resource || rl.rlim_max >= want ? want : rl.rlim_max;
    const uint64_t need = 2ull * o.max_conns + 64;
    if (reach >= need)
        add(out, "open-files", CheckStatus::ok,
            fmt::format("RLIMIT_NOFILE can reach {} (soft {}, hard {}): >= 2 x --max-conns {}", reach, rl.rlim_cur,
                        rl.rlim_max, o.max_conns));
    else
        add(out, "open-files", CheckStatus::warn,
            fmt::format("RLIMIT_NOFILE reaches only {} (hard limit {}{}), under 2 x --max-conns {}: connections past "
                        "{} relay through fixed files and ring buffers, not splice",
                        reach, rl.rlim_max, caps.sys_resource ? "" : ", no CAP_SYS_RESOURCE to raise it",
                        o.max_conns, reach / 2),
            "raise the hard limit (systemd: LimitNOFILE=1048576; shell: ulimit -Hn) or lower --max-conns");
}

const char* attach_flag_text(uint32_t flags)
{
    if (flags & BPF_F_ALLOW_MULTI)
        return "BPF_F_ALLOW_MULTI";
    if (flags & BPF_F_ALLOW_OVERRIDE)
        return "BPF_F_ALLOW_OVERRIDE";
    return "exclusive (no flag)";
}

// Other programs on the hooks ktproxy attaches to: on the app cgroup and its
// ancestors (inherited), and on ktproxy's own cgroup (getsockopt, sockops).
void check_cgroup_hooks(Checks& out, const std::string& mount, const std::string& app, const Caps& caps,
                        int& ktproxy_progs_on_app)
{
    if (app.empty())
        return;
    if (!caps.net_admin && !caps.sys_admin) {
        add(out, "cgroup-hooks", CheckStatus::skip, "not queried: BPF_PROG_QUERY needs CAP_NET_ADMIN",
            "run ktproxy doctor as root");
        return;
    }
    struct Hook {
        const char* name;
        uint32_t type;
    };
    const Hook app_hooks[] = {{"connect4", BPF_CGROUP_INET4_CONNECT},         {"connect6", BPF_CGROUP_INET6_CONNECT},
                              {"sockops", BPF_CGROUP_SOCK_OPS},               {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME},
                              {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME}, {"getsockopt", BPF_CGROUP_GETSOCKOPT}};
    CheckStatus worst = CheckStatus::ok;
    std::string found, fix;
    try {
        // The app cgroup, then each ancestor up to the mount: an ancestor's
        // exclusive program forbids attaching below it; a multi one runs too.
        for (std::string dir = app;;) {
            const bool self = dir == app;
            for (const auto& h : app_hooks) {
                if (!self && h.type == BPF_CGROUP_GETSOCKOPT)
                    continue;
                for (const auto& p : probe::cgroup_progs(dir, h.type)) {
                    if (p.name.rfind("ktp_", 0) == 0) {
                        // Only the connect hooks say "an instance for this
                        // cgroup": sockops and getsockopt also sit on the
                        // cgroups ktproxy itself runs in.
                        if (self && (h.type == BPF_CGROUP_INET4_CONNECT || h.type == BPF_CGROUP_INET6_CONNECT))
                            ++ktproxy_progs_on_app;
                        continue;
                    }
                    CheckStatus s = CheckStatus::warn;
                    std::string effect = "runs beside ktproxy's";
                    if (!(p.attach_flags & BPF_F_ALLOW_MULTI)) {
                        if (self || !(p.attach_flags & BPF_F_ALLOW_OVERRIDE)) {
                            s = CheckStatus::fail;
                            effect = "ktproxy's attach would be refused (EPERM)";
                            fix = "detach it (bpftool cgroup detach ...) or have its owner attach with "
                                  "BPF_F_ALLOW_MULTI";
                        } else {
                            effect = "ktproxy's programs would override it for this cgroup";
                        }
                    }
                    if (s == CheckStatus::fail || worst == CheckStatus::ok)
                        worst = s;
                    found += fmt::format("{}{}id {} '{}' on {} of {} ({}: {})", found.empty() ? "" : "; ",
                                         self ? "" : "inherited ", p.id, p.name, h.name, dir,
                                         attach_flag_text(p.attach_flags), effect);
                }
            }
            if (dir.size() <= mount.size())
                break;
            dir = dir.substr(0, dir.rfind('/'));
            if (dir.size() < mount.size())
                break;
        }
    } catch (const Error& e) {
        add(out, "cgroup-hooks", CheckStatus::warn, e.what(), "run ktproxy doctor as root");
        return;
    }
    if (found.empty())
        add(out, "cgroup-hooks", CheckStatus::ok,
            fmt::format("no other BPF program on {}'s connect/sockops/getpeername/getsockopt hooks or above", app));
    else
        add(out, "cgroup-hooks", worst, "foreign programs: " + found,
            fix.empty() ? "check that they do not rewrite connects or consume sockops of the same sockets" : fix);
}

void check_instance(Checks& out, const Options& o, const std::string& mount, const std::string& app,
                    int ktproxy_progs_on_app)
{
    if (!app.empty()) {
        const std::string name = instance_name(mount, app);
        const std::string sock = fmt::format("{}/{}.sock", kRunDir, name);
        bool answers = false;
        if (access(sock.c_str(), F_OK) == 0) {
            try {
                query_control(sock, "ping");
                answers = true;
            } catch (const Error&) {
            }
        }
        // The instance lock says it for sure; the pin-owner file of older
        // versions for those.
        int pin_owner = 0;
        try {
            if (!InstanceLock::try_acquire(bpffs_name(name), &pin_owner) &&
                access(InstanceLock::path_of(bpffs_name(name)).c_str(), F_OK) == 0 && pin_owner == 0)
                pin_owner = -1;
        } catch (const Error&) {
            // Unreadable lock: the other signs below still tell.
        }
        if (!pin_owner)
            pin_owner = live_ktproxy_in(fmt::format("{}/{}.pin-owner", kRunDir, name));
        if (answers || pin_owner)
            add(out, "instance", CheckStatus::fail,
                fmt::format("a ktproxy already runs on {}{}", app,
                            answers ? fmt::format(" (its control socket {} answers)", sock)
                                    : pin_owner > 0 ? fmt::format(" (pid {} holds its lock)", pin_owner)
                                                    : std::string(" (its lock is held)")),
                "stop it first (systemctl stop ktproxy@NAME, or kill -TERM its pid), or use `ktproxy status`");
        else if (ktproxy_progs_on_app > 0)
            add(out, "instance", CheckStatus::warn,
                fmt::format("{} ktproxy program(s) are attached to {} but no instance answers: leftovers of a "
                            "--fail-closed ktproxy, refusing the cgroup's connects",
                            ktproxy_progs_on_app, app),
                "start ktproxy --fail-closed on it again (takes them over) or run `ktproxy cleanup`");
        else
            add(out, "instance", CheckStatus::ok, fmt::format("no ktproxy runs on {}", app));
    }
    if (!o.gateway_ifaces.empty()) {
        if (int pid = live_ktproxy_in(fmt::format("{}/gateway.state", kRunDir)))
            add(out, "gateway-instance", CheckStatus::fail,
                fmt::format("a ktproxy gateway already runs (pid {}); one gateway per host", pid),
                "stop it first, or add the interfaces to its --gateway-iface list");
        else
            add(out, "gateway-instance", CheckStatus::ok, "no ktproxy gateway runs");
    }
}

bool rule_catches(const probe::IpRule& r, uint32_t mark) { return r.has_fwmark && (mark & r.fwmask) == r.fwmark; }

void check_ip_rules(Checks& out, const Options& o)
{
    std::vector<probe::IpRule> rules;
    try {
        for (int fam : {AF_INET, AF_INET6}) {
            auto v = probe::ip_rules(fam);
            rules.insert(rules.end(), v.begin(), v.end());
        }
    } catch (const Error& e) {
        add(out, "ip-rules", CheckStatus::warn, e.what(), "check `ip rule` by hand");
        return;
    }
    const bool gateway = !o.gateway_ifaces.empty();
    const bool gateway_alive = live_ktproxy_in(fmt::format("{}/gateway.state", kRunDir)) != 0;
    CheckStatus worst = CheckStatus::ok;
    std::string found, fix;
    auto note = [&](CheckStatus s, std::string what, std::string how) {
        if (s == CheckStatus::fail || worst == CheckStatus::ok)
            worst = s;
        found += (found.empty() ? "" : "; ") + what;
        if (fix.empty() || s == CheckStatus::fail)
            fix = std::move(how);
    };
    for (const auto& r : rules) {
        const char* fam = r.family == AF_INET6 ? "-6 " : "";
        const std::string desc =
            fmt::format("ip {}rule pref {} fwmark {:#x}/{:#x} table {}", fam, r.priority, r.fwmark, r.fwmask, r.table);
        // ktproxy's own gateway rule (PolicyRoute): mark, table and pref 9000.
        const bool ours = rule_catches(r, o.gateway_mark) && r.fwmark == o.gateway_mark && r.table == o.gateway_table &&
                          r.priority == 9000;
        if (ours) {
            if (!gateway_alive)
                note(CheckStatus::warn, desc + " is a leftover of a killed ktproxy gateway",
                     "ktproxy cleanup (removes it and the table)");
            continue;
        }
        if (rule_catches(r, o.mark))
            note(CheckStatus::warn,
                 fmt::format("{} catches ktproxy's outgoing sockets (--mark {:#x}): they are routed by table {}", desc,
                             o.mark, r.table),
                 "if that is not meant, pick another --mark (a bit nobody else uses) or change the rule");
        if (rule_catches(r, o.gateway_mark) && (r.priority < 9000 || gateway))
            note(gateway && r.priority <= 9000 ? CheckStatus::fail : CheckStatus::warn,
                 fmt::format("{} catches the gateway's mark {:#x}{}", desc, o.gateway_mark,
                             r.priority <= 9000 ? " before ktproxy's rule (pref 9000)" : ""),
                 "pick another --gateway-mark, or remove the rule");
        else if (r.table == o.gateway_table && (r.table != 0))
            note(gateway ? CheckStatus::fail : CheckStatus::warn,
                 fmt::format("{} uses ktproxy's --gateway-table {} (ktproxy flushes that table)", desc, o.gateway_table),
                 "pick another --gateway-table");
    }
    if (found.empty())
        add(out, "ip-rules", CheckStatus::ok,
            fmt::format("no ip rule uses --mark {:#x}, --gateway-mark {:#x} or table {}", o.mark, o.gateway_mark,
                        o.gateway_table));
    else
        add(out, "ip-rules", worst, found, fix);
}

// nftables and iptables rules that match or set ktproxy's marks. Both tools
// read the network namespace doctor runs in. iptables-nft's tables are read
// through iptables-save only: nft shows their targets as opaque "xt".
void check_netfilter(Checks& out, const Options& o)
{
    const std::vector<MarkUse> marks = {{o.mark, "--mark"}, {o.gateway_mark, "--gateway-mark"}};
    std::vector<NetfilterHit> hits;
    std::vector<std::string> read, unreadable;
    std::set<std::string> iptables_nft_tables;
    bool too_long = false;
    for (const auto& [tool, family] : {std::pair<const char*, const char*>{"iptables-save", "ip"},
                                       std::pair<const char*, const char*>{"ip6tables-save", "ip6"}}) {
        probe::ToolRun r = probe::run_tool({tool});
        if (!r.found)
            continue;
        if (r.status != 0) {
            unreadable.push_back(fmt::format("{}: {}", tool, r.err.empty() ? "failed" : r.err));
            continue;
        }
        IptablesScan scan = scan_iptables_save(r.out, family, marks);
        if (scan.nf_tables)
            iptables_nft_tables.insert(scan.tables.begin(), scan.tables.end());
        hits.insert(hits.end(), scan.hits.begin(), scan.hits.end());
        // Rules past the cut went unseen: no all-clear from part of them.
        too_long |= r.truncated;
        if (r.truncated)
            unreadable.push_back(fmt::format("{}: output over 16 MiB, only its start was read", tool));
        else
            read.push_back(tool);
    }
    if (probe::ToolRun r = probe::run_tool({"nft", "-j", "list", "ruleset"}); r.found) {
        NftScan scan = r.status == 0 ? scan_nft_json(r.out, marks, iptables_nft_tables) : NftScan{};
        too_long |= r.truncated;
        if (r.status != 0)
            unreadable.push_back(fmt::format("nft: {}", r.err.empty() ? "failed" : r.err));
        else if (r.truncated)
            unreadable.push_back("nft -j list ruleset: output over 16 MiB, not read");
        else if (!scan.error.empty())
            unreadable.push_back(fmt::format("nft -j list ruleset: not nft's JSON ({})", scan.error));
        else
            read.push_back("nft");
        hits.insert(hits.end(), scan.hits.begin(), scan.hits.end());
    }
    if (read.empty() && unreadable.empty()) {
        add(out, "netfilter", CheckStatus::skip, "no nft, iptables-save or ip6tables-save on this host: rules not read",
            "install nftables (nft) to have them checked");
        return;
    }
    if (!hits.empty()) {
        std::string found;
        for (const auto& h : hits)
            found += fmt::format("{}{} {}", found.empty() ? "" : "; ", h.rule, h.what);
        add(out, "netfilter", CheckStatus::warn,
            fmt::format("{} rule{} use{} ktproxy's marks: {}", hits.size(), hits.size() == 1 ? "" : "s",
                        hits.size() == 1 ? "s" : "", found),
            "a rule matching --mark acts on ktproxy's own connections, one setting --gateway-mark sends packets to "
            "ktproxy's table: pick another --mark/--gateway-mark, or change the rule (nft -a list ruleset, "
            "iptables-save)");
        return;
    }
    if (!unreadable.empty()) {
        add(out, "netfilter", CheckStatus::warn, fmt::format("cannot read the rules: {}", fmt::join(unreadable, "; ")),
            too_long ? "look for the marks by hand (nft -a list ruleset, iptables-save)" : "run ktproxy doctor as root");
        return;
    }
    add(out, "netfilter", CheckStatus::ok,
        fmt::format("no nftables or iptables rule uses --mark {:#x} or --gateway-mark {:#x} (read: {})", o.mark,
                    o.gateway_mark, fmt::join(read, ", ")));
}

void check_gateway(Checks& out, const Options& o, const Caps& caps)
{
    const bool asked = !o.gateway_ifaces.empty();
    // Features first: without --gateway-iface a missing one is only a warning.
    const CheckStatus missing = asked ? CheckStatus::fail : CheckStatus::warn;
    if (!caps.can_load() || !caps.net_admin) {
        if (asked)
            add(out, "gateway", CheckStatus::skip, "not probed: needs the privileges above", "run ktproxy doctor as root");
        return;
    }
    std::string why;
    if (probe::has_helper(BPF_PROG_TYPE_SCHED_CLS, 0, BPF_FUNC_sk_assign) == std::optional<bool>(false))
        why = "no bpf_sk_assign for TC programs (Linux >= 5.7)";
    else if (tc_gateway* skel = tc_gateway__open()) {
        int err = tc_gateway__load(skel);
        tc_gateway__destroy(skel);
        if (err)
            why = "the gateway's TC program does not load: " + errno_text(-err);
    }
    if (why.empty())
        why = probe::clsact_in_scratch_netns();
    if (!why.empty()) {
        add(out, "gateway", missing, why, "boot a kernel >= 5.19 with CONFIG_NET_SCH_INGRESS (clsact) and BTF");
        return;
    }
    add(out, "gateway", CheckStatus::ok, "bpf_sk_assign, clsact and the gateway's TC program work");
    if (!asked)
        return;
    if (trim(read_text_file("/proc/sys/net/ipv4/ip_forward")) != "1")
        add(out, "ip-forwarding", CheckStatus::warn,
            "net.ipv4.ip_forward is 0: traffic the gateway does not proxy is not forwarded",
            "sysctl -w net.ipv4.ip_forward=1");
    const bool gateway_alive = live_ktproxy_in(fmt::format("{}/gateway.state", kRunDir)) != 0;
    for (const std::string& ifname : o.gateway_ifaces) {
        const std::string check = "tc:" + ifname;
        int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
        if (ifindex == 0) {
            add(out, check, CheckStatus::fail, fmt::format("no interface {} in this network namespace", ifname),
                "check the name (ip link), or run in the namespace that has it");
            continue;
        }
        std::vector<probe::TcFilter> filters;
        try {
            filters = probe::tc_ingress_filters(ifindex);
        } catch (const Error& e) {
            add(out, check, CheckStatus::warn, e.what(), "check `tc filter show dev IF ingress` by hand");
            continue;
        }
        std::string found;
        CheckStatus s = CheckStatus::ok;
        for (const auto& f : filters) {
            if (f.handle == 0x6b74 && f.priority == 0x6b74) {
                if (!gateway_alive) {
                    s = CheckStatus::warn;
                    found += fmt::format("{}ktproxy's filter left by a killed gateway", found.empty() ? "" : "; ");
                }
                continue;
            }
            s = CheckStatus::warn;
            found += fmt::format("{}{} filter pref {} handle {:#x}{}{}", found.empty() ? "" : "; ", f.kind, f.priority,
                                 f.handle, f.bpf_name.empty() ? "" : " " + f.bpf_name,
                                 f.priority < 0x6b74 ? " (runs before ktproxy's: a verdict there bypasses it)"
                                                     : " (runs after ktproxy's)");
        }
        if (found.empty())
            add(out, check, CheckStatus::ok, fmt::format("no other filter on {}'s clsact ingress", ifname));
        else
            add(out, check, s, fmt::format("{} ingress: {}", ifname, found),
                "make sure the other filters pass TCP on (TC_ACT_UNSPEC) or run after pref 27508; `ktproxy cleanup` "
                "removes ktproxy's leftovers");
    }
}

}  // namespace

int run_doctor(const Options& o)
{
    // libbpf's own warnings would interleave with the report.
    libbpf_set_print(nullptr);
    Checks checks;
    const Caps caps = read_caps();
    check_kernel(checks);
    check_privileges(checks, caps);
    std::string mount, app;
    check_cgroups(checks, o, mount, app);
    check_bpf_features(checks, caps);
    check_io_uring(checks);
    check_netns_cookie(checks);
    check_bpffs(checks, o);
    check_rlimit(checks, o, caps);
    int ktproxy_progs = 0;
    check_cgroup_hooks(checks, mount, app, caps, ktproxy_progs);
    check_instance(checks, o, mount, app, ktproxy_progs);
    check_ip_rules(checks, o);
    check_netfilter(checks, o);
    check_gateway(checks, o, caps);
    std::string report = o.doctor_json ? render_doctor_json(checks) : render_doctor_text(checks);
    std::fputs(report.c_str(), stdout);
    return doctor_exit_code(checks);
}

}  // namespace ktp
