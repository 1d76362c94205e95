// Matching cgroup paths against --cgroup-match patterns.
#include "config/cgroup_glob.h"

#include <fnmatch.h>

namespace ktp {
namespace {

std::vector<std::string> split(std::string_view p)
{
    std::vector<std::string> out;
    size_t i = 0;
    while (i <= p.size()) {
        size_t j = p.find('/', i);
        if (j == std::string_view::npos)
            j = p.size();
        if (j > i)
            out.emplace_back(p.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

bool match_from(const std::vector<std::string>& g, size_t gi, const std::vector<std::string>& r, size_t ri)
{
    if (gi == g.size())
        return ri == r.size();
    if (g[gi] == "**") {
        // Zero or more levels.
        for (size_t k = ri; k <= r.size(); ++k)
            if (match_from(g, gi + 1, r, k))
                return true;
        return false;
    }
    if (ri == r.size())
        return false;
    return fnmatch(g[gi].c_str(), r[ri].c_str(), 0) == 0 && match_from(g, gi + 1, r, ri + 1);
}

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

}  // namespace

bool cgroup_glob_match(std::string_view glob, std::string_view rel)
{
    // Patterns are bounded by the command line: the recursion on ** is
    // at most levels x levels.
    return match_from(split(glob), 0, split(rel), 0);
}

std::string cgroup_glob_prefix(const std::vector<std::string>& globs)
{
    std::vector<std::string> common;
    bool first = true;
    for (const auto& g : globs) {
        std::vector<std::string> parts = split(g), lit;
        // The last level names the cgroups themselves: even without a
        // wildcard, the hooks go on its parent.
        for (size_t i = 0; i + 1 < parts.size() && !has_wildcard(parts[i]); ++i)
            lit.push_back(parts[i]);
        if (first) {
            common = lit;
            first = false;
            continue;
        }
        size_t n = 0;
        while (n < common.size() && n < lit.size() && common[n] == lit[n])
            ++n;
        common.resize(n);
    }
    std::string out;
    for (const auto& c : common)
        out += (out.empty() ? "" : "/") + c;
    return out;
}

}  // namespace ktp
