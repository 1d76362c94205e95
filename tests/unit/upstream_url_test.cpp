// Upstream URLs: schemes, hosts, ports, credentials, and one-line errors that
// never echo a password.
#include "upstream/upstream_url.h"

#include <catch2/catch.hpp>

#include <string>

using namespace ktp;

namespace {

UpstreamUrl parse_ok(std::string_view text)
{
    auto r = parse_upstream_url(text);
    if (auto* f = std::get_if<ParseFailure>(&r))
        FAIL("unexpected failure: " << f->message);
    return std::get<UpstreamUrl>(r);
}

std::string parse_err(std::string_view text)
{
    auto r = parse_upstream_url(text);
    auto* f = std::get_if<ParseFailure>(&r);
    REQUIRE(f);
    CHECK(f->message.find('\n') == std::string::npos);
    return f->message;
}

}  // namespace

TEST_CASE("socks5 URL with credentials, host and port")
{
    UpstreamUrl u = parse_ok("socks5://alice:s3cret@10.0.0.5:1081");
    CHECK(u.kind == UpstreamUrl::Kind::socks5);
    CHECK(u.host == "10.0.0.5");
    CHECK(u.port == 1081);
    CHECK(u.user == "alice");
    CHECK(u.password == "s3cret");
}

TEST_CASE("default ports are 1080 for socks5 and 8080 for http")
{
    CHECK(parse_ok("socks5://proxy.lan").port == 1080);
    UpstreamUrl h = parse_ok("http://proxy.lan");
    CHECK(h.kind == UpstreamUrl::Kind::http);
    CHECK(h.port == 8080);
}

TEST_CASE("direct is written direct or direct://")
{
    CHECK(parse_ok("direct").kind == UpstreamUrl::Kind::direct);
    CHECK(parse_ok("direct://").kind == UpstreamUrl::Kind::direct);
    CHECK(parse_ok("DIRECT").kind == UpstreamUrl::Kind::direct);
    CHECK(parse_err("direct://10.0.0.1:80") == "upstream URL 'direct://10.0.0.1:80': direct:// takes no host or port");
}

TEST_CASE("IPv6 hosts go in brackets and are stored without them")
{
    UpstreamUrl u = parse_ok("http://[fd00::1]:3128");
    CHECK(u.host == "fd00::1");
    CHECK(u.port == 3128);
    CHECK(parse_ok("socks5://[FD00::1]").host == "fd00::1");
    CHECK(parse_err("socks5://fd00::1:1080") ==
          "upstream URL 'socks5://fd00::1:1080': put an IPv6 address in brackets, e.g. socks5://[fd00::1]:1080");
    CHECK(parse_err("socks5://[fd00::1").find("missing ']'") != std::string::npos);
    CHECK(parse_err("socks5://[10.0.0.1]:1").find("is not an IPv6 address") != std::string::npos);
    CHECK(parse_err("socks5://[fd00::1]x").find("after ']'") != std::string::npos);
}

TEST_CASE("DNS host names are kept as lowercase strings for later resolution")
{
    CHECK(parse_ok("socks5://Proxy.Corp.Example:1080").host == "proxy.corp.example");
    CHECK(parse_ok("http://squid").host == "squid");
    CHECK(parse_err("socks5://bad host:1").find("not a valid host") != std::string::npos);
    CHECK(parse_err("socks5://a..b:1").find("not a valid host") != std::string::npos);
    CHECK(parse_err("socks5://" + std::string(254, 'a')).find("not a valid host") != std::string::npos);
}

TEST_CASE("the scheme is case-insensitive")
{
    CHECK(parse_ok("SOCKS5://h").kind == UpstreamUrl::Kind::socks5);
    CHECK(parse_ok("Http://h").kind == UpstreamUrl::Kind::http);
}

TEST_CASE("user and password are percent-decoded")
{
    UpstreamUrl u = parse_ok("socks5://us%65r:p%40ss%3Aw%2fo%25rd@h:1");
    CHECK(u.user == "user");
    CHECK(u.password == "p@ss:w/o%rd");
}

TEST_CASE("an unescaped '@' in the password still works: the last '@' ends the user info")
{
    UpstreamUrl u = parse_ok("socks5://bob:p@ss@h:1");
    CHECK(u.user == "bob");
    CHECK(u.password == "p@ss");
    CHECK(u.host == "h");
}

TEST_CASE("a user without a password is allowed, a password without a user is not")
{
    UpstreamUrl u = parse_ok("http://bob@h");
    CHECK(u.user == "bob");
    CHECK(u.password.empty());
    CHECK(parse_err("http://:pw@h").find("needs a user name") != std::string::npos);
}

TEST_CASE("bad percent-escapes are errors")
{
    for (const char* bad : {"socks5://a%4@h", "socks5://a%zz@h", "socks5://a:%@h", "socks5://a:b%4@h"})
        CHECK(parse_err(bad).find("bad %-escape") != std::string::npos);
}

TEST_CASE("unknown schemes name the scheme and the choices")
{
    CHECK(parse_err("ftp://x") == "upstream URL 'ftp://x': unknown scheme 'ftp' (use socks5://, http:// or direct)");
    CHECK(parse_err("https://x").find("unknown scheme 'https'") != std::string::npos);
    CHECK(parse_err("10.0.0.1:1080") ==
          "upstream URL '10.0.0.1:1080': expected SCHEME://HOST:PORT (socks5://, http:// or direct)");
    CHECK(parse_err("").find("expected SCHEME://") != std::string::npos);
}

TEST_CASE("ports must be 1-65535 and only digits")
{
    for (const char* bad : {"socks5://h:0", "socks5://h:65536", "socks5://h:99999999999", "socks5://h:",
                            "socks5://h:-1", "socks5://h:1a", "socks5://[::1]:", "socks5://h: 80"})
        CHECK(parse_err(bad).find("bad port") != std::string::npos);
    CHECK(parse_ok("socks5://h:65535").port == 65535);
    CHECK(parse_ok("socks5://h:1").port == 1);
}

TEST_CASE("a missing host is an error")
{
    CHECK(parse_err("socks5://").find("missing host") != std::string::npos);
    CHECK(parse_err("socks5://:1080").find("missing host") != std::string::npos);
    CHECK(parse_err("socks5://u:p@").find("missing host") != std::string::npos);
    CHECK(parse_err("socks5://[]:1").find("not an IPv6 address") != std::string::npos);
}

TEST_CASE("one trailing slash is accepted, a path is not")
{
    CHECK(parse_ok("http://h:3128/").port == 3128);
    CHECK(parse_err("http://h:3128/proxy").find("no path") != std::string::npos);
    CHECK(parse_err("http://h?x=1").find("unknown option 'x'") != std::string::npos);
}

TEST_CASE("warm-session and optimistic-data options after '?'")
{
    UpstreamUrl d = parse_ok("socks5://h:1080");
    CHECK(d.pool == UpstreamUrl::kDefaultPool);
    CHECK_FALSE(d.optimistic);  // microsocks drops bytes behind its request (upstream_url.h)
    CHECK(parse_ok("socks5://h?optimistic=on").optimistic);
    CHECK_FALSE(d.tfo);
    CHECK(parse_ok("socks5://h?tfo=on").tfo);
    UpstreamUrl u = parse_ok("socks5://u:p%3Fq@h:1080?pool=0&pool-age=2.5&optimistic=off");
    CHECK(u.pool == 0);
    CHECK(u.pool_age == 2.5);
    CHECK_FALSE(u.optimistic);
    CHECK(u.password == "p?q");
    CHECK(parse_ok("socks5://u:p?q@h:1080?pool=2").password == "p?q");  // a '?' in the password is not the query
    CHECK(parse_ok("http://h:3128?optimistic=on").optimistic);
    CHECK(parse_err("socks5://h?pool=65").find("bad pool=65") != std::string::npos);
    CHECK(parse_err("socks5://h?pool=1.5").find("bad pool") != std::string::npos);
    CHECK(parse_err("socks5://h?pool-age=0").find("bad pool-age") != std::string::npos);
    CHECK(parse_err("socks5://h?optimistic=maybe").find("bad optimistic") != std::string::npos);
}

TEST_CASE("errors never echo the password")
{
    std::string e = parse_err("ftp://alice:hunter2@h:1");
    CHECK(e.find("hunter2") == std::string::npos);
    CHECK(e.find("alice:***@h:1") != std::string::npos);
    CHECK(parse_err("socks5://alice:hunter2@h:0").find("hunter2") == std::string::npos);
}

TEST_CASE("to_string_redacted hides the password and parses back to the same upstream")
{
    UpstreamUrl u = parse_ok("socks5://al%20ice:s3cret@[fd00::5]:1080");
    CHECK(u.to_string_redacted() == "socks5://al%20ice:***@[fd00::5]:1080");
    UpstreamUrl back = parse_ok(u.to_string_redacted());
    CHECK(back.user == u.user);
    CHECK(back.host == u.host);
    CHECK(back.port == u.port);
    CHECK(parse_ok("http://h").to_string_redacted() == "http://h:8080");
    CHECK(parse_ok("http://bob@h").to_string_redacted() == "http://bob@h:8080");
    CHECK(parse_ok("direct").to_string_redacted() == "direct");
}
