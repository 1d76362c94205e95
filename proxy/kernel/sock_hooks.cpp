// Loading and attaching the socket hooks through the libbpf skeleton.
#include "kernel/sock_hooks.h"

#include "kernel/bpf_abi.h"
#include "base/error.h"
#include "base/log.h"
#include "base/unique_fd.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstring>
#include <vector>

#include "sock_redirect.skel.h"

namespace ktp {
namespace {

int libbpf_to_log(enum libbpf_print_level level, const char* format, va_list args)
{
    // libbpf's verifier dumps are long; only show them when asked for.
    if (level == LIBBPF_DEBUG && !log::enabled(log::Level::trace))
        return 0;
    if (!log::enabled(log::Level::debug))
        return 0;
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), format, args);
    std::string_view s(buf, n > 0 ? std::min<size_t>(n, sizeof(buf) - 1) : 0);
    while (!s.empty() && s.back() == '\n')
        s.remove_suffix(1);
    log::write(log::Level::debug, fmt::format("libbpf: {}", s));
    return 0;
}

uint64_t count_entries(int map_fd, size_t key_size)
{
    std::vector<unsigned char> key(key_size), next(key_size);
    uint64_t n = 0;
    void* prev = nullptr;
    while (bpf_map_get_next_key(map_fd, prev, next.data()) == 0) {
        ++n;
        key.swap(next);
        prev = key.data();
        if (n > (1u << 26))
            break;  // a map cannot be that big; guard against an endless walk
    }
    return n;
}

// The cgroup a cgroup link is attached to (its id), 0 once the kernel has
// detached it because that cgroup is gone.
uint64_t link_cgroup_id(int link_fd)
{
    bpf_link_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0)
        return 0;
    return info.cgroup.cgroup_id;
}

// libbpf reuses a pinned map only if it matches the one it would create,
// and otherwise fails the whole load with a bare EINVAL. Tested here first,
// so that a restart with another --max-conns (or after an upgrade that
// changed a map) loads a fresh map instead. Empty: reusable, or none pinned.
std::string pinned_map_mismatch(const std::string& pin, const bpf_map* m)
{
    int fd = bpf_obj_get(pin.c_str());
    if (fd < 0)
        return {};
    bpf_map_info info{};
    __u32 len = sizeof(info);
    int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
    int err = errno;
    ::close(fd);
    if (rc != 0)
        return fmt::format("cannot read it: {}", errno_text(err));
    if (info.type != static_cast<__u32>(bpf_map__type(m)))
        return fmt::format("map type {} instead of {}", info.type, static_cast<int>(bpf_map__type(m)));
    if (info.key_size != bpf_map__key_size(m) || info.value_size != bpf_map__value_size(m))
        return fmt::format("key/value size {}/{} instead of {}/{}", info.key_size, info.value_size,
                           bpf_map__key_size(m), bpf_map__value_size(m));
    if (info.max_entries != bpf_map__max_entries(m))
        return fmt::format("{} entries instead of {}", info.max_entries, bpf_map__max_entries(m));
    if (info.map_flags != bpf_map__map_flags(m))
        return fmt::format("flags {:#x} instead of {:#x}", info.map_flags, bpf_map__map_flags(m));
    return {};
}

// Pins an object at `path` in place of whatever is pinned there, in one
// step (bpffs renames over an existing pin): no moment without a pin, in
// which a crash would leave the new link held by nothing but our fd.
template <typename PinFn>
void pin_over(const std::string& path, const char* what, PinFn pin)
{
    const std::string tmp = path + "_replacing";  // bpffs refuses names with dots
    ::unlink(tmp.c_str());
    if (int err = pin(tmp.c_str()); err)
        fail("--fail-closed: pin {} at {}: {}", what, tmp, errno_text(-err));
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        fail("--fail-closed: pin {} at {}: {}", what, path, errno_text(err));
    }
}

}  // namespace

uint64_t cgroup_id_of(int cgroup_fd)
{
    // A cgroup2 directory's inode number is the cgroup id (kernfs node id).
    struct stat st {};
    return fstat(cgroup_fd, &st) == 0 ? st.st_ino : 0;
}

SockHooks::SockHooks(const HookConfig& cfg)
{
    libbpf_set_print(libbpf_to_log);
    skel_ = sock_redirect__open();
    if (!skel_)
        fail_errno("open BPF object sock_redirect");

    uint32_t ip4[4];
    cfg.listen4.to_mapped(ip4);
    skel_->rodata->ktp_proxy_ip4 = ip4[3];
    skel_->rodata->ktp_proxy_port = htons(cfg.listen4.port());
    if (cfg.listen6) {
        uint32_t ip6[4];
        cfg.listen6->to_mapped(ip6);
        for (int i = 0; i < 4; ++i)
            skel_->rodata->ktp_proxy_ip6[i] = ip6[i];
        skel_->rodata->ktp_have_ip6 = 1;
    }
    skel_->rodata->ktp_mark = cfg.mark;
    skel_->rodata->ktp_netns_cookie = cfg.netns_cookie;
    skel_->rodata->ktp_netns_refuse = cfg.netns_refuse ? 1 : 0;
    // rodata, not a map: a restart that takes over pinned links swaps its
    // own programs (with its own cgroup) into them.
    skel_->rodata->ktp_own_cgroup = cfg.own_cgroup;
    skel_->rodata->ktp_relay_tgid = cfg.relay_tgid;
    skel_->rodata->ktp_bound_refuse = cfg.netns_refuse ? 1 : 0;
    skel_->rodata->ktp_cgroup_filter = cfg.cgroup_filter ? 1 : 0;

    bpf_map__set_max_entries(skel_->maps.ktp_handoff, cfg.max_conns);
    skel_->rodata->ktp_udp_port = htons(cfg.udp_port);
    bpf_map__set_max_entries(skel_->maps.ktp_udp_flows, cfg.max_conns);
    bpf_map__set_max_entries(skel_->maps.ktp_udp_socks, cfg.max_conns);
    bpf_map__set_max_entries(skel_->maps.ktp_udp_conn6, cfg.max_conns);

    pin_dir_ = cfg.pin_dir;
    if (!pin_dir_.empty()) {
        if (mkdir(pin_dir_.c_str(), 0700) != 0 && errno != EEXIST)
            fail_errno("--fail-closed: create {}", pin_dir_);
        // libbpf reuses a compatible pinned map at load, or creates and pins it:
        // connection state survives a restart of ktproxy.
        // The rules are not pinned: each object has its own, so a restarted
        // instance never rewrites tries that the old programs still read
        // until their links are swapped.
        for (bpf_map* m : {skel_->maps.ktp_app_dst, skel_->maps.ktp_conn_dst, skel_->maps.ktp_handoff,
                           skel_->maps.ktp_counters, skel_->maps.ktp_udp_flows, skel_->maps.ktp_udp_socks,
                           skel_->maps.ktp_udp_conn6})
            pin_or_replace(m);
    }

    if (int err = sock_redirect__load(skel_); err) {
        sock_redirect__destroy(skel_);
        skel_ = nullptr;
        fail("load BPF programs (cgroup connect/sockops/getsockopt; needs Linux >= 5.19 with BTF{}): {}",
             pin_dir_.empty() ? "" : fmt::format("; maps pinned in {} reused", pin_dir_), errno_text(-err));
    }
}

void SockHooks::pin_or_replace(bpf_map* m)
{
    std::string pin = pin_dir_ + "/map_" + bpf_map__name(m);
    if (std::string why = pinned_map_mismatch(pin, m); !why.empty()) {
        // The pinned links still run the old programs, which hold the old
        // map: it stays in use until attach() has swapped the new programs
        // in, and only then is the pin replaced (replace_map_pins()).
        log::warn("--fail-closed: pinned map {} does not fit this instance ({}): using a fresh one, whose pin "
                  "replaces it once the pinned hooks run the new programs; its entries are not carried over",
                  pin, why);
        stale_map_pins_.push_back(m);
        return;
    }
    bpf_map__set_pin_path(m, pin.c_str());
}

void SockHooks::replace_map_pins()
{
    for (bpf_map* m : stale_map_pins_)
        pin_over(pin_dir_ + "/map_" + bpf_map__name(m), bpf_map__name(m),
                 [m](const char* p) { return bpf_map__pin(m, p); });
    stale_map_pins_.clear();
}

SockHooks::~SockHooks()
{
    detach();
    if (skel_)
        sock_redirect__destroy(skel_);
}

void SockHooks::attach_one(const char* what, bpf_program* prog, int cgroup_fd, const std::string& path,
                           const char* pin_suffix)
{
    Hook h{what, prog, cgroup_fd, nullptr, pin_suffix};
    if (!pin_dir_.empty()) {
        std::string pin = pin_dir_ + "/link_" + bpf_program__name(prog) + pin_suffix;
        if (access(pin.c_str(), F_OK) == 0) {
            bpf_link* old = bpf_link__open(pin.c_str());
            if (!old)
                fail_errno("--fail-closed: open pinned link {}", pin);
            const uint64_t want = cgroup_id_of(cgroup_fd), on = link_cgroup_id(bpf_link__fd(old));
            if (on == want) {
                // A previous instance died with --fail-closed: swap our
                // program into its link, so the hook never leaves the cgroup.
                if (bpf_link__update_program(old, prog) != 0) {
                    int err = errno;
                    bpf_link__destroy(old);
                    fail("--fail-closed: take over {} at {}: {}", what, pin, errno_text(err));
                }
                h.link = old;
                hooks_.push_back(h);
                took_over_ = true;
                return;
            }
            // The pinned link holds a cgroup that is gone (removed and
            // created again while no ktproxy ran, as `systemctl restart`
            // does) or, from before names were unambiguous, another one:
            // this cgroup has no hook. Attach one and pin it in its place.
            bpf_link__destroy(old);
            log::warn("--fail-closed: pinned {} was on cgroup id {}, not on {} (id {}): attaching anew", what,
                      on, path, want);
        }
        h.link = bpf_program__attach_cgroup(prog, cgroup_fd);
        if (!h.link)
            fail_errno("attach {} to cgroup {}", what, path);
        hooks_.push_back(h);
        bpf_link* link = h.link;
        pin_over(pin, what, [link](const char* p) { return bpf_link__pin(link, p); });
        return;
    }
    h.link = bpf_program__attach_cgroup(prog, cgroup_fd);
    if (!h.link)
        fail_errno("attach {} to cgroup {}", what, path);
    hooks_.push_back(h);
}

void SockHooks::reattach(int old_cgroup_fd, int new_cgroup_fd, const std::string& new_path)
{
    // New links first, then the pins move to them: the old links hold a
    // cgroup that is gone, so nothing that exists is ever without a hook.
    for (Hook& h : hooks_) {
        if (h.cgroup_fd != old_cgroup_fd)
            continue;
        bpf_link* fresh = bpf_program__attach_cgroup(h.prog, new_cgroup_fd);
        if (!fresh)
            fail_errno("attach {} to cgroup {}", h.what, new_path);
        if (!pin_dir_.empty()) {
            try {
                pin_over(pin_dir_ + "/link_" + bpf_program__name(h.prog) + h.pin_suffix, h.what,
                         [fresh](const char* p) { return bpf_link__pin(fresh, p); });
            } catch (const Error&) {
                bpf_link__destroy(fresh);
                throw;
            }
        }
        bpf_link__destroy(h.link);
        h.link = fresh;
        h.cgroup_fd = new_cgroup_fd;
    }
}

int SockHooks::unpin_all(const std::string& dir)
{
    DIR* d = opendir(dir.c_str());
    if (!d)
        return 0;
    int n = 0;
    while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..")
            continue;
        std::string p = dir + "/" + name;
        if (e->d_type == DT_DIR) {
            n += unpin_all(p);
            rmdir(p.c_str());
        } else if (unlink(p.c_str()) == 0) {
            ++n;
        }
    }
    closedir(d);
    return n;
}

void SockHooks::attach(int app_fd, const std::string& app_path, int own_fd, const std::string& own_path)
{
    // getsockopt first: once connects are redirected, the proxy must already
    // be able to ask for their destination.
    attach_one("cgroup/getsockopt", skel_->progs.ktp_getsockopt, own_fd, own_path);
    attach_one("cgroup/setsockopt", skel_->progs.ktp_relay_guard, own_fd, own_path);
    // ktproxy's accepted sockets are in its own cgroup (a child socket
    // inherits its listener's): sockops there moves each destination onto
    // the accepted socket. When ktproxy runs in the app cgroup itself, the
    // app's attachment already covers its sockets: no second run each.
    struct stat app_st {}, own_st {};
    const bool same = fstat(app_fd, &app_st) == 0 && fstat(own_fd, &own_st) == 0 &&
                      app_st.st_dev == own_st.st_dev && app_st.st_ino == own_st.st_ino;
    if (!same)
        attach_one("sockops", skel_->progs.ktp_sockops, own_fd, own_path, "_own");
    attach_one("sockops", skel_->progs.ktp_sockops, app_fd, app_path);
    attach_one("cgroup/connect4", skel_->progs.ktp_connect4, app_fd, app_path);
    attach_one("cgroup/connect6", skel_->progs.ktp_connect6, app_fd, app_path);
    attach_one("cgroup/getpeername4", skel_->progs.ktp_getpeername4, app_fd, app_path);
    attach_one("cgroup/getpeername6", skel_->progs.ktp_getpeername6, app_fd, app_path);
    // UDP (bpf/sock_udp.h): release first, so that no flow is recorded for
    // a socket whose release would not delete it.
    attach_one("cgroup/sock_release", skel_->progs.ktp_udp_release, app_fd, app_path);
    attach_one("cgroup/recvmsg4", skel_->progs.ktp_recvmsg4, app_fd, app_path);
    attach_one("cgroup/recvmsg6", skel_->progs.ktp_recvmsg6, app_fd, app_path);
    attach_one("cgroup/sendmsg4", skel_->progs.ktp_sendmsg4, app_fd, app_path);
    attach_one("cgroup/sendmsg6", skel_->progs.ktp_sendmsg6, app_fd, app_path);
    // Only now do the pinned links run programs that use the fresh maps.
    replace_map_pins();
}

void SockHooks::detach()
{
    // Stop redirecting before anything else goes away. A pinned link keeps
    // the program attached after its fd closes: that is --fail-closed.
    for (auto it = hooks_.rbegin(); it != hooks_.rend(); ++it)
        bpf_link__destroy(it->link);
    hooks_.clear();
}

void SockHooks::set_routes(const std::vector<CompiledRoute>& routes, uint32_t default_action)
{
    publish_routes(skel_, routes, default_action, "the socket hooks");
}

void SockHooks::set_dry_run(bool on)
{
    const uint32_t key = KTP_SWITCHES_KEY;
    ktp_switches sw{};
    sw.dry_run = on ? 1 : 0;
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.ktp_switches), &key, &sw, BPF_ANY) != 0)
        fail_errno("dry run {}: update BPF map ktp_switches", on ? "on" : "off");
}

bool SockHooks::dry_run() const
{
    const uint32_t key = KTP_SWITCHES_KEY;
    ktp_switches sw{};
    return bpf_map_lookup_elem(bpf_map__fd(skel_->maps.ktp_switches), &key, &sw) == 0 && sw.dry_run != 0;
}

int SockHooks::events_fd() const { return bpf_map__fd(skel_->maps.ktp_events); }

int SockHooks::dead_dst_fd() const { return bpf_map__fd(skel_->maps.ktp_dead_dst); }
int SockHooks::netns_listeners_fd() const { return bpf_map__fd(skel_->maps.ktp_netns_listeners); }
int SockHooks::netns_events_fd() const { return bpf_map__fd(skel_->maps.ktp_netns_events); }
int SockHooks::netns_pending_fd() const { return bpf_map__fd(skel_->maps.ktp_netns_pending); }
int SockHooks::cgroups_fd() const { return bpf_map__fd(skel_->maps.ktp_cgroups); }

void SockHooks::make_cgroups_read_only()
{
    const int fd = cgroups_fd();
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
        fail_errno("ktp_cgroups: map info");
    LIBBPF_OPTS(bpf_get_fd_by_id_opts, opts, .open_flags = BPF_F_RDONLY);
    UniqueFd ro(bpf_map_get_fd_by_id_opts(info.id, &opts));
    if (!ro)
        fail_errno("ktp_cgroups: a read-only fd");
    if (::dup3(ro.get(), fd, O_CLOEXEC) < 0)
        fail_errno("ktp_cgroups: dup3");
}

int SockHooks::udp_flows_fd() const { return bpf_map__fd(skel_->maps.ktp_udp_flows); }

int SockHooks::udp_conn6_fd() const { return bpf_map__fd(skel_->maps.ktp_udp_conn6); }

Counters SockHooks::counters() const { return read_counters(bpf_map__fd(skel_->maps.ktp_counters)); }

MapOccupancy SockHooks::occupancy() const
{
    return MapOccupancy{count_entries(bpf_map__fd(skel_->maps.ktp_handoff), sizeof(ktp_tuple)),
                        count_entries(bpf_map__fd(skel_->maps.ktp_udp_flows), sizeof(ktp_udp_key))};
}

std::string format_counters(const Counters& c, const MapOccupancy& m)
{
    return fmt::format(
        "counters redirected={} skipped_mark={} skipped_netns={} skipped_local={} "
        "orig_dst_answered={} orig_dst_missed={} map_full={} bypassed={} blocked={} gw_assigned={} gw_no_listener={} "
        "no_listener={} skipped_bound={} dry_run_redirect={} dry_run_block={} dry_run_pass={} dry_run_refuse={} "
        "dry_run_events_lost={} live_tuples={} udp_redirected={} udp_no_relay={} udp_map_full={} udp_flows={} "
        "foreign_mark={} refused_bound={} refused_unscanned={}",
        c[KTP_CTR_REDIRECTED], c[KTP_CTR_SKIPPED_MARK], c[KTP_CTR_SKIPPED_NETNS],
        c[KTP_CTR_SKIPPED_LOCAL], c[KTP_CTR_ORIG_DST_ANSWERED], c[KTP_CTR_ORIG_DST_MISSED],
        c[KTP_CTR_MAP_FULL], c[KTP_CTR_BYPASSED], c[KTP_CTR_BLOCKED], c[KTP_CTR_GW_ASSIGNED],
        c[KTP_CTR_GW_NO_LISTENER], c[KTP_CTR_NO_LISTENER], c[KTP_CTR_SKIPPED_BOUND], c[KTP_CTR_DRY_REDIRECT],
        c[KTP_CTR_DRY_BLOCK], c[KTP_CTR_DRY_PASS], c[KTP_CTR_DRY_REFUSE], c[KTP_CTR_DRY_EVENTS_LOST], m.tuples,
        c[KTP_CTR_UDP_REDIRECTED], c[KTP_CTR_UDP_NO_RELAY], c[KTP_CTR_UDP_MAP_FULL], m.udp_flows,
        c[KTP_CTR_FOREIGN_MARK], c[KTP_CTR_REFUSED_BOUND], c[KTP_CTR_REFUSED_UNSCANNED]);
}

}  // namespace ktp
