// Matching cgroup paths against --cgroup-match patterns.
#include "config/cgroup_glob.h"

#include <cctype>
#include <string>
#include <utility>

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

// One element of a level's pattern; each but a star matches exactly one
// character, which is what makes the greedy match below exact.
struct Tok {
    enum Kind { lit, any, cls, star } kind = lit;
    char c = 0;
    bool negate = false;
    std::string set;                 // cls: pairs lo,hi
    std::vector<int (*)(int)> named;  // cls: [:alpha:] and the like
};

// The POSIX character classes fnmatch knows inside brackets.
int (*named_class(std::string_view name))(int)
{
    static const std::pair<std::string_view, int (*)(int)> table[] = {
        {"alnum", ::isalnum}, {"alpha", ::isalpha}, {"blank", ::isblank}, {"cntrl", ::iscntrl},
        {"digit", ::isdigit}, {"graph", ::isgraph}, {"lower", ::islower}, {"print", ::isprint},
        {"punct", ::ispunct}, {"space", ::isspace}, {"upper", ::isupper}, {"xdigit", ::isxdigit},
    };
    for (const auto& [n, f] : table)
        if (n == name)
            return f;
    return nullptr;
}

// One member of a bracket at p[j]: a `\`-escaped byte or a plain one.
char class_byte(std::string_view p, size_t& j)
{
    if (p[j] == '\\' && j + 1 < p.size())
        ++j;
    return p[j];
}

// "[...]" at p[i] (fnmatch's syntax: ! or ^ negates, ] first is literal,
// a-z ranges, [:digit:] classes, \ escapes); false when it never closes
// or names an unknown class, so the [ is a literal.
bool read_class(std::string_view p, size_t& i, Tok& out)
{
    size_t j = i + 1;
    Tok t;
    t.kind = Tok::cls;
    if (j < p.size() && (p[j] == '!' || p[j] == '^')) {
        t.negate = true;
        ++j;
    }
    bool first = true;
    while (j < p.size() && (p[j] != ']' || first)) {
        first = false;
        if (p[j] == '[' && j + 1 < p.size() && p[j + 1] == ':') {
            size_t end = p.find(":]", j + 2);
            if (end == std::string_view::npos)
                return false;
            auto f = named_class(p.substr(j + 2, end - j - 2));
            if (!f)
                return false;
            t.named.push_back(f);
            j = end + 2;
            continue;
        }
        char lo = class_byte(p, j), hi = lo;
        if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
            j += 2;
            hi = class_byte(p, j);
        }
        t.set += lo;
        t.set += hi;
        ++j;
    }
    if (j >= p.size())
        return false;
    i = j;
    out = std::move(t);
    return true;
}

std::vector<Tok> tokens(std::string_view p)
{
    std::vector<Tok> out;
    for (size_t i = 0; i < p.size(); ++i) {
        Tok t;
        if (p[i] == '*') {
            if (out.empty() || out.back().kind != Tok::star)
                out.emplace_back().kind = Tok::star;
            continue;
        }
        if (p[i] == '?')
            t.kind = Tok::any;
        else if (p[i] == '[' && read_class(p, i, t))
            ;
        else if (p[i] == '\\' && i + 1 < p.size())
            t.c = p[++i];
        else
            t.c = p[i];
        out.push_back(std::move(t));
    }
    return out;
}

bool one(const Tok& t, char c)
{
    if (t.kind == Tok::any)
        return true;
    if (t.kind == Tok::lit)
        return t.c == c;
    bool in = false;
    for (size_t k = 0; k + 1 < t.set.size(); k += 2)
        in = in || (static_cast<unsigned char>(c) >= static_cast<unsigned char>(t.set[k]) &&
                    static_cast<unsigned char>(c) <= static_cast<unsigned char>(t.set[k + 1]));
    for (auto f : t.named)
        in = in || f(static_cast<unsigned char>(c));
    return in != t.negate;
}

// One level: greedy, going back only to the last star, so O(pattern x
// name) where backtracking into every star (fnmatch's way) is exponential
// in their number.
bool level_match(const std::vector<Tok>& pat, std::string_view s)
{
    size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
    while (i < s.size()) {
        if (p < pat.size() && pat[p].kind == Tok::star) {
            star = p++;
            mark = i;
        } else if (p < pat.size() && one(pat[p], s[i])) {
            ++p;
            ++i;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            i = ++mark;
        } else {
            return false;
        }
    }
    while (p < pat.size() && pat[p].kind == Tok::star)
        ++p;
    return p == pat.size();
}

// Levels: ok[gi][ri] = glob levels gi.. match path levels ri.., filled from
// the end, so each ** costs one pass instead of a branch per level.
bool levels_match(const std::vector<std::string>& g, const std::vector<std::string>& r)
{
    const size_t G = g.size(), R = r.size(), W = R + 1;
    std::vector<char> ok((G + 1) * W, 0);
    ok[G * W + R] = 1;
    for (size_t gi = G; gi-- > 0;) {
        bool any_depth = g[gi] == "**";
        std::vector<Tok> pat = any_depth ? std::vector<Tok>{} : tokens(g[gi]);
        for (size_t ri = R + 1; ri-- > 0;) {
            if (any_depth)
                ok[gi * W + ri] = ok[(gi + 1) * W + ri] || (ri < R && ok[gi * W + ri + 1]);
            else
                ok[gi * W + ri] = ri < R && ok[(gi + 1) * W + ri + 1] && level_match(pat, r[ri]);
        }
    }
    return ok[0];
}

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

}  // namespace

bool cgroup_glob_match(std::string_view glob, std::string_view rel)
{
    return levels_match(split(glob), split(rel));
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
