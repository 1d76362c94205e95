// DNS wire-format builders shared by the unit tests of the DNS parser and
// the forwarder: a name, a header, and a one-question query.
#pragma once

#include "dns/dns_message.h"

#include <string>

namespace ktp::test {

inline std::string u16(unsigned v) { return {char(v >> 8 & 0xff), char(v & 0xff)}; }
inline std::string u32(unsigned v) { return u16(v >> 16) + u16(v & 0xffff); }

inline std::string name(const std::string& dotted)
{
    std::string out;
    size_t at = 0;
    while (at < dotted.size()) {
        size_t dot = dotted.find('.', at);
        if (dot == std::string::npos)
            dot = dotted.size();
        out += char(dot - at) + dotted.substr(at, dot - at);
        at = dot + 1;
    }
    return out + '\0';
}

inline std::string header(unsigned id, unsigned flags, unsigned qd, unsigned an)
{
    return u16(id) + u16(flags) + u16(qd) + u16(an) + u16(0) + u16(0);
}

inline std::string query(const std::string& n, unsigned type = dns::kTypeA)
{
    return header(0x1234, 0x0100, 1, 0) + name(n) + u16(type) + u16(1);
}

}  // namespace ktp::test
