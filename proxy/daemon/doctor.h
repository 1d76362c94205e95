// `ktproxy doctor`: checks the host for everything ktproxy needs and for what
// would conflict with it, each check one verdict line and, when not ok, one
// fix line. The checks only look: probes load programs and attach nothing
// (a clsact probe runs in a throwaway network namespace).
#pragma once

#include "config/options.h"

#include <string>
#include <vector>

namespace ktp {

enum class CheckStatus { ok, warn, fail, skip };

struct CheckResult {
    std::string name;     // short and stable: scripts and the docs key on it
    CheckStatus status = CheckStatus::ok;
    std::string verdict;  // one line: what was found
    std::string fix;      // one line: what to do about it; empty when ok
};

const char* check_status_name(CheckStatus s);

// Text: "ok    name     verdict", then "      fix: ..." when there is a fix,
// then a summary line. JSON: {"ok":bool,"failures":N,"warnings":N,"checks":[...]}.
std::string render_doctor_text(const std::vector<CheckResult>& checks);
std::string render_doctor_json(const std::vector<CheckResult>& checks);

// 1 when any check failed (something ktproxy would do with these flags would
// fail), else 0. Warnings do not count.
int doctor_exit_code(const std::vector<CheckResult>& checks);

// Runs every check for the flags in o (--cgroup, --gateway-iface, --mark,
// --max-conns, ...), prints the report and returns the exit code.
int run_doctor(const Options& o);

}  // namespace ktp
