// HTTP CONNECT client handshake. The response is parsed from the start of the
// unconsumed bytes on every feed; nothing is consumed until the whole header
// block (ending in a blank line) is there, so later bytes stay tunnel data.
#include "upstream/http_connect.h"

#include "base/printable.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace ktp {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The first bytes of a reply, for "answered garbage" messages that quote them.
constexpr PrintableRules kReplyPrefix{.escaped = "\"\\", .limit = 16};

// The reason phrase as one printable line, bounded.
std::string clean_reason(std::string_view s)
{
    std::string out = printable(s, {.limit = 100});
    while (!out.empty() && out.back() == ' ')
        out.pop_back();
    return out;
}

// Header names and values go on the wire verbatim: refuse anything that
// could end a line or the request early (header injection via a domain).
bool safe_for_header(std::string_view s)
{
    return std::none_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

struct Line {
    std::string_view text;  // without the line ending
    size_t next = 0;        // offset just past the line ending
};

// A line ending in LF (with an optional CR before it) at or after `from`;
// nullopt when no LF is there yet.
std::optional<Line> line_at(std::string_view in, size_t from)
{
    size_t lf = in.find('\n', from);
    if (lf == std::string_view::npos)
        return std::nullopt;
    size_t end = lf > from && in[lf - 1] == '\r' ? lf - 1 : lf;
    return Line{in.substr(from, end - from), lf + 1};
}

}  // namespace

std::string base64_encode(std::string_view in)
{
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
        out += kAlphabet[v >> 18 & 63];
        out += kAlphabet[v >> 12 & 63];
        out += kAlphabet[v >> 6 & 63];
        out += kAlphabet[v & 63];
    }
    size_t rest = in.size() - i;
    if (rest > 0) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16;
        if (rest == 2)
            v |= uint32_t(uint8_t(in[i + 1])) << 8;
        out += kAlphabet[v >> 18 & 63];
        out += kAlphabet[v >> 12 & 63];
        out += rest == 2 ? kAlphabet[v >> 6 & 63] : '=';
        out += '=';
    }
    return out;
}

HttpConnectHandshake::HttpConnectHandshake(std::string user, std::string password, Target target)
    : user_(std::move(user)), password_(std::move(password)), target_(std::move(target))
{
}

HandshakeStep HttpConnectHandshake::fail(std::string error)
{
    state_ = State::failed;
    return step_failed(std::move(error));
}

HandshakeStep HttpConnectHandshake::start()
{
    if (state_ != State::init)
        return fail("http connect: handshake started twice");
    // The port always comes from the address, even when the domain is sent.
    SockAddr a = target_.addr.unmapped();
    if (a.family() != AF_INET && a.family() != AF_INET6)
        return fail("http connect: no destination address to CONNECT to");
    std::string host;
    if (!target_.domain.empty()) {
        if (!safe_for_header(target_.domain) || target_.domain.size() > 255)
            return fail(fmt::format("http connect: domain '{}' cannot be sent in a request line",
                                    clean_reason(target_.domain)));
        host = target_.domain;
    } else if (a.family() == AF_INET) {
        host = a.ip_string();
    } else {
        host = "[" + a.ip_string() + "]";
    }
    // RFC 7617: the user-id of Basic credentials cannot contain a colon.
    if (user_.find(':') != std::string::npos)
        return fail("http connect: a username with ':' cannot be sent with Basic authentication");

    std::string authority = fmt::format("{}:{}", host, a.port());
    std::string req = fmt::format("CONNECT {} HTTP/1.1\r\nHost: {}\r\n", authority, authority);
    if (!user_.empty() || !password_.empty())
        req += fmt::format("Proxy-Authorization: Basic {}\r\n", base64_encode(user_ + ":" + password_));
    req += "\r\n";
    // Only when asked (optimistic=on): a proxy may read past the request.
    req += early_;
    early_out_ = !early_.empty();
    state_ = State::response;
    return step_send(std::move(req), 0);
}

HandshakeStep HttpConnectHandshake::feed(std::string_view in)
{
    if (state_ == State::init)
        return fail("http connect: reply before the handshake started");
    if (state_ != State::response)
        return fail("http connect: handshake already finished");

    // Interim 1xx responses may precede the final one; skip them whole.
    size_t pos = 0;
    for (;;) {
        // Catch a non-HTTP upstream (say, a SOCKS server) on its first bytes
        // instead of waiting for a line ending that never comes.
        static constexpr std::string_view kPrefix = "HTTP/1.";
        std::string_view head = in.substr(pos, kPrefix.size());
        if (head != kPrefix.substr(0, head.size()))
            return fail(fmt::format("http upstream answered garbage: \"{}\"", printable(in.substr(pos), kReplyPrefix)));

        auto status = line_at(in, pos);
        if (!status) {
            if (in.size() >= kMaxHeader)
                return fail("http upstream sent a response header over 16 KiB");
            return step_need_more();
        }
        // "HTTP/1.x NNN[ reason]"
        if (status->next > kMaxHeader)
            return fail("http upstream sent a response header over 16 KiB");
        std::string_view s = status->text;
        if (s.size() < 12 || !is_digit(s[7]) || s[8] != ' ' || !is_digit(s[9]) || !is_digit(s[10]) ||
            !is_digit(s[11]) || (s.size() > 12 && s[12] != ' '))
            return fail(fmt::format("http upstream answered garbage: \"{}\"", printable(s, kReplyPrefix)));
        int code = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
        std::string reason = clean_reason(s.size() > 13 ? s.substr(13) : std::string_view{});
        // A refusal is final on its status line: the proxy may close without
        // finishing the headers, and the code is what the user needs to see.
        // 407 is about us (credentials); other refusals about the destination.
        target_refused_ = (code < 100 || code >= 300) && code != 407;
        if (code < 100 || code >= 300)
            return fail(reason.empty() ? fmt::format("http upstream refused CONNECT: {:03d}", code)
                                       : fmt::format("http upstream refused CONNECT: {:03d} {}", code, reason));

        // Headers up to the blank line; their content does not matter to a
        // CONNECT client (a 2xx body is the tunnel, RFC 9110 9.3.6).
        size_t at = status->next;
        for (;;) {
            auto line = line_at(in, at);
            if (!line) {
                if (in.size() >= kMaxHeader)
                    return fail("http upstream sent a response header over 16 KiB");
                return step_need_more();
            }
            at = line->next;
            if (at > kMaxHeader)
                return fail("http upstream sent a response header over 16 KiB");
            if (line->text.empty())
                break;
        }

        if (code >= 100 && code < 200) {
            pos = at;
            continue;
        }
        state_ = State::done;
        return step_done(at);
    }
}

}  // namespace ktp
