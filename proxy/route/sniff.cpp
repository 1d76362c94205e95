// Domain sniffing. Every length read from the input is checked against the
// bytes actually present before use; decisions depend only on the bytes seen,
// so a longer prefix of the same stream never turns `none` into `found`.
#include "route/sniff.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>

namespace ktp {

namespace {

SniffResult need_more() { return {SniffResult::need_more, {}}; }
SniffResult none() { return {SniffResult::none, {}}; }

SniffResult found_or_none(std::string_view name)
{
    std::string d = valid_sniffed_name(name);
    if (d.empty())
        return none();
    return {SniffResult::found, std::move(d)};
}

// Bounds-checked big-endian reader over one buffer; any short read sets
// ok = false and every later read returns zero/empty.
class Reader {
public:
    explicit Reader(std::string_view s) : s_(s) {}
    bool ok() const { return ok_; }
    size_t left() const { return s_.size() - pos_; }

    uint32_t u8() { return take(1).empty() ? 0 : static_cast<uint8_t>(s_[pos_ - 1]); }
    uint32_t u16()
    {
        std::string_view b = take(2);
        return b.empty() ? 0 : uint32_t(uint8_t(b[0])) << 8 | uint8_t(b[1]);
    }
    std::string_view take(size_t n)
    {
        if (!ok_ || n > left()) {
            ok_ = false;
            return {};
        }
        std::string_view out = s_.substr(pos_, n);
        pos_ += n;
        return out;
    }

private:
    std::string_view s_;
    size_t pos_ = 0;
    bool ok_ = true;
};

// The ClientHello body (after the 4-byte handshake header), RFC 8446 4.1.2.
SniffResult parse_client_hello(std::string_view body)
{
    Reader r(body);
    r.take(2);   // legacy_version
    r.take(32);  // random
    uint32_t sid = r.u8();
    if (sid > 32)
        return none();
    r.take(sid);
    uint32_t suites = r.u16();
    if (suites < 2 || suites % 2 != 0)
        return none();
    r.take(suites);
    uint32_t compression = r.u8();
    if (compression < 1)
        return none();
    r.take(compression);
    if (!r.ok() || r.left() == 0)
        return none();  // no extensions: no SNI
    Reader exts(r.take(r.u16()));
    if (!r.ok())
        return none();
    while (exts.ok() && exts.left() >= 4) {
        uint32_t type = exts.u16();
        std::string_view data = exts.take(exts.u16());
        if (!exts.ok())
            return none();
        if (type != 0)  // server_name, RFC 6066 section 3
            continue;
        Reader sn(data);
        Reader list(sn.take(sn.u16()));
        while (sn.ok() && list.ok() && list.left() >= 3) {
            uint32_t name_type = list.u8();
            std::string_view name = list.take(list.u16());
            if (!list.ok())
                return none();
            if (name_type == 0)  // host_name
                return found_or_none(name);
        }
        return none();
    }
    return none();
}

// Handshake messages may span several records: reassemble the first one from
// consecutive handshake records, never beyond kSniffTlsCap input bytes.
SniffResult sniff_tls(std::string_view in)
{
    std::string hs;
    size_t pos = 0;
    for (;;) {
        std::string_view rec = in.substr(pos);
        if (rec.size() >= 1 && static_cast<uint8_t>(rec[0]) != 0x16)
            return none();
        if (rec.size() >= 2 && static_cast<uint8_t>(rec[1]) != 0x03)
            return none();
        if (rec.size() < 5)
            return need_more();
        size_t len = size_t(uint8_t(rec[3])) << 8 | uint8_t(rec[4]);
        if (len == 0 || pos + 5 + len > kSniffTlsCap)
            return none();
        if (rec.size() < 5 + len)
            return need_more();
        hs.append(rec.substr(5, len));
        pos += 5 + len;

        if (static_cast<uint8_t>(hs[0]) != 0x01)  // client_hello
            return none();
        if (hs.size() < 4)
            continue;
        size_t hs_len = size_t(uint8_t(hs[1])) << 16 | size_t(uint8_t(hs[2])) << 8 | uint8_t(hs[3]);
        // Each further record costs at least 5 header bytes; a message that
        // cannot fit within the cap is not worth waiting for.
        if (4 + hs_len > kSniffTlsCap)
            return none();
        if (hs.size() >= 4 + hs_len)
            return parse_client_hello(std::string_view(hs).substr(4, hs_len));
    }
}

bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim_ows(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// The host part of a Host header value ("example.com:8080" -> "example.com").
// IP literals name no domain: "[fd00::1]:80" gives none.
SniffResult host_from_header(std::string_view v)
{
    v = trim_ows(v);
    if (!v.empty() && v.front() == '[')
        return none();
    size_t colon = v.find(':');
    if (colon != std::string_view::npos) {
        std::string_view port = v.substr(colon + 1);
        if (port.empty() || port.size() > 5 ||
            !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return none();
        v = v.substr(0, colon);
    }
    return found_or_none(v);
}

SniffResult sniff_http(std::string_view in)
{
    // Only the first kSniffHttpCap bytes count, so the answer for a stream
    // never depends on how much of it arrived beyond that.
    std::string_view head = in.substr(0, kSniffHttpCap);
    auto next_line = [&](size_t from, std::string_view& line) -> std::optional<size_t> {
        size_t lf = head.find('\n', from);
        if (lf == std::string_view::npos)
            return std::nullopt;
        size_t end = lf > from && head[lf - 1] == '\r' ? lf - 1 : lf;
        line = head.substr(from, end - from);
        return lf + 1;
    };
    auto incomplete = [&] { return in.size() >= kSniffHttpCap ? none() : need_more(); };

    std::string_view line;
    auto at = next_line(0, line);
    if (!at)
        return incomplete();
    // "METHOD target HTTP/1.x"
    static constexpr std::string_view kVersion = " HTTP/1.";
    if (line.size() < kVersion.size() + 1 ||
        line.substr(line.size() - 1 - kVersion.size(), kVersion.size()) != kVersion ||
        !std::isdigit(static_cast<unsigned char>(line.back())))
        return none();

    std::optional<std::string_view> host;
    for (;;) {
        at = next_line(*at, line);
        if (!at)
            return incomplete();
        if (line.empty())
            break;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos || !iequals(line.substr(0, colon), "host"))
            continue;
        if (host)
            return none();  // two Host headers: ambiguous, servers reject it (RFC 9112 3.2)
        host = line.substr(colon + 1);
    }
    if (!host)
        return none();
    return host_from_header(*host);
}

}  // namespace

std::string valid_sniffed_name(std::string_view name)
{
    if (!name.empty() && name.back() == '.')
        name.remove_suffix(1);
    if (name.empty() || name.size() > 253)
        return {};
    size_t label = 0;
    bool all_numeric = true;
    std::string out;
    out.reserve(name.size());
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (c == '.') {
            if (label == 0)
                return {};
            label = 0;
        } else if (std::isalnum(u) || c == '-') {
            if (++label > 63)
                return {};
            all_numeric &= std::isdigit(u) != 0;
        } else {
            return {};
        }
        out += static_cast<char>(std::tolower(u));
    }
    // An IPv4 literal (or any all-numeric name, which no TLD is) is not a domain.
    if (label == 0 || all_numeric)
        return {};
    return out;
}

SniffResult sniff_domain(std::string_view in)
{
    if (in.empty())
        return need_more();
    if (static_cast<uint8_t>(in[0]) == 0x16)
        return sniff_tls(in);
    // An HTTP method is an upper-case token (1..kMaxMethod letters, longer
    // than any registered method) followed by a space.
    constexpr size_t kMaxMethod = 20;
    size_t n = 0;
    while (n < in.size() && n <= kMaxMethod && is_upper(in[n]))
        ++n;
    if (n > kMaxMethod)
        return none();
    if (n == in.size())
        return need_more();
    if (n == 0 || in[n] != ' ')
        return none();
    return sniff_http(in);
}

}  // namespace ktp
