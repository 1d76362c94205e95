#include "tcp/conn_proc.h"

namespace ktp {

CommText comm_text(const ConnProc& p)
{
    CommText t;
    if (p.known())
        for (char ch : p.comm) {
            if (ch == '\0')
                break;
            auto u = static_cast<unsigned char>(ch);
            t.buf[t.len++] = u > 0x20 && u < 0x7f && ch != '"' && ch != '\\' ? ch : '?';
        }
    if (t.len == 0)
        t.buf[t.len++] = '-';
    return t;
}

}  // namespace ktp
