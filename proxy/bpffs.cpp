#include "bpffs.h"

#include "error.h"
#include "log.h"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/vfs.h>

namespace ktp {

void ensure_bpffs(const char* dir)
{
    struct statfs st {};
    if (statfs(dir, &st) != 0)
        fail_errno("--fail-closed: {} (the bpffs mount point)", dir);
    if (st.f_type == BPF_FS_MAGIC)
        return;
    // Mode 0700 as systemd mounts it: pins give their programs to whoever
    // can open them.
    if (mount("bpffs", dir, "bpf", 0, "mode=0700") != 0)
        fail_errno("--fail-closed: mount bpffs at {}", dir);
    log::info("mounted bpffs at {} (it was not mounted)", dir);
}

}  // namespace ktp
