// Fuzzes the HTTP Host sniffer: the input as the client's first bytes, and
// again after a valid request line so that mutations reach the headers.
// Checks name validity and prefix consistency besides memory safety.
#include "sniff.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace ktp;

namespace {

void check(bool ok)
{
    if (!ok)
        abort();
}

void check_consistent(std::string_view in)
{
    SniffResult full = sniff_domain(in);
    if (full.status == SniffResult::found)
        check(!full.domain.empty() && valid_sniffed_name(full.domain) == full.domain &&
              full.domain.size() <= 253);
    for (size_t cut : {in.size() / 3, in.size() / 2, in.size() > 0 ? in.size() - 1 : 0}) {
        SniffResult part = sniff_domain(in.substr(0, cut));
        if (part.status == SniffResult::found)
            check(full.status == SniffResult::found && full.domain == part.domain);
        if (part.status == SniffResult::none)
            check(full.status == SniffResult::none);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view in(reinterpret_cast<const char*>(data), size);
    check_consistent(in);
    check_consistent("GET / HTTP/1.1\r\n" + std::string(in));
    return 0;
}
