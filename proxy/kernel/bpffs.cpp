#include "kernel/bpffs.h"

#include "base/error.h"
#include "base/log.h"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/vfs.h>

namespace ktp {

void ensure_bpffs(const char* dir, bool private_sysfs)
{
    struct statfs st {};
    if (statfs(dir, &st) != 0)
        fail_errno("--fail-closed: {} (the bpffs mount point)", dir);
    if (st.f_type == BPF_FS_MAGIC)
        return;
    // A bpffs mounted in a mount namespace of ktproxy's own (`ip netns exec`
    // makes one, with a fresh /sys) is destroyed with that namespace, that
    // is when ktproxy exits, and the pins with it: the hooks would be
    // detached exactly when --fail-closed must keep them. (/proc/1/ns/mnt,
    // which would tell for sure, is not readable everywhere, even by root.)
    if (private_sysfs)
        fail("--fail-closed: {} is not a bpffs and /sys is ktproxy's own (as under `ip netns exec`): pins mounted "
             "here would vanish with ktproxy; start it with `nsenter --net=...`",
             dir);
    // Mode 0700 as systemd mounts it: pins give their programs to whoever
    // can open them.
    if (mount("bpffs", dir, "bpf", 0, "mode=0700") != 0)
        fail_errno("--fail-closed: mount bpffs at {}", dir);
    log::info("mounted bpffs at {} (it was not mounted)", dir);
}

}  // namespace ktp
