// `ktproxy cleanup`: removes what killed instances left behind (pins of
// dead owners, transient cgroups, stale control sockets and lock files,
// gateway routing state), never what a live instance holds.
#include "daemon/instance.h"

#include "base/error.h"
#include "base/log.h"
#include "base/text_file.h"
#include "daemon/cgroup.h"
#include "daemon/ownership.h"
#include "daemon/preflight.h"
#include "daemon/run_command.h"
#include "kernel/gateway.h"
#include "kernel/sock_hooks.h"
#include "ops/local_server.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace ktp {

namespace {

// Stale control sockets and lock files in kRunDir, of one instance (its
// name, and its bpffs_name() that names the lock) or of every instance ("");
// a live instance's are left alone.
int clean_run_dir(const std::string& only, const std::string& only_lock)
{
    int sockets = 0;
    if (DIR* d = opendir(kRunDir)) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() <= 5)
                continue;
            const std::string stem = n.substr(0, n.size() - 5);
            if (n.substr(n.size() - 5) == ".lock") {
                if (!only.empty() && stem != only_lock)
                    continue;
                // Left by a killed instance; a held one is a live instance's.
                int holder = 0;
                if (InstanceLock lock = InstanceLock::try_acquire(stem, &holder)) {
                    lock.remove();
                    ++sockets;
                }
                continue;
            }
            if (n.substr(n.size() - 5) != ".sock" || (!only.empty() && stem != only))
                continue;
            std::string p = std::string(kRunDir) + "/" + n;
            try {
                query_control(p, "ping");
            } catch (const Error&) {
                if (::unlink(p.c_str()) == 0)
                    ++sockets;
            }
        }
        closedir(d);
    }
    return sockets;
}

}  // namespace

int run_cleanup(const Options& o)
{
    require_privileges();
    // --cgroup: one instance's leftovers only. Without it, every dead
    // instance's pins go, and a --fail-closed instance caught between its
    // kill and its restart would be opened (its cgroup's connects go direct
    // until the restart hooks it again).
    std::string only, only_pins;
    if (!o.cgroup.empty()) {
        const std::string mount = find_cgroup2_mount(read_text_file("/proc/self/mounts")).value_or("");
        if (mount.empty())
            fail("cleanup --cgroup {}: no cgroup2 hierarchy mounted", o.cgroup);
        only = instance_name(mount, resolve_cgroup_path(mount, o.cgroup));
        only_pins = bpffs_name(only);
    }
    int pins = 0;
    if (DIR* d = opendir(kPinRoot)) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n == "." || n == ".." || (!only.empty() && n != only_pins))
                continue;
            std::string p = std::string(kPinRoot) + "/" + n;
            if (e->d_type != DT_DIR) {
                pins += ::unlink(p.c_str()) == 0;
                continue;
            }
            // Held while the pins go, so that no instance starts on them
            // half-way through.
            int owner = 0;
            InstanceLock lock = InstanceLock::try_acquire(n, &owner);
            if (!lock && ::access(InstanceLock::path_of(n).c_str(), F_OK) == 0) {
                log::info("cleanup: {} belongs to running ktproxy pid {}: left alone", p, owner);
                continue;
            }
            if (int legacy = lock ? 0 : legacy_live_pin_owner(n)) {
                log::info("cleanup: {} belongs to running ktproxy pid {}: left alone", p, legacy);
                continue;
            }
            pins += SockHooks::unpin_all(p);
            rmdir(p.c_str());
            ::unlink(legacy_pin_owner_file(n).c_str());
            lock.remove();
        }
        closedir(d);
    }
    rmdir(kPinRoot);  // only if nothing is left in it
    if (!only.empty()) {
        const int sockets = clean_run_dir(only, only_pins);
        log::info("cleanup: removed {} pinned BPF objects and {} stale control sockets and lock files of {}", pins,
                  sockets, only);
        return 0;
    }
    int cgroups = 0;
    // Without a visible hierarchy there are no transient cgroups to remove.
    const std::string mount = find_cgroup2_mount(read_text_file("/proc/self/mounts")).value_or("");
    if (DIR* d = mount.empty() ? nullptr : opendir(mount.c_str())) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.rfind(TransientCgroup::kPrefix, 0) != 0)
                continue;
            int owner = std::atoi(n.c_str() + std::strlen(TransientCgroup::kPrefix));
            if (owner > 0 && kill(owner, 0) == 0)
                continue;  // its ktproxy run is alive
            if (remove_cgroup(mount + "/" + n))
                ++cgroups;
        }
        closedir(d);
    }
    const int sockets = clean_run_dir("", "");
    Options defaults;
    int gw = 0;
    try {
        gw = GatewayHooks::remove_leftovers(defaults.gateway_mark, defaults.gateway_table);
    } catch (const Error& e) {
        // A live gateway owns its state: not a leftover, and not a failure.
        log::info("cleanup: gateway state left alone: {}", e.what());
    }
    log::info("cleanup: removed {} pinned BPF objects, {} transient cgroups, {} stale control sockets and lock "
              "files, {} gateway leftovers",
              pins, cgroups, sockets, gw);
    return 0;
}

}  // namespace ktp
