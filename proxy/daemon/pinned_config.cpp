// Rereads of the --config file by the root helper. Its rules, each refusing
// with one line (docs/architecture.md, "Privileges"):
// - the directory is the one the path named at start (an fd, not a path);
// - the name in it is opened with O_NOFOLLOW: a symlink there is refused;
// - it must be a regular file (a FIFO would block: O_NONBLOCK) with one link,
//   so it is not a second name of some other file;
// - neither the file nor its directory may be writable by group or others:
//   only their owners decide what sits at that name.
#include "daemon/pinned_config.h"

#include "base/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

namespace ktp {

PinnedConfig::PinnedConfig(const std::string& path) : shown_(path)
{
    if (path.empty())
        return;
    char real[PATH_MAX];
    if (!realpath(path.c_str(), real)) {
        open_error_ = fmt::format("config {}: {}", path, errno_text(errno));
        return;
    }
    std::string r(real);
    size_t slash = r.rfind('/');
    name_ = r.substr(slash + 1);
    std::string dir = slash == 0 ? "/" : r.substr(0, slash);
    dir_ = UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir_)
        open_error_ = fmt::format("config {}: open its directory {}: {}", path, dir, errno_text(errno));
}

std::string PinnedConfig::read(size_t max) const
{
    if (!open_error_.empty())
        throw Error(open_error_);
    UniqueFd fd(::openat(dir_.get(), name_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK));
    if (!fd && errno == ELOOP)
        fail("config {}: is a symlink now; the privileged helper follows none after start (restart ktproxy to "
             "read through a new one)",
             shown_);
    if (!fd)
        fail_errno("config {}", shown_);
    struct stat st {}, dst {};
    if (fstat(fd.get(), &st) != 0 || fstat(dir_.get(), &dst) != 0)
        fail_errno("config {}: stat", shown_);
    if (!S_ISREG(st.st_mode))
        fail("config {}: not a regular file", shown_);
    if (st.st_nlink != 1)
        fail("config {}: has {} hard links; the privileged helper reads only a file with one name", shown_,
             st.st_nlink);
    if ((st.st_mode & 022) != 0)
        fail("config {}: writable by group or others (mode {:04o}); the privileged helper reads only a file that "
             "its owner alone can change (chmod go-w)",
             shown_, st.st_mode & 07777);
    if ((dst.st_mode & 022) != 0)
        fail("config {}: its directory is writable by group or others (mode {:04o}); the privileged helper reads "
             "only a name that the directory's owner alone can change (chmod go-w, or move the file)",
             shown_, dst.st_mode & 07777);
    // Read from offset 0 whatever the fd's position; one byte past `max`
    // tells a file that is too large.
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::pread(fd.get(), buf, sizeof(buf), static_cast<off_t>(out.size()));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_errno("read {}", shown_);
        if (n == 0)
            return out;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max)
            fail("read {}: larger than {} bytes", shown_, max);
    }
}

}  // namespace ktp
