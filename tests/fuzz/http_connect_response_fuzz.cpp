// Fuzzes the HTTP CONNECT client against hostile proxies. The first input
// byte picks credentials, the target kind and the delivery chunk size; the
// rest is the proxy's response, delivered the way the event loop would.
#include "upstream/http_connect.h"
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
    size_t chunk = 1 + size_t(cfg >> 3) * 64;  // 1 .. ~2 KiB, to reach the 16 KiB cap
    HttpConnectHandshake hs(creds ? "user" : "", creds ? "pass" : "", ktp::fuzz::fuzz_target(cfg >> 1));

    HandshakeStep step = hs.start();
    check(step.kind == HandshakeStep::send && step.consumed == 0);
    check(step.out.size() >= 4 && step.out.substr(step.out.size() - 4) == "\r\n\r\n");
    std::string in;
    size_t delivered = 0;
    for (;;) {
        if (delivered == server.size())
            return 0;
        size_t n = std::min(chunk, server.size() - delivered);
        in.append(server.substr(delivered, n));
        delivered += n;
        step = hs.feed(in);
        check(step.kind != HandshakeStep::send);
        switch (step.kind) {
        case HandshakeStep::need_more:
            check(step.consumed == 0);
            check(in.size() < HttpConnectHandshake::kMaxHeader);
            continue;
        case HandshakeStep::done:
            // The header block ends in a blank line; everything after it is tunnel data.
            check(step.consumed >= 14 && step.consumed <= in.size() && step.consumed <= HttpConnectHandshake::kMaxHeader);
            check(in[step.consumed - 1] == '\n' && in.compare(0, 7, "HTTP/1.") == 0);
            return 0;
        case HandshakeStep::failed:
            check(!step.error.empty() && step.error.find('\n') == std::string::npos);
            return 0;
        case HandshakeStep::send:
            return 0;
        }
    }
}
