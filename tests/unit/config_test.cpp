// --config files: the strict TOML reader, the check against the options, and
// what parse_command_line makes of a file (exit status 2, file and line named).
#include "config/config_file.h"
#include "config/options.h"
#include "config/toml.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

using namespace ktp;

namespace {

std::vector<TomlEntry> entries(std::string_view text)
{
    auto r = parse_toml(text);
    if (auto* f = std::get_if<ParseFailure>(&r))
        FAIL("unexpected failure: " << f->message);
    return std::get<std::vector<TomlEntry>>(r);
}

std::string failure(std::string_view text)
{
    auto r = parse_toml(text);
    REQUIRE(std::holds_alternative<ParseFailure>(r));
    return std::get<ParseFailure>(r).message;
}

const std::vector<ConfigKey> kSchema{
    {"rule", ConfigKind::list},    {"port", ConfigKind::integer},     {"idle-timeout", ConfigKind::number},
    {"relay", ConfigKind::string}, {"fail-closed", ConfigKind::flag}, {"default", ConfigKind::string},
};

std::string config_failure(std::string_view text)
{
    auto r = read_config(text, kSchema);
    REQUIRE(std::holds_alternative<ParseFailure>(r));
    return std::get<ParseFailure>(r).message;
}

// A config file for the duration of one test.
struct TempConfig {
    std::string path;
    explicit TempConfig(std::string_view text)
    {
        char name[] = "/tmp/ktp-config-test.XXXXXX";
        int fd = mkstemp(name);
        REQUIRE(fd >= 0);
        close(fd);
        path = name;
        std::ofstream(path, std::ios::binary) << text;
    }
    ~TempConfig() { std::remove(path.c_str()); }
};

ParseResult parse_with(const TempConfig& cfg, Options& o, std::vector<const char*> extra = {})
{
    std::vector<const char*> args{"ktproxy", "--cgroup", "app", "--config", cfg.path.c_str()};
    args.insert(args.end(), extra.begin(), extra.end());
    return parse_command_line(static_cast<int>(args.size()), args.data(), o);
}

}  // namespace

TEST_CASE("toml: keys, every scalar type, arrays over several lines with comments")
{
    auto e = entries("# a comment\n"
                     "rule = [\n  \"cidr=10.0.0.0/8 block\", # why\n  'port=22 direct',\n]\n"
                     "port = 0x1F_90\n"
                     "\"quoted-key\" = -12_000\n"
                     "idle = 2.5e1\n"
                     "on = true   # trailing comment\n"
                     "s = \"tab\\tquote\\\" \\u00e9\"\n");
    REQUIRE(e.size() == 6);
    CHECK(e[0].key == "rule");
    REQUIRE(e[0].value.items.size() == 2);
    CHECK(e[0].value.items[1].text == "port=22 direct");
    CHECK(e[1].value.type == TomlValue::Type::integer);
    CHECK(e[1].value.text == "8080");
    CHECK(e[1].line == 6);
    CHECK(e[2].key == "quoted-key");
    CHECK(e[2].value.text == "-12000");
    CHECK(e[3].value.type == TomlValue::Type::floating);
    CHECK(e[4].value.text == "true");
    CHECK(e[5].value.text == "tab\tquote\" \xc3\xa9");
}

TEST_CASE("toml: multi-line strings, CRLF line ends, an empty file")
{
    auto e = entries("a = \"\"\"\r\nline one\\\r\n   two\"\"\"\r\nb = '''x''y'''\r\n");
    REQUIRE(e.size() == 2);
    CHECK(e[0].value.text == "line onetwo");
    CHECK(e[1].value.text == "x''y");
    CHECK(e[1].line == 4);
    CHECK(entries("").empty());
    CHECK(entries("\n# only a comment\n\n").empty());
}

TEST_CASE("toml: what is not TOML, or not used by ktproxy, fails with its line")
{
    CHECK(failure("this is not a TOML file {\n") == "line 1: expected '=' after the key 'this'");
    CHECK(failure("a = 1\nb = \"open\n") == "line 2: unterminated string (no closing quote on this line)");
    CHECK(failure("a = 1\nb = [\"x\",\n\"y\"\n") == "line 2: unterminated array (no closing ']')");
    CHECK(failure("a = 1\na = 2\n") == "line 2: the key 'a' is set twice (first on line 1)");
    CHECK(failure("[proxy]\nport = 1\n").rfind("line 1: tables", 0) == 0);
    CHECK(failure("a.b = 1\n").rfind("line 1: dotted keys", 0) == 0);
    CHECK(failure("a = {x = 1}\n").rfind("line 1: inline tables", 0) == 0);
    CHECK(failure("a = 1979-05-27\n").rfind("line 1: dates", 0) == 0);
    CHECK(failure("a = block\n").rfind("line 1: 'block' is not a valid value", 0) == 0);
    CHECK(failure("a = 1 2\n") == "line 1: unexpected text after the value of 'a'");
    CHECK(failure("a = 012\n").rfind("line 1: '012': leading zeros", 0) == 0);
    CHECK(failure("a = 9223372036854775808\n").find("out of the 64-bit integer range") != std::string::npos);
    CHECK(failure("a = \"\\q\"\n").rfind("line 1: unknown escape", 0) == 0);
    CHECK(failure("a =\n") == "line 1: the key 'a' has no value");
    CHECK(failure("a = \"\xff\"\n") == "line 1: the file is not valid UTF-8 text");
    CHECK(failure("a = [[[[[[[[[1]]]]]]]]]\n") == "line 1: arrays nested too deeply");
    CHECK(failure("a = '''never closed\n\n") == "line 1: unterminated multi-line string");
}

TEST_CASE("config: keys must be options, with values of the option's type")
{
    CHECK(config_failure("rules = [\"block\"]\n") == "line 1: 'rules' is not an option (did you mean 'rule'?)");
    CHECK(config_failure("colour = 1\n") == "line 1: 'colour' is not an option");
    CHECK(config_failure("port = \"80\"\n") == "line 1: 'port' takes an integer, not a string");
    CHECK(config_failure("port = 8.5\n") == "line 1: 'port' takes an integer, not a float");
    CHECK(config_failure("fail-closed = \"yes\"\n") == "line 1: 'fail-closed' takes true or false, not a string");
    CHECK(config_failure("relay = 1\n") == "line 1: 'relay' takes a string, not an integer");
    CHECK(config_failure("rule = 5\n") == "line 1: 'rule' takes a string or an array of strings, not an integer");
    CHECK(config_failure("rule = [\"a\", 5]\n") == "line 1: 'rule' takes strings; an element is an integer");
    auto ok = read_config("rule = \"port=22 direct\"\nidle-timeout = 3\nfail-closed = true\n", kSchema);
    REQUIRE(std::holds_alternative<std::vector<ConfigSetting>>(ok));
    auto& s = std::get<std::vector<ConfigSetting>>(ok);
    REQUIRE(s.size() == 3);
    CHECK(s[0].values == std::vector<std::string>{"port=22 direct"});
    CHECK(s[1].values == std::vector<std::string>{"3"});
    CHECK(s[2].values == std::vector<std::string>{"true"});
}

TEST_CASE("a config file sets options; the command line wins over it")
{
    TempConfig cfg("rule = [\"cidr=10.0.0.0/8 block\", \"port=22 direct\"]\nport = 15001\nfail-closed = true\n"
                   "connect-timeout = 2\nmark = 0x100\nlog-level = \"debug\"\n");
    Options o;
    auto r = parse_with(cfg, o, {"--port", "15002"});
    REQUIRE(r.run);
    CHECK(o.rules == std::vector<std::string>{"cidr=10.0.0.0/8 block", "port=22 direct"});
    CHECK(o.port == 15002);
    CHECK(o.fail_closed);
    CHECK(o.connect_timeout == 2.0);
    CHECK(o.mark == 0x100);
    CHECK(o.log_level == log::Level::debug);
    CHECK(o.config_file == cfg.path);
}

TEST_CASE("an empty config file is valid and sets nothing")
{
    TempConfig cfg("");
    Options o;
    auto r = parse_with(cfg, o);
    REQUIRE(r.run);
    CHECK(o.rules.empty());
    CHECK(o.default_action == "proxy=direct");
}

TEST_CASE("a bad config file is refused with exit status 2 and one line naming the file and line")
{
    struct Case {
        const char* text;
        const char* says;
    };
    const Case cases[] = {
        {"this is not a TOML file {\n", "line 1: expected '='"},
        {"rules = [\"block\"]\n", "line 1: 'rules' is not an option (did you mean 'rule'?)"},
        {"# ok\nupstrem = [\"a=socks5://10.0.0.1:1080\"]\n", "line 2: 'upstrem' is not an option (did you mean 'upstream'?)"},
        {"port = \"80\"\n", "line 1: 'port' takes an integer, not a string"},
        {"rule = [\"block\"]\nrule = [\"direct\"]\n", "line 2: the key 'rule' is set twice"},
        {"default = \"block\n", "line 1: unterminated string"},
        {"rule = [\"block\",\n", "line 1: unterminated array"},
        {"relay = \"fast\"\n", "line 1: --relay: fast not in"},
        {"\nlisten4 = \"1.2.3\"\n", "line 2: --listen4: '1.2.3' is not an IPv4 address"},
        {"config = \"other.toml\"\n", "line 1: 'config' is not an option"},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        TempConfig cfg(c.text);
        Options o;
        auto r = parse_with(cfg, o);
        CHECK_FALSE(r.run);
        CHECK(r.exit_code == 2);
        CHECK(r.message.find('\n') == std::string::npos);
        CHECK(r.message.find("config " + cfg.path + " ") == 0);
        CHECK(r.message.find(c.says) != std::string::npos);
    }
}

TEST_CASE("ktproxy run reads its config file as strictly")
{
    TempConfig cfg("rules = [\"block\"]\n");
    std::vector<const char*> args{"ktproxy", "run", "--config", cfg.path.c_str(), "--", "true"};
    Options o;
    auto r = parse_command_line(static_cast<int>(args.size()), args.data(), o);
    CHECK_FALSE(r.run);
    CHECK(r.exit_code == 2);
    CHECK(r.message.find("'rules' is not an option") != std::string::npos);
}

TEST_CASE("the schema gives every option its kind")
{
    // Through a real parse: each kind must accept its own TOML type.
    TempConfig cfg("rule = \"port=1 direct\"\nupstream = []\nport = 1\nidle-timeout = 1.5\nsniff-timeout = 1\n"
                   "relay = \"buffers\"\nfail-closed = false\ngateway-iface = []\nlisten6 = \"\"\n");
    Options o;
    auto r = parse_with(cfg, o);
    INFO(r.message);
    REQUIRE(r.run);
    CHECK(o.rules == std::vector<std::string>{"port=1 direct"});
    CHECK(o.idle_timeout == 1.5);
    CHECK(o.relay == "buffers");
    CHECK(o.listen6.empty());
}

TEST_CASE("udp = false in a config file turns UDP off; the command line wins over it")
{
    TempConfig off("udp = false\n");
    Options o;
    auto r = parse_with(off, o);
    INFO(r.message);
    REQUIRE(r.run);
    CHECK_FALSE(o.udp);
    Options cli_on;
    REQUIRE(parse_with(off, cli_on, {"--udp"}).run);
    CHECK(cli_on.udp);
    TempConfig on("udp = true\n");
    Options on_o;
    REQUIRE(parse_with(on, on_o).run);
    CHECK(on_o.udp);
    Options cli_off;
    REQUIRE(parse_with(on, cli_off, {"--no-udp"}).run);
    CHECK_FALSE(cli_off.udp);
    // The negated name is not a key of its own: one key, one meaning.
    TempConfig negated("no-udp = true\n");
    Options n;
    auto rn = parse_with(negated, n);
    CHECK_FALSE(rn.run);
    CHECK(rn.message.find("'no-udp' is not an option") != std::string::npos);
    TempConfig wrong("udp = \"off\"\n");
    Options w;
    auto rw = parse_with(wrong, w);
    CHECK_FALSE(rw.run);
    CHECK(rw.message.find("'udp' takes true or false, not a string") != std::string::npos);
}
