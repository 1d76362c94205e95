// Fuzzes upstream URL parsing. A parsed URL must be well-formed, and its
// redacted form must parse back to the same upstream (password aside).
#include "upstream/upstream_url.h"
#include "fuzz_check.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace ktp;
using ktp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = parse_upstream_url(text);
    if (auto* f = std::get_if<ParseFailure>(&parsed)) {
        check(f->message.compare(0, 14, "upstream URL '") == 0);
        return 0;
    }
    const UpstreamUrl& u = std::get<UpstreamUrl>(parsed);
    if (u.kind == UpstreamUrl::Kind::direct) {
        check(u.host.empty() && u.user.empty());
        return 0;
    }
    check(!u.host.empty() && u.port != 0);
    check(u.password.empty() || !u.user.empty());

    std::string shown = u.to_string_redacted();
    check(u.password.empty() || shown.find(":***@") != std::string::npos);
    auto back = parse_upstream_url(shown);
    check(std::holds_alternative<UpstreamUrl>(back));
    const UpstreamUrl& b = std::get<UpstreamUrl>(back);
    check(b.kind == u.kind && b.host == u.host && b.port == u.port && b.user == u.user);
    check(b.password == (u.password.empty() ? "" : "***"));
    return 0;
}
