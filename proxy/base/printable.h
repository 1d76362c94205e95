// Untrusted bytes (DNS names, an upstream's reply, a config key, someone
// else's firewall comment) as text for one log or message line.
#pragma once

#include <string>
#include <string_view>

namespace ktp {

// Which bytes stand as themselves. Control bytes (below 0x20) and DEL are
// never kept: printed raw, a hostile newline forges a log line and ESC drives
// the reader's terminal. Every byte not kept becomes \xHH; with the backslash
// in `escaped` too, the text maps back to exactly one byte string.
struct PrintableRules {
    bool space = true;             // ' '
    bool high = false;             // 0x80-0xff: for UTF-8 text a person wrote (a config, a comment)
    std::string_view escaped = ""; // printable ASCII escaped all the same (a quote that delimits the text)
    size_t limit = std::string_view::npos;  // bytes looked at; the rest is dropped
};

bool printable_keeps(unsigned char c, const PrintableRules& rules);

std::string printable(std::string_view bytes, const PrintableRules& rules = {});

}  // namespace ktp
