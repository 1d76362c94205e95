// Loading and attaching the socket hooks through the libbpf skeleton.
#include "sock_hooks.h"

#include "bpf_abi.h"
#include "error.h"
#include "log.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <dirent.h>
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

}  // namespace

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

    bpf_map__set_max_entries(skel_->maps.ktp_orig_dst, cfg.max_conns);
    bpf_map__set_max_entries(skel_->maps.ktp_tuples, cfg.max_conns);

    pin_dir_ = cfg.pin_dir;
    if (!pin_dir_.empty()) {
        if (mkdir(pin_dir_.c_str(), 0700) != 0 && errno != EEXIST)
            fail_errno("--fail-closed: create {}", pin_dir_);
        // libbpf reuses a compatible pinned map at load, or creates and pins it:
        // connection state survives a restart of ktproxy.
        for (bpf_map* m : {skel_->maps.ktp_orig_dst, skel_->maps.ktp_tuples, skel_->maps.ktp_counters,
                           skel_->maps.ktp_routes})
            bpf_map__set_pin_path(m, (pin_dir_ + "/map_" + bpf_map__name(m)).c_str());
    }

    if (int err = sock_redirect__load(skel_); err) {
        sock_redirect__destroy(skel_);
        skel_ = nullptr;
        fail("load BPF programs (cgroup connect/sockops/getsockopt; needs Linux >= 5.19 with BTF): {}",
             errno_text(-err));
    }
}

SockHooks::~SockHooks()
{
    detach();
    if (skel_)
        sock_redirect__destroy(skel_);
}

void SockHooks::attach_one(const char* what, bpf_program* prog, int cgroup_fd, const std::string& path)
{
    if (!pin_dir_.empty()) {
        std::string pin = pin_dir_ + "/link_" + bpf_program__name(prog);
        if (access(pin.c_str(), F_OK) == 0) {
            // A previous instance died with --fail-closed: swap our program
            // into its link, so the hook never leaves the cgroup.
            bpf_link* old = bpf_link__open(pin.c_str());
            if (!old)
                fail_errno("--fail-closed: open pinned link {}", pin);
            if (bpf_link__update_program(old, prog) != 0) {
                int err = errno;
                bpf_link__destroy(old);
                fail("--fail-closed: take over {} at {}: {}", what, pin, errno_text(err));
            }
            links_.push_back(old);
            took_over_ = true;
            return;
        }
        bpf_link* link = bpf_program__attach_cgroup(prog, cgroup_fd);
        if (!link)
            fail_errno("attach {} to cgroup {}", what, path);
        links_.push_back(link);
        if (int err = bpf_link__pin(link, pin.c_str()); err)
            fail("--fail-closed: pin {} at {}: {}", what, pin, errno_text(-err));
        return;
    }
    bpf_link* link = bpf_program__attach_cgroup(prog, cgroup_fd);
    if (!link)
        fail_errno("attach {} to cgroup {}", what, path);
    links_.push_back(link);
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
    attach_one("sockops", skel_->progs.ktp_sockops, app_fd, app_path);
    attach_one("cgroup/connect4", skel_->progs.ktp_connect4, app_fd, app_path);
    attach_one("cgroup/connect6", skel_->progs.ktp_connect6, app_fd, app_path);
    attach_one("cgroup/getpeername4", skel_->progs.ktp_getpeername4, app_fd, app_path);
    attach_one("cgroup/getpeername6", skel_->progs.ktp_getpeername6, app_fd, app_path);
}

void SockHooks::detach()
{
    // Stop redirecting before anything else goes away. A pinned link keeps
    // the program attached after its fd closes: that is --fail-closed.
    for (auto it = links_.rbegin(); it != links_.rend(); ++it)
        bpf_link__destroy(*it);
    links_.clear();
}

void SockHooks::set_routes(const std::vector<CompiledRoute>& routes, uint32_t default_action)
{
    // The default goes last, so that a reload never applies the new default
    // to addresses whose new rules are not in yet.
    replace_routes(bpf_map__fd(skel_->maps.ktp_routes), routes, "the socket hooks");
    skel_->data->ktp_default_action = default_action;
}

int SockHooks::dead_dst_fd() const { return bpf_map__fd(skel_->maps.ktp_dead_dst); }

Counters SockHooks::counters() const { return read_counters(bpf_map__fd(skel_->maps.ktp_counters)); }

MapOccupancy SockHooks::occupancy() const
{
    return MapOccupancy{
        count_entries(bpf_map__fd(skel_->maps.ktp_orig_dst), sizeof(uint64_t)),
        count_entries(bpf_map__fd(skel_->maps.ktp_tuples), sizeof(ktp_tuple)),
    };
}

std::string format_counters(const Counters& c, const MapOccupancy& m)
{
    return fmt::format(
        "counters redirected={} skipped_mark={} skipped_netns={} skipped_local={} "
        "orig_dst_answered={} orig_dst_missed={} map_full={} bypassed={} blocked={} gw_assigned={} gw_no_listener={} "
        "live_orig_dst={} live_tuples={}",
        c[KTP_CTR_REDIRECTED], c[KTP_CTR_SKIPPED_MARK], c[KTP_CTR_SKIPPED_NETNS],
        c[KTP_CTR_SKIPPED_LOCAL], c[KTP_CTR_ORIG_DST_ANSWERED], c[KTP_CTR_ORIG_DST_MISSED],
        c[KTP_CTR_MAP_FULL], c[KTP_CTR_BYPASSED], c[KTP_CTR_BLOCKED], c[KTP_CTR_GW_ASSIGNED],
        c[KTP_CTR_GW_NO_LISTENER], m.orig_dst, m.tuples);
}

}  // namespace ktp
