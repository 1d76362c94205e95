// Fuzzes the HTTP Host sniffer: the input as the client's first bytes, and
// again after a valid request line so that mutations reach the headers.
// Checks name validity and prefix consistency besides memory safety.
#include "route/sniff.h"
#include "fuzz_check.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace ktp;
using ktp::fuzz::check;
using ktp::fuzz::check_sniff_consistent;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view in(reinterpret_cast<const char*>(data), size);
    check_sniff_consistent(in);
    check_sniff_consistent("GET / HTTP/1.1\r\n" + std::string(in));
    return 0;
}
