// Fuzzes the TLS ClientHello SNI sniffer. Beyond memory safety (ASan) it
// checks that a found name is valid, and that the answer is consistent over
// prefixes: a prefix of found input is need_more or the same name, a prefix
// of `none` input is never `found` with another name.
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
    // The same bytes as the body of one handshake record, so that mutations
    // spend their time inside the ClientHello rather than on its headers.
    if (size <= 4000) {
        std::string rec = "\x16\x03\x01";
        size_t hs_len = size;
        rec += char((hs_len + 4) >> 8);
        rec += char((hs_len + 4) & 0xff);
        rec += '\x01';
        rec += char(hs_len >> 16);
        rec += char(hs_len >> 8 & 0xff);
        rec += char(hs_len & 0xff);
        rec.append(in);
        check_sniff_consistent(rec);
    }
    return 0;
}
