// Rendering of doctor's checks (pure: the unit tests drive it).
#include "daemon/doctor.h"

#include "base/json.h"

#include <fmt/format.h>

#include <algorithm>

namespace ktp {

const char* check_status_name(CheckStatus s)
{
    switch (s) {
    case CheckStatus::ok: return "ok";
    case CheckStatus::warn: return "warn";
    case CheckStatus::fail: return "fail";
    case CheckStatus::skip: return "skip";
    }
    return "?";
}

namespace {
int count(const std::vector<CheckResult>& checks, CheckStatus s)
{
    return static_cast<int>(std::count_if(checks.begin(), checks.end(), [s](const auto& c) { return c.status == s; }));
}
}  // namespace

std::string render_doctor_text(const std::vector<CheckResult>& checks)
{
    size_t width = 0;
    for (const auto& c : checks)
        width = std::max(width, c.name.size());
    std::string out;
    for (const auto& c : checks) {
        out += fmt::format("{:<5} {:<{}} {}\n", check_status_name(c.status), c.name, width, c.verdict);
        if (!c.fix.empty() && c.status != CheckStatus::ok)
            out += fmt::format("{:<5} {:<{}} fix: {}\n", "", "", width, c.fix);
    }
    int f = count(checks, CheckStatus::fail), w = count(checks, CheckStatus::warn);
    out += f ? fmt::format("{} check(s) failed, {} warning(s): ktproxy would not work as asked\n", f, w)
             : fmt::format("all checks passed ({} warning(s))\n", w);
    return out;
}

std::string render_doctor_json(const std::vector<CheckResult>& checks)
{
    int f = count(checks, CheckStatus::fail), w = count(checks, CheckStatus::warn);
    std::string out = fmt::format("{{\"ok\":{},\"failures\":{},\"warnings\":{},\"checks\":[", f == 0, f, w);
    for (size_t i = 0; i < checks.size(); ++i) {
        const auto& c = checks[i];
        out += fmt::format("{}{{\"name\":\"{}\",\"status\":\"{}\",\"verdict\":\"{}\",\"fix\":\"{}\"}}", i ? "," : "",
                           json_escape(c.name), check_status_name(c.status), json_escape(c.verdict),
                           json_escape(c.status == CheckStatus::ok ? "" : c.fix));
    }
    out += "]}\n";
    return out;
}

int doctor_exit_code(const std::vector<CheckResult>& checks) { return count(checks, CheckStatus::fail) ? 1 : 0; }

}  // namespace ktp
