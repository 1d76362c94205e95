// DNS messages (RFC 1035) for the forwarder: bytes in, results out, no I/O.
// The question of a query (its name decides the route), the addresses an
// answer gives for that name (A/AAAA, following CNAME chains, with TTLs: the
// name memory), and the refusal ktproxy answers a blocked query with.
// Hostile input yields nullopt, never a crash; compression pointers may only
// point backwards, so no loop can be built out of them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktp::dns {

constexpr uint16_t kTypeA = 1, kTypeCname = 5, kTypeAaaa = 28;
constexpr uint16_t kTypeIxfr = 251, kTypeAxfr = 252;
constexpr uint8_t kRcodeServfail = 2, kRcodeNxdomain = 3, kRcodeNotimp = 4, kRcodeRefused = 5;

struct Question {
    uint16_t id = 0;
    bool response = false;  // the QR bit
    uint8_t rcode = 0;
    std::string name;       // lowercase, no trailing dot ("" for the root)
    uint16_t qtype = 0, qclass = 0;
    size_t end = 0;         // offset just past the question
};

// The header and first question of a message (query or response).
std::optional<Question> parse_question(std::string_view msg);

struct Address {
    bool v6 = false;
    std::array<uint8_t, 16> bytes{};  // IPv4 in the first 4
    uint32_t ttl = 0;                  // the smallest TTL along its CNAME chain
};

struct Answer {
    Question question;
    std::vector<Address> addresses;  // for question.name, through CNAMEs
};

// A response's addresses for the name it answers. At most 64 records read.
std::optional<Answer> parse_answer(std::string_view msg);

// The answer to a query ktproxy will not forward: the query's header and
// question with QR set, RA = RD, the given rcode and no records. Empty if the
// query has no parsable question, or one whose name does not survive the cut
// at the question's end (a pointer to labels past it).
std::string refusal(std::string_view query, uint8_t rcode);

// ktproxy's own answer to an A or AAAA query (fake mode): the query's header
// and question with QR, RA = RD, NOERROR and one record for the question's
// name (a pointer to it) holding addr with the given TTL; no record when addr
// is null (NODATA: the name exists, not this type). Empty if the query has
// no parsable question or addr's family is not the question's type.
std::string address_answer(std::string_view query, const Address* addr, uint32_t ttl);

// DNS over TCP (RFC 1035 4.2.2, RFC 7766 8): each message follows its length
// in two bytes, and several may follow each other on one connection.
struct TcpFrame {
    enum Status { need_more, whole, bad } status = need_more;
    std::string_view message;  // whole: the first message in the input
    size_t used = 0;           // whole: bytes it took, prefix included
};
// The first framed message of `in`. bad: a length shorter than a DNS header
// (12 bytes), which no message can be; the stream cannot be trusted after it.
TcpFrame take_tcp_message(std::string_view in);
// msg with its length in front; empty if it does not fit in 65535 bytes.
std::string frame_tcp_message(std::string_view msg);

}  // namespace ktp::dns
