// DNS message parsing: every read is bounds-checked against the message.
#include "dns/dns_message.h"

#include <algorithm>

namespace ktp::dns {
namespace {

constexpr size_t kHeader = 12;
constexpr size_t kMaxName = 255;  // wire length, RFC 1035 2.3.4
constexpr int kMaxRecords = 64;

struct Reader {
    std::string_view m;
    size_t pos = 0;

    bool u8(uint8_t& v)
    {
        if (pos + 1 > m.size())
            return false;
        v = uint8_t(m[pos++]);
        return true;
    }
    bool u16(uint16_t& v)
    {
        if (pos + 2 > m.size())
            return false;
        v = uint16_t(uint8_t(m[pos]) << 8 | uint8_t(m[pos + 1]));
        pos += 2;
        return true;
    }
    bool u32(uint32_t& v)
    {
        uint16_t hi, lo;
        if (!u16(hi) || !u16(lo))
            return false;
        v = uint32_t(hi) << 16 | lo;
        return true;
    }

    // A possibly compressed name, lowercased, dot-separated. Each pointer
    // must point before the label that holds it: a chain of them strictly
    // decreases, so it ends.
    bool name(std::string& out)
    {
        out.clear();
        size_t at = pos, wire = 0;
        bool jumped = false;
        for (;;) {
            if (at >= m.size())
                return false;
            uint8_t len = uint8_t(m[at]);
            if ((len & 0xc0) == 0xc0) {
                if (at + 2 > m.size())
                    return false;
                size_t target = size_t(len & 0x3f) << 8 | uint8_t(m[at + 1]);
                // Backwards only (so chains end), and never into the
                // header, which holds no names.
                if (target >= at || target < kHeader)
                    return false;
                if (!jumped)
                    pos = at + 2;
                jumped = true;
                at = target;
                continue;
            }
            if (len & 0xc0)
                return false;  // the 0x40/0x80 label types are obsolete
            wire += len + 1;
            if (wire > kMaxName || at + 1 + len > m.size())
                return false;
            if (len == 0) {
                if (!jumped)
                    pos = at + 1;
                return true;
            }
            if (!out.empty())
                out += '.';
            for (size_t i = 0; i < len; ++i) {
                char c = m[at + 1 + i];
                out += (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
            }
            at += 1 + len;
        }
    }
};

}  // namespace

std::optional<Question> parse_question(std::string_view msg)
{
    Reader r{msg};
    Question q;
    uint16_t flags, qd, an, ns, ar;
    if (!r.u16(q.id) || !r.u16(flags) || !r.u16(qd) || !r.u16(an) || !r.u16(ns) || !r.u16(ar))
        return std::nullopt;
    if (qd < 1)
        return std::nullopt;
    q.response = flags & 0x8000;
    q.rcode = flags & 0x0f;
    if (!r.name(q.name) || !r.u16(q.qtype) || !r.u16(q.qclass))
        return std::nullopt;
    q.end = r.pos;
    return q;
}

std::optional<Answer> parse_answer(std::string_view msg)
{
    auto q = parse_question(msg);
    if (!q || !q->response)
        return std::nullopt;
    Answer a;
    a.question = *q;
    uint16_t qd = uint16_t(uint8_t(msg[4]) << 8 | uint8_t(msg[5]));
    uint16_t an = uint16_t(uint8_t(msg[6]) << 8 | uint8_t(msg[7]));
    Reader r{msg, q->end};
    std::string skip;
    for (uint16_t i = 1; i < qd; ++i) {
        uint16_t t, c;
        if (!r.name(skip) || !r.u16(t) || !r.u16(c))
            return std::nullopt;
    }
    // The names that stand for the question: itself and every CNAME target
    // reached from it (answers list the chain in order, RFC 1034 4.3.2), each
    // with the smallest TTL on the way.
    std::vector<std::pair<std::string, uint32_t>> aliases{{q->name, UINT32_MAX}};
    std::string owner, target;
    for (int i = 0; i < std::min<int>(an, kMaxRecords); ++i) {
        uint16_t type, cls, rdlen;
        uint32_t ttl;
        if (!r.name(owner) || !r.u16(type) || !r.u16(cls) || !r.u32(ttl) || !r.u16(rdlen))
            return std::nullopt;
        if (r.pos + rdlen > msg.size())
            return std::nullopt;
        const size_t rdata = r.pos;
        auto it = std::find_if(aliases.begin(), aliases.end(), [&](const auto& p) { return p.first == owner; });
        if (it != aliases.end() && cls == 1) {
            uint32_t chain_ttl = std::min(it->second, ttl);
            if (type == kTypeCname) {
                Reader t{msg, rdata};
                if (!t.name(target) || t.pos > rdata + rdlen)
                    return std::nullopt;
                if (aliases.size() < 16)
                    aliases.emplace_back(target, chain_ttl);
            } else if ((type == kTypeA && rdlen == 4) || (type == kTypeAaaa && rdlen == 16)) {
                Address ad;
                ad.v6 = type == kTypeAaaa;
                std::copy_n(msg.data() + rdata, rdlen, ad.bytes.begin());
                ad.ttl = chain_ttl;
                a.addresses.push_back(ad);
            }
        }
        r.pos = rdata + rdlen;
    }
    return a;
}

std::string refusal(std::string_view query, uint8_t rcode)
{
    auto q = parse_question(query);
    if (!q || q->response)
        return {};
    std::string out(query.substr(0, q->end));
    const bool rd = uint8_t(out[2]) & 0x01;
    // QR, the query's opcode and RD; RA as RD; the rcode.
    out[2] = char(0x80 | (uint8_t(out[2]) & 0x79));
    out[3] = char((rd ? 0x80 : 0) | (rcode & 0x0f));
    out[4] = 0, out[5] = 1;  // one question: the first
    for (int i = 6; i < 12; ++i)
        out[i] = 0;
    // The question is copied, not rebuilt: a name whose pointer reaches a
    // label that runs past the question (it parsed in the whole query) would
    // not parse in the reply. No resolver sends such a query: no answer.
    if (auto back = parse_question(out); !back || back->name != q->name)
        return {};
    return out;
}

std::string address_answer(std::string_view query, const Address* addr, uint32_t ttl)
{
    std::string out = refusal(query, 0);
    if (out.empty())
        return out;
    auto q = parse_question(out);
    if (!addr)
        return out;
    if (q->qclass != 1 || q->qtype != (addr->v6 ? kTypeAaaa : kTypeA))
        return {};
    out[6] = 0, out[7] = 1;  // one answer
    const size_t len = addr->v6 ? 16 : 4;
    // The owner: a pointer to the question's name, just past the header.
    out += char(0xc0);
    out += char(12);
    out += char(q->qtype >> 8);
    out += char(q->qtype & 0xff);
    out += char(0), out += char(1);  // class IN
    for (int shift = 24; shift >= 0; shift -= 8)
        out += char(ttl >> shift & 0xff);
    out += char(0), out += char(len);
    out.append(reinterpret_cast<const char*>(addr->bytes.data()), len);
    return out;
}

TcpFrame take_tcp_message(std::string_view in)
{
    TcpFrame f;
    if (in.size() < 2)
        return f;
    const size_t len = size_t(uint8_t(in[0])) << 8 | uint8_t(in[1]);
    if (len < kHeader) {
        f.status = TcpFrame::bad;
        return f;
    }
    if (in.size() < 2 + len)
        return f;
    f.status = TcpFrame::whole;
    f.message = in.substr(2, len);
    f.used = 2 + len;
    return f;
}

std::string frame_tcp_message(std::string_view msg)
{
    if (msg.size() > 65535)
        return {};
    std::string out;
    out.reserve(2 + msg.size());
    out += char(msg.size() >> 8);
    out += char(msg.size() & 0xff);
    out.append(msg);
    return out;
}

}  // namespace ktp::dns
