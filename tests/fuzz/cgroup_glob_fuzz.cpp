// Fuzzes --cgroup-match patterns: a pattern and a cgroup path (split at the
// first newline). Matching must end quickly whatever the wildcards (the
// target's -timeout catches backtracking), a path escaped into a pattern
// matches itself, ** matches every path, and the literal parent is a
// prefix of every pattern's path.
#include "config/cgroup_glob.h"
#include "fuzz_check.h"

#include <cstdint>
#include <string>
#include <string_view>

using namespace ktp;
using ktp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view in(reinterpret_cast<const char*>(data), size);
    size_t nl = in.find('\n');
    std::string_view glob = in.substr(0, nl), path = nl == std::string_view::npos ? "" : in.substr(nl + 1);

    (void)cgroup_glob_match(glob, path);
    check(cgroup_glob_match("**", path));

    // The path as a pattern with every special byte escaped; levels without
    // a name ("a//b") are dropped on both sides.
    std::string lit;
    for (char c : path) {
        if (c == '*' || c == '?' || c == '[' || c == '\\')
            lit += '\\';
        lit += c;
    }
    // A trailing backslash of a level would escape the '/' after it.
    if (path.find("\\/") == std::string_view::npos && (path.empty() || path.back() != '\\'))
        check(cgroup_glob_match(lit, path));

    std::string prefix = cgroup_glob_prefix({std::string(glob)});
    check(prefix.find_first_of("*?[") == std::string::npos);
    return 0;
}
