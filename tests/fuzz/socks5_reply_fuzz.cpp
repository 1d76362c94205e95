// Fuzzes the SOCKS5 client against hostile servers. The first input byte
// picks credentials, the target kind and the delivery chunk size; the rest is
// what the server sends, delivered the way the event loop would.
#include "upstream/socks5.h"
#include "fuzz_check.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace ktp;
using ktp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t cfg = data[0];
    std::string_view server(reinterpret_cast<const char*>(data + 1), size - 1);
    bool creds = cfg & 1;
    size_t chunk = 1 + (cfg >> 3);
    Socks5Handshake hs(creds ? "user" : "", creds ? "pass" : "", ktp::fuzz::fuzz_target(cfg >> 1));

    std::string in;
    size_t delivered = 0;
    int sends = 0;
    HandshakeStep step = hs.start();
    for (;;) {
        check(step.consumed <= in.size());
        switch (step.kind) {
        case HandshakeStep::send:
            check(!step.out.empty());
            check(++sends <= 3);  // greeting, auth, CONNECT
            in.erase(0, step.consumed);
            step = in.empty() ? HandshakeStep{} : hs.feed(in);
            continue;
        case HandshakeStep::need_more: {
            check(step.consumed == 0);
            if (delivered == server.size())
                return 0;
            size_t n = std::min(chunk, server.size() - delivered);
            in.append(server.substr(delivered, n));
            delivered += n;
            step = hs.feed(in);
            continue;
        }
        case HandshakeStep::done:
            // From an empty domain (7 bytes) to a 255-byte one (262) as BND.ADDR.
            check(step.consumed >= 7 && step.consumed <= 262);
            check(hs.feed(in).kind == HandshakeStep::failed);
            return 0;
        case HandshakeStep::failed:
            check(!step.error.empty() && step.error.find('\n') == std::string::npos);
            return 0;
        }
    }
}
