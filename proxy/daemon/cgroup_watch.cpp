// inotify on the cgroup's parent, and a stat of the path.
#include "daemon/cgroup_watch.h"

#include "base/error.h"

#include <sys/inotify.h>
#include <sys/stat.h>

namespace ktp {

CgroupWatch::CgroupWatch(std::string path, uint64_t id) : path_(std::move(path)), id_(id)
{
    auto slash = path_.find_last_of('/');
    parent_ = slash == std::string::npos || slash == 0 ? "/" : path_.substr(0, slash);
    fd_ = UniqueFd(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd_)
        fail_errno("inotify for cgroup {}", path_);
    watch_parent();
}

void CgroupWatch::watch_parent()
{
    struct stat st {};
    if (stat(parent_.c_str(), &st) != 0 || st.st_ino == parent_ino_)
        return;
    // A new parent directory (it was removed and created again): watch that
    // one. Without a watch the periodic check still sees the path.
    int wd = inotify_add_watch(fd_.get(), parent_.c_str(),
                               IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR);
    if (wd < 0)
        return;
    wd_ = wd;
    parent_ino_ = st.st_ino;
}

CgroupWatch::State CgroupWatch::check()
{
    alignas(inotify_event) char buf[4096];
    while (::read(fd_.get(), buf, sizeof(buf)) > 0) {
    }
    struct stat st {};
    if (stat(path_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        watch_parent();
        return State::gone;
    }
    if (st.st_ino == id_)
        return State::attached;
    watch_parent();
    return State::replaced;
}

}  // namespace ktp
