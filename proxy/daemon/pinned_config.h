// The --config file as the privileged helper rereads it on SIGHUP: the
// directory is pinned (an fd) when the helper starts, and each reread opens
// the file's name in it again, so an editor's write-new-then-rename is seen
// while nothing the relay could put in the directory later (a symlink, a
// hard link to another file) is read with the helper's root.
#pragma once

#include "base/unique_fd.h"

#include <string>

namespace ktp {

class PinnedConfig {
public:
    PinnedConfig() = default;
    // Resolves `path` once (as root, at start: symlinks on the way are the
    // admin's) and opens its directory. Never throws: a failure is kept and
    // becomes each read()'s error.
    explicit PinnedConfig(const std::string& path);

    bool empty() const { return shown_.empty(); }
    // The file's bytes, at most `max` of them; throws Error naming the file
    // and the rule it broke.
    std::string read(size_t max) const;

private:
    std::string shown_;  // the path as given, for messages
    std::string name_;   // the last component of the resolved path
    UniqueFd dir_;       // O_PATH fd of the resolved path's directory
    std::string open_error_;
};

}  // namespace ktp
