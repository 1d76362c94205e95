// --cgroup-match patterns: cgroup paths relative to the cgroup2 mount, with
// * and ? and [..] within one level and ** for any number of levels.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ktp {

// Does the relative cgroup path match the glob? ("a/**" matches "a" and
// everything below it.)
bool cgroup_glob_match(std::string_view glob, std::string_view rel);

// The directory the globs share before any wildcard ("system.slice" for
// "system.slice/docker-*.scope"); "" if none.
std::string cgroup_glob_prefix(const std::vector<std::string>& globs);

}  // namespace ktp
