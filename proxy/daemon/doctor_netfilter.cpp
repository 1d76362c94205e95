// Finding ktproxy's marks in nftables' JSON and in iptables-save output.
#include "daemon/doctor_netfilter.h"

#include "base/printable.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdlib>
#include <optional>
#include <sstream>

namespace ktp {
namespace {

// Just enough JSON for nft's output: objects, arrays, strings, integers,
// true/false/null. Numbers other than integers are kept as text.
struct Json {
    enum Kind { null, boolean, number, string, array, object } kind = null;
    std::string text;  // string, or a number's digits
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json* get(std::string_view key) const
    {
        if (kind != object)
            return nullptr;
        for (const auto& [k, v] : members)
            if (k == key)
                return &v;
        return nullptr;
    }
    std::optional<uint64_t> integer() const
    {
        if (kind != number || text.empty() || text[0] == '-')
            return std::nullopt;
        char* end = nullptr;
        unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (!end || *end)
            return std::nullopt;
        return v;
    }
    std::string str(std::string_view key) const
    {
        const Json* v = get(key);
        return v && (v->kind == string || v->kind == number) ? v->text : std::string();
    }
};

class JsonParser {
public:
    explicit JsonParser(std::string_view s) : s_(s) {}

    // nullopt with error() set on malformed input. Nesting is bounded.
    std::optional<Json> parse()
    {
        Json v;
        if (!value(v, 0))
            return std::nullopt;
        ws();
        if (i_ != s_.size())
            return fail("text after the JSON value");
        return v;
    }
    const std::string& error() const { return error_; }

private:
    std::nullopt_t fail(std::string why)
    {
        if (error_.empty())
            error_ = fmt::format("{} at byte {}", why, i_);
        return std::nullopt;
    }
    void ws()
    {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r'))
            ++i_;
    }
    bool lit(std::string_view w)
    {
        if (s_.substr(i_, w.size()) != w)
            return false;
        i_ += w.size();
        return true;
    }
    bool str(std::string& out)
    {
        ++i_;  // the opening quote
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= s_.size())
                break;
            char e = s_[i_++];
            switch (e) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u':
                // Names in a ruleset are ASCII; anything else only needs to stay one character.
                if (i_ + 4 > s_.size()) {
                    fail("\\u escape cut short");
                    return false;
                }
                i_ += 4;
                out += '?';
                break;
            default: out += e;
            }
        }
        if (i_ >= s_.size()) {
            fail("unterminated string");
            return false;
        }
        ++i_;
        return true;
    }
    bool value(Json& v, int depth)
    {
        if (depth > 64) {
            fail("nested too deeply");
            return false;
        }
        ws();
        if (i_ >= s_.size()) {
            fail("unexpected end");
            return false;
        }
        char c = s_[i_];
        if (c == '{') {
            v.kind = Json::object;
            ++i_;
            ws();
            if (i_ < s_.size() && s_[i_] == '}') {
                ++i_;
                return true;
            }
            for (;;) {
                ws();
                if (i_ >= s_.size() || s_[i_] != '"') {
                    fail("expected a member name");
                    return false;
                }
                std::string key;
                if (!str(key))
                    return false;
                ws();
                if (i_ >= s_.size() || s_[i_] != ':') {
                    fail("expected ':'");
                    return false;
                }
                ++i_;
                Json member;
                if (!value(member, depth + 1))
                    return false;
                v.members.emplace_back(std::move(key), std::move(member));
                ws();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                if (i_ < s_.size() && s_[i_] == '}') {
                    ++i_;
                    return true;
                }
                fail("expected ',' or '}'");
                return false;
            }
        }
        if (c == '[') {
            v.kind = Json::array;
            ++i_;
            ws();
            if (i_ < s_.size() && s_[i_] == ']') {
                ++i_;
                return true;
            }
            for (;;) {
                Json item;
                if (!value(item, depth + 1))
                    return false;
                v.items.push_back(std::move(item));
                ws();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    continue;
                }
                if (i_ < s_.size() && s_[i_] == ']') {
                    ++i_;
                    return true;
                }
                fail("expected ',' or ']'");
                return false;
            }
        }
        if (c == '"') {
            v.kind = Json::string;
            return str(v.text);
        }
        if (lit("true") || lit("false")) {
            v.kind = Json::boolean;
            return true;
        }
        if (lit("null"))
            return true;
        size_t start = i_;
        while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                                  s_[i_] == '+' || s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))
            ++i_;
        if (i_ == start) {
            fail("unexpected character");
            return false;
        }
        v.kind = Json::number;
        v.text = std::string(s_.substr(start, i_ - start));
        return true;
    }

    std::string_view s_;
    size_t i_ = 0;
    std::string error_;
};

// "meta mark" or "ct mark" when the expression is that key (or that key
// masked: {"&": [key, mask]}, mask then set), else "".
std::string mark_key(const Json& e, uint32_t& mask)
{
    mask = 0xffffffffu;
    const Json* base = &e;
    if (const Json* and_ = e.get("&"); and_ && and_->kind == Json::array && and_->items.size() == 2) {
        auto m = and_->items[1].integer();
        if (!m)
            return {};
        mask = static_cast<uint32_t>(*m);
        base = &and_->items[0];
    }
    for (const char* k : {"meta", "ct"}) {
        const Json* sel = base->get(k);
        if (sel && sel->str("key") == "mark")
            return fmt::format("{} mark", k);
    }
    return {};
}

// Integers of a match's right side: a number, or an anonymous set of them.
std::vector<uint64_t> numbers(const Json& right)
{
    std::vector<uint64_t> out;
    if (auto v = right.integer())
        out.push_back(*v);
    else if (const Json* set = right.get("set"); set && set->kind == Json::array)
        for (const Json& item : set->items)
            if (auto v = item.integer())
                out.push_back(*v);
    return out;
}

void scan_expr(const Json& e, const std::vector<MarkUse>& marks, std::vector<std::string>& found)
{
    if (const Json* m = e.get("match")) {
        const Json* left = m->get("left");
        const Json* right = m->get("right");
        const std::string op = m->str("op");
        uint32_t mask = 0;
        std::string key = left ? mark_key(*left, mask) : std::string();
        // "!=" exempts the mark: that is usually how tools leave ktproxy alone.
        if (key.empty() || !right || (op != "==" && op != "in"))
            return;
        for (uint64_t v : numbers(*right))
            for (const MarkUse& mu : marks)
                if ((mu.value & mask) == v)
                    found.push_back(fmt::format("matches {} {:#x}{} ({} {:#x})", key, v,
                                                mask == 0xffffffffu ? "" : fmt::format(" under mask {:#x}", mask),
                                                mu.flag, mu.value));
        return;
    }
    if (const Json* m = e.get("mangle")) {
        const Json* key = m->get("key");
        const Json* value = m->get("value");
        uint32_t mask = 0;
        std::string k = key ? mark_key(*key, mask) : std::string();
        auto v = value ? value->integer() : std::nullopt;
        if (k.empty() || !v)
            return;
        for (const MarkUse& mu : marks)
            if (*v == mu.value)
                found.push_back(fmt::format("sets {} {:#x} ({} {:#x})", k, *v, mu.flag, mu.value));
    }
}

// Names and comments in a ruleset are whoever wrote it's: a newline or an
// escape sequence in them must not forge lines of doctor's report or drive
// the terminal. Non-ASCII text (a UTF-8 comment) stays readable.
constexpr PrintableRules kRuleText{.high = true};

std::optional<uint64_t> hex_or_dec(std::string_view s)
{
    if (s.empty())
        return std::nullopt;
    char* end = nullptr;
    std::string t(s);
    unsigned long long v = std::strtoull(t.c_str(), &end, 0);
    if (!end || *end)
        return std::nullopt;
    return v;
}

// "V" or "V/M".
bool value_mask(std::string_view s, uint64_t& v, uint64_t& m)
{
    auto slash = s.find('/');
    auto value = hex_or_dec(s.substr(0, slash));
    auto mask = slash == std::string_view::npos ? std::optional<uint64_t>(0xffffffffu) : hex_or_dec(s.substr(slash + 1));
    if (!value || !mask)
        return false;
    v = *value;
    m = *mask;
    return true;
}

}  // namespace

NftScan scan_nft_json(std::string_view json, const std::vector<MarkUse>& marks, const std::set<std::string>& skip)
{
    NftScan out;
    JsonParser p(json);
    auto doc = p.parse();
    const Json* list = doc ? doc->get("nftables") : nullptr;
    if (!list || list->kind != Json::array) {
        out.error = doc ? "no \"nftables\" array" : p.error();
        return out;
    }
    for (const Json& item : list->items) {
        const Json* rule = item.get("rule");
        if (!rule)
            continue;
        const std::string family = rule->str("family"), table = rule->str("table");
        if (skip.count(family + " " + table))
            continue;
        const Json* exprs = rule->get("expr");
        if (!exprs || exprs->kind != Json::array)
            continue;
        std::vector<std::string> found;
        for (const Json& e : exprs->items)
            scan_expr(e, marks, found);
        for (auto& f : found)
            out.hits.push_back({printable(fmt::format("nft {} {} chain {} handle {}", family, table,
                                                      rule->str("chain"), rule->str("handle")),
                                          kRuleText),
                                std::move(f)});
    }
    return out;
}

IptablesScan scan_iptables_save(std::string_view text, const std::string& family, const std::vector<MarkUse>& marks)
{
    IptablesScan out;
    const char* cmd = family == "ip6" ? "ip6tables" : "iptables";
    std::string table;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("# Generated by", 0) == 0 && line.find("(nf_tables)") != std::string::npos)
            out.nf_tables = true;
        if (!line.empty() && line[0] == '*') {
            table = line.substr(1);
            out.tables.insert(family + " " + table);
            continue;
        }
        if (line.rfind("-A ", 0) != 0)
            continue;
        std::vector<std::string> words;
        std::istringstream ws(line);
        for (std::string w; ws >> w;)
            words.push_back(w);
        std::string module;  // the -m before a --mark: mark or connmark
        std::string target;  // after -j
        for (size_t i = 0; i + 1 < words.size(); ++i) {
            const std::string& w = words[i];
            if (w == "-m")
                module = words[i + 1];
            if (w == "-j")
                target = words[i + 1];
            // "! --mark X" exempts the mark: that is usually how tools leave ktproxy alone.
            const bool match = w == "--mark" && target.empty() && (i == 0 || words[i - 1] != "!");
            const bool set = (w == "--set-xmark" || w == "--set-mark") && !target.empty();
            if (!match && !set)
                continue;
            uint64_t v = 0, m = 0;
            if (!value_mask(words[i + 1], v, m))
                continue;
            const char* what = (match ? module : target) == "connmark" || target == "CONNMARK" ? "ct mark" : "mark";
            for (const MarkUse& mu : marks) {
                std::string hit;
                if (match && (mu.value & m) == v)
                    hit = fmt::format("matches {} {:#x}/{:#x} ({} {:#x})", what, v, m, mu.flag, mu.value);
                // --set-xmark V/M: mark = (mark & ~M) ^ V, so it can make ktproxy's mark.
                else if (set && (m & mu.value) != 0 && (v & m) == (mu.value & m))
                    hit = fmt::format("sets {} {:#x}/{:#x} ({} {:#x})", what, v, m, mu.flag, mu.value);
                if (!hit.empty())
                    out.hits.push_back({printable(fmt::format("{} -t {} {}", cmd, table, line), kRuleText), std::move(hit)});
            }
        }
    }
    return out;
}

}  // namespace ktp
