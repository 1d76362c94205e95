// Upstream URL parsing. Errors quote the whole URL but never echo a password.
#include "upstream/upstream_url.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>

namespace ktp {

namespace {

// The URL with its password replaced, for error messages (the password is
// in the user's shell history already, but not in our logs).
std::string redact(std::string_view url)
{
    size_t scheme = url.find("://");
    size_t from = scheme == std::string_view::npos ? 0 : scheme + 3;
    size_t at = url.rfind('@');
    if (at == std::string_view::npos || at < from)
        return std::string(url);
    size_t colon = url.find(':', from);
    if (colon == std::string_view::npos || colon > at)
        return std::string(url);
    return fmt::format("{}***{}", url.substr(0, colon + 1), url.substr(at));
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

std::optional<std::string> percent_decode(std::string_view s)
{
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size())
            return std::nullopt;
        int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0)
            return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

// RFC 3986 unreserved characters pass; everything else is %XX, so that the
// redacted form parses back.
std::string percent_encode(std::string_view s)
{
    std::string out;
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~')
            out += c;
        else
            out += fmt::format("%{:02X}", u);
    }
    return out;
}

// A DNS name as resolvers accept it: labels of letters, digits, '-' and '_'
// (seen in service names), 1..63 bytes each, 253 in all.
bool valid_dns_name(std::string_view s)
{
    if (s.empty() || s.size() > 253)
        return false;
    size_t label = 0;
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (std::isalnum(u) || c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

std::string lower(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

}  // namespace

std::string UpstreamUrl::to_string_redacted() const
{
    if (kind == Kind::direct)
        return "direct";
    std::string s = kind == Kind::socks5 ? "socks5://" : "http://";
    if (!user.empty() || !password.empty()) {
        s += percent_encode(user);
        if (!password.empty())
            s += ":***";
        s += '@';
    }
    if (host.find(':') != std::string::npos)
        s += fmt::format("[{}]", host);
    else
        s += host;
    return fmt::format("{}:{}", s, port);
}

Result<UpstreamUrl> parse_upstream_url(std::string_view text)
{
    auto failure = [&](std::string why) {
        return ParseFailure{fmt::format("upstream URL '{}': {}", redact(text), why)};
    };

    UpstreamUrl u;
    size_t sep = text.find("://");
    std::string scheme = lower(text.substr(0, sep));
    if (sep == std::string_view::npos) {
        if (scheme == "direct")
            return u;
        return failure("expected SCHEME://HOST:PORT (socks5://, http:// or direct)");
    }
    std::string_view rest = text.substr(sep + 3);
    if (scheme == "direct") {
        if (!rest.empty())
            return failure("direct:// takes no host or port");
        return u;
    }
    if (scheme == "socks5") {
        u.kind = UpstreamUrl::Kind::socks5;
        u.port = kDefaultSocks5Port;
    } else if (scheme == "http") {
        u.kind = UpstreamUrl::Kind::http;
        u.port = kDefaultHttpPort;
    } else {
        return failure(fmt::format("unknown scheme '{}' (use socks5://, http:// or direct)", scheme));
    }

    // Options: ?pool=N&pool-age=SECONDS&optimistic=on|off&tfo=on|off.
    // After the user info: a password may hold a '?'.
    size_t info_end = rest.rfind('@');
    if (size_t q = rest.find('?', info_end == std::string_view::npos ? 0 : info_end); q != std::string_view::npos) {
        std::string_view query = rest.substr(q + 1);
        rest = rest.substr(0, q);
        while (!query.empty()) {
            size_t amp = query.find('&');
            std::string_view kv = query.substr(0, amp);
            query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
            size_t eq = kv.find('=');
            std::string_view key = kv.substr(0, eq);
            std::string value(eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1));
            auto number = [&](double lo, double hi) -> std::optional<double> {
                char* end = nullptr;
                double v = value.empty() ? -1 : std::strtod(value.c_str(), &end);
                if (value.empty() || *end != '\0' || !(v >= lo && v <= hi))
                    return std::nullopt;
                return v;
            };
            if (key == "pool") {
                auto v = number(0, UpstreamUrl::kMaxPool);
                if (!v || *v != static_cast<unsigned>(*v))
                    return failure(fmt::format("bad pool={} (expected 0-{} sessions)", value, UpstreamUrl::kMaxPool));
                u.pool = static_cast<unsigned>(*v);
            } else if (key == "pool-age") {
                auto v = number(0.1, 86400);
                if (!v)
                    return failure(fmt::format("bad pool-age={} (expected 0.1-86400 seconds)", value));
                u.pool_age = *v;
            } else if (key == "optimistic" || key == "tfo") {
                bool& flag = key == "tfo" ? u.tfo : u.optimistic;
                if (value == "on" || value == "1" || value == "true")
                    flag = true;
                else if (value == "off" || value == "0" || value == "false")
                    flag = false;
                else
                    return failure(fmt::format("bad {}={} (expected on or off)", key, value));
            } else {
                return failure(fmt::format("unknown option '{}' (known: pool, pool-age, optimistic, tfo)", key));
            }
        }
    }

    // One trailing slash is how URLs are often written; a path means nothing here.
    if (!rest.empty() && rest.back() == '/')
        rest.remove_suffix(1);
    if (rest.find_first_of("/#") != std::string_view::npos)
        return failure("a proxy URL has no path or fragment");

    // The last '@' ends the user info, so an unescaped '@' in a password works.
    size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
        std::string_view info = rest.substr(0, at);
        rest = rest.substr(at + 1);
        size_t colon = info.find(':');
        auto user = percent_decode(info.substr(0, colon));
        auto pass = colon == std::string_view::npos ? std::optional<std::string>("")
                                                    : percent_decode(info.substr(colon + 1));
        if (!user || !pass)
            return failure("bad %-escape in user or password (use %XX with two hex digits)");
        if (user->empty() && !pass->empty())
            return failure("a password needs a user name");
        u.user = std::move(*user);
        u.password = std::move(*pass);
    }

    std::string_view host, port;
    bool has_port = false;
    if (!rest.empty() && rest.front() == '[') {
        size_t close = rest.find(']');
        if (close == std::string_view::npos)
            return failure("missing ']' after the IPv6 address");
        host = rest.substr(1, close - 1);
        std::string_view after = rest.substr(close + 1);
        if (!after.empty() && after.front() != ':')
            return failure(fmt::format("unexpected '{}' after ']'", after));
        has_port = !after.empty();
        if (has_port)
            port = after.substr(1);
        in6_addr a6{};
        if (inet_pton(AF_INET6, std::string(host).c_str(), &a6) != 1)
            return failure(fmt::format("'{}' is not an IPv6 address", host));
        u.host = lower(host);
    } else {
        size_t colon = rest.rfind(':');
        host = rest.substr(0, colon);
        has_port = colon != std::string_view::npos;
        if (has_port)
            port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return failure("put an IPv6 address in brackets, e.g. socks5://[fd00::1]:1080");
        if (host.empty())
            return failure("missing host");
        if (!valid_dns_name(host))
            return failure(fmt::format("'{}' is not a valid host name or address", host));
        u.host = lower(host);
    }
    if (u.host.empty())
        return failure("missing host");

    if (has_port) {
        if (port.empty() || port.size() > 5 ||
            !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return failure(fmt::format("bad port '{}' (expected 1-65535)", port));
        unsigned long p = std::stoul(std::string(port));
        if (p < 1 || p > 65535)
            return failure(fmt::format("bad port '{}' (expected 1-65535)", port));
        u.port = static_cast<uint16_t>(p);
    }
    return u;
}

}  // namespace ktp
