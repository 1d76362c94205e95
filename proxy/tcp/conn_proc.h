// The process that opened a redirected connection, as the connect hooks
// recorded it (struct ktp_orig_dst), and its text forms for the log and
// `ktproxy status`. Fixed-size: a Conn carries it with no heap behind it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ktp {

struct ConnProc {
    uint32_t pid = 0;  // thread group id; 0: no process known (gateway, or not recorded)
    uint32_t tid = 0;
    uint32_t uid = 0;
    char comm[16] = {};

    bool known() const { return pid != 0; }
};

// comm as one log token: it is whatever the process set (prctl PR_SET_NAME),
// so bytes that are not printable ASCII, spaces, quotes and backslashes
// become '?', and an unknown or empty one is "-".
struct CommText {
    char buf[16];
    size_t len = 0;
    std::string_view view() const { return {buf, len}; }
};
CommText comm_text(const ConnProc& p);

}  // namespace ktp
