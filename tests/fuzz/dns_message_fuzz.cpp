// Fuzzes the DNS message parser (proxy/dns/dns_message.cpp). Beyond memory
// safety: a parsed name is at most 253 bytes plus dots, an answer never has
// more addresses than records read, and a refusal of a query parses back as
// a response with the same name, and a fake answer to it parses back with
// the address it holds.
#include "dns/dns_message.h"
#include "fuzz_check.h"

#include <cstdint>
#include <string_view>

using namespace ktp;
using ktp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    std::string_view in(reinterpret_cast<const char*>(data), size);
    auto q = dns::parse_question(in);
    if (q)
        check(q->name.size() <= 255 && q->end <= size);
    if (auto a = dns::parse_answer(in))
        check(a->addresses.size() <= 64);
    std::string r = dns::refusal(in, dns::kRcodeNxdomain);
    if (!r.empty()) {
        auto rq = dns::parse_question(r);
        check(rq && rq->response && rq->rcode == dns::kRcodeNxdomain && q && rq->name == q->name);
        // Fake mode's answer: parses back with the one address it was given.
        dns::Address ad;
        ad.v6 = q->qtype == dns::kTypeAaaa;
        ad.bytes[0] = 198;
        std::string fa = dns::address_answer(in, &ad, 1);
        if (q->qclass == 1 && (q->qtype == dns::kTypeA || q->qtype == dns::kTypeAaaa)) {
            auto a = dns::parse_answer(fa);
            check(a && a->question.name == q->name && a->addresses.size() == 1 && a->addresses[0].bytes[0] == 198);
        } else {
            check(fa.empty());
        }
    }
    // DNS over TCP: each framed message taken from the stream lies within
    // it, and framing it again gives back the bytes it was taken from.
    std::string_view rest = in;
    for (;;) {
        dns::TcpFrame f = dns::take_tcp_message(rest);
        if (f.status != dns::TcpFrame::whole)
            break;
        check(f.used == f.message.size() + 2 && f.used <= rest.size() && f.message.size() >= 12);
        check(dns::frame_tcp_message(f.message) == rest.substr(0, f.used));
        rest.remove_prefix(f.used);
    }
    return 0;
}
