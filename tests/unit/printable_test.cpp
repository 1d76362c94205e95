// Untrusted bytes as one line of text (base/printable.h).
#include "base/printable.h"

#include <catch2/catch.hpp>

using namespace ktp;
using namespace std::string_literals;

TEST_CASE("printable keeps printable ASCII and a space as they are")
{
    CHECK(printable("GET / HTTP/1.1 ~{}") == "GET / HTTP/1.1 ~{}");
    CHECK(printable("") == "");
}

TEST_CASE("printable writes control bytes and DEL as \\xHH whatever the rules")
{
    CHECK(printable("a\nb\r\x1b[2J\t"s + '\0' + "\x7f") == "a\\x0ab\\x0d\\x1b[2J\\x09\\x00\\x7f");
    PrintableRules lax{.space = true, .high = true};
    for (int c = 0; c < 0x20; ++c)
        CHECK_FALSE(printable_keeps(static_cast<unsigned char>(c), lax));
    CHECK_FALSE(printable_keeps(0x7f, lax));
}

TEST_CASE("printable escapes bytes past ASCII unless the text is UTF-8 a person wrote")
{
    CHECK(printable("caf\xc3\xa9 \xff") == "caf\\xc3\\xa9 \\xff");
    CHECK(printable("caf\xc3\xa9", {.high = true}) == "caf\xc3\xa9");
}

TEST_CASE("printable escapes a space, a quote or a backslash only when asked")
{
    CHECK(printable("say \"a\\b\"") == "say \"a\\b\"");
    CHECK(printable("say \"a\\b\"", {.escaped = "\"\\"}) == "say \\x22a\\x5cb\\x22");
    CHECK(printable("a b", {.space = false}) == "a\\x20b");
    CHECK(printable_keeps('"', {}));
    CHECK_FALSE(printable_keeps('"', {.escaped = "\""}));
}

TEST_CASE("printable looks at no more than the limit, counted in input bytes")
{
    CHECK(printable("SSH-2.0-OpenSSH_9.2", {.limit = 16}) == "SSH-2.0-OpenSSH_");
    CHECK(printable("\x01\x02\x03", {.limit = 2}) == "\\x01\\x02");
    CHECK(printable("abc", {.limit = 0}) == "");
    CHECK(printable("abc", {.limit = 10}) == "abc");
}
