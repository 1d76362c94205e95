// Who owns a cgroup's hooks: the instance name (pin directory, lock file,
// default control socket) and the lock that makes ownership exclusive.
#pragma once

#include "base/unique_fd.h"

#include <string>
#include <string_view>

namespace ktp {

// The cgroup's path below the mount as one file name: '/' becomes '_', and
// a '_' or '%' in the path itself becomes %5F or %25, so that "x/y" and "x_y"
// never share a name ("x_y" and "x%5Fy"). Paths without '_' or '%' keep the
// names older versions gave them. "root" for the mount itself.
std::string instance_name(std::string_view mount, std::string_view cgroup_path);

// The name as a bpffs entry, which may not contain '.' (the kernel keeps
// dotted names for itself and answers EPERM): '.' becomes %2E. Names the
// pin directory and the lock ("system.slice_app.service" ->
// "system%2Eslice_app%2Eservice").
std::string bpffs_name(std::string_view instance_name);

// An exclusive flock on /run/ktproxy/NAME.lock (NAME: the bpffs_name()) held for the life of the
// instance (the kernel drops it when the process dies, however it dies).
// Taken before anything of the cgroup's is touched: a second instance on the
// same cgroup stops there, naming the owner, instead of half-starting over
// the first one's pins.
class InstanceLock {
public:
    // Throws Error naming the running owner's pid if the lock is held.
    static InstanceLock acquire(const std::string& name);
    // For `ktproxy cleanup`: the lock if nobody holds it, else an empty one
    // and the holder's pid in *owner (0 if unknown).
    static InstanceLock try_acquire(const std::string& name, int* owner);

    explicit operator bool() const { return bool(fd_); }
    // Writes this process's pid into the lock file (read by the messages of
    // instances that find the lock taken, and by `cleanup`).
    void record_owner() const;
    // Removes the lock file while still holding it (cleanup of a dead
    // owner's leftovers); lockers that opened the old file retry.
    void remove();

    static std::string path_of(const std::string& name);

private:
    static InstanceLock lock(const std::string& name, bool create, int* owner);
    std::string path_;
    UniqueFd fd_;
};

// Before the instance lock, --fail-closed instances wrote their pid to
// /run/ktproxy/NAME.pin-owner. An older `ktproxy cleanup` (mid-upgrade)
// knows only that file, so a ready instance still writes it; `cleanup`
// honours such files for pins that have no lock file.
std::string legacy_pin_owner_file(const std::string& name);
void write_legacy_pin_owner(const std::string& name);
// The pid of the live ktproxy that owns pin dir `name` by that file, or 0.
int legacy_live_pin_owner(const std::string& name);

// The pid written in `file` (a pid file: pin owner, gateway state) if it is
// a live process named ktproxy, else 0.
int live_ktproxy_in(const std::string& file);

}  // namespace ktp
