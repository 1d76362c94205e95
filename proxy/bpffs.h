// The BPF filesystem that --fail-closed pins its hooks and maps in.
#pragma once

namespace ktp {

// Makes sure `dir` is a bpffs mount, mounting one there if it is not: a
// minimal or container host (and a fresh CI machine) boots without
// systemd's /sys/fs/bpf mount, and pinning would fail with a bare ENOENT.
// Throws Error naming the directory and the reason when it cannot.
void ensure_bpffs(const char* dir);

}  // namespace ktp
