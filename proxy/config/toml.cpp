// Strict TOML subset reader (see toml.h): a hand-written recursive descent
// over the bytes, tracking the line for every error.
#include "config/toml.h"

#include "base/printable.h"

#include <fmt/format.h>

#include <cstdint>
#include <limits>
#include <map>

namespace ktp {

const char* toml_type_name(TomlValue::Type t)
{
    switch (t) {
    case TomlValue::Type::string: return "a string";
    case TomlValue::Type::integer: return "an integer";
    case TomlValue::Type::floating: return "a float";
    case TomlValue::Type::boolean: return "a boolean";
    case TomlValue::Type::array: return "an array";
    }
    return "a value";
}

std::string toml_printable(std::string_view text) { return printable(text, {.high = true}); }

namespace {

bool is_bare_key_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// Control characters other than tab may not appear raw in strings or comments.
bool is_forbidden_control(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

// Length of the UTF-8 sequence at s[i], or 0 when it is not valid UTF-8
// (overlong forms, surrogates and code points past U+10FFFF included).
size_t utf8_length(std::string_view s, size_t i)
{
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    unsigned char c = b(0);
    if (c < 0x80)
        return 1;
    size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (n == 0 || c > 0xf4 || i + n > s.size())
        return 0;
    for (size_t k = 1; k < n; ++k)
        if ((b(k) & 0xc0) != 0x80)
            return 0;
    if (n == 3 && ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) >= 0xa0)))
        return 0;
    if (n == 4 && ((c == 0xf0 && b(1) < 0x90) || (c == 0xf4 && b(1) >= 0x90)))
        return 0;
    return n;
}

void append_utf8(std::string& out, uint32_t cp)
{
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

class Reader {
public:
    explicit Reader(std::string_view s) : s_(s) {}

    Result<std::vector<TomlEntry>> run()
    {
        std::vector<TomlEntry> entries;
        std::map<std::string, int> seen;
        if (!check_utf8())
            return failure();
        while (true) {
            skip_blank();
            if (at_end())
                break;
            if (comment_then_eol())
                continue;
            char c = s_[i_];
            if (c == '[')
                return failure("tables ([name]) are not used: every option is a top-level key");
            if (c == '=')
                return failure("a key is missing before '='");
            TomlEntry e;
            e.line = line_;
            if (!key(e.key))
                return failure();
            skip_blank();
            if (peek() == '.')
                return failure(fmt::format("dotted keys are not used: '{}' must be a top-level option", e.key));
            if (peek() != '=')
                return failure(fmt::format("expected '=' after the key '{}'", e.key));
            ++i_;
            skip_blank();
            if (at_end() || peek() == '\n' || peek() == '\r' || peek() == '#')
                return failure(fmt::format("the key '{}' has no value", e.key));
            if (!value(e.value))
                return failure();
            skip_blank();
            if (!comment_then_eol())
                return failure(fmt::format("unexpected text after the value of '{}'", e.key));
            if (auto [it, fresh] = seen.emplace(e.key, e.line); !fresh)
                return ParseFailure{fmt::format("line {}: the key '{}' is set twice (first on line {})", e.line,
                                                toml_printable(e.key), it->second)};
            entries.push_back(std::move(e));
        }
        return entries;
    }

private:
    bool at_end() const { return i_ >= s_.size(); }
    char peek(size_t k = 0) const { return i_ + k < s_.size() ? s_[i_ + k] : '\0'; }

    bool error(std::string msg)
    {
        if (msg_.empty())
            msg_ = std::move(msg);
        return false;
    }
    ParseFailure failure(std::string msg = {})
    {
        if (!msg.empty())
            error(std::move(msg));
        return ParseFailure{fmt::format("line {}: {}", line_, toml_printable(msg_))};
    }

    bool check_utf8()
    {
        int line = 1;
        for (size_t i = 0; i < s_.size();) {
            size_t n = utf8_length(s_, i);
            if (n == 0) {
                line_ = line;
                return error("the file is not valid UTF-8 text");
            }
            if (s_[i] == '\n')
                ++line;
            i += n;
        }
        return true;
    }

    void skip_blank()
    {
        while (!at_end() && (s_[i_] == ' ' || s_[i_] == '\t'))
            ++i_;
    }

    // A newline, "\r\n" or the end of the text; consumes it.
    bool eol()
    {
        if (at_end())
            return true;
        if (s_[i_] == '\n' || (s_[i_] == '\r' && peek(1) == '\n')) {
            i_ += s_[i_] == '\r' ? 2 : 1;
            ++line_;
            return true;
        }
        return false;
    }

    // An optional comment, then the end of the line. False (nothing consumed
    // past the comment) when other text follows.
    bool comment_then_eol()
    {
        if (peek() == '#') {
            while (!at_end() && s_[i_] != '\n') {
                if (s_[i_] == '\r' && peek(1) == '\n')
                    break;
                if (is_forbidden_control(static_cast<unsigned char>(s_[i_])))
                    return error("a control character in a comment");
                ++i_;
            }
        }
        return eol();
    }

    // Blank space, newlines and comments inside an array that opened on
    // start_line (where an unterminated one is reported).
    bool skip_array_space(int start_line)
    {
        while (true) {
            skip_blank();
            if (at_end()) {
                line_ = start_line;
                return error("unterminated array (no closing ']')");
            }
            if (peek() == '#' || peek() == '\n' || peek() == '\r') {
                if (!comment_then_eol())
                    return error("a stray carriage return");
                continue;
            }
            return true;
        }
    }

    bool key(std::string& out)
    {
        char c = peek();
        if (c == '"' || c == '\'') {
            TomlValue v;
            if (!single_line_string(v, c))
                return false;
            out = std::move(v.text);
            return true;
        }
        size_t start = i_;
        while (!at_end() && is_bare_key_char(s_[i_]))
            ++i_;
        if (i_ == start)
            return error(fmt::format("expected a key, found '{}'", shown(c)));
        out.assign(s_.substr(start, i_ - start));
        return true;
    }

    // One byte of the file quoted in an error; a stray UTF-8 byte too is \xHH.
    static std::string shown(char c) { return printable(std::string_view(&c, 1)); }

    bool value(TomlValue& v, int depth = 0)
    {
        char c = peek();
        if (c == '"' || c == '\'') {
            if (peek(1) == c && peek(2) == c)
                return multi_line_string(v, c);
            return single_line_string(v, c);
        }
        if (c == '[')
            return array(v, depth);
        if (c == '{')
            return error("inline tables ({...}) are not used");
        return bare_value(v);
    }

    bool array(TomlValue& v, int depth)
    {
        // Nesting has no use in a config file; the limit keeps hostile
        // input from exhausting the stack.
        if (depth >= 8)
            return error("arrays nested too deeply");
        v.type = TomlValue::Type::array;
        int start_line = line_;
        ++i_;
        while (true) {
            if (!skip_array_space(start_line))
                return false;
            if (peek() == ']') {
                ++i_;
                return true;
            }
            if (peek() == ',')
                return error("an array element is missing before ','");
            TomlValue item;
            if (!value(item, depth + 1))
                return false;
            v.items.push_back(std::move(item));
            if (!skip_array_space(start_line))
                return false;
            if (peek() == ',') {
                ++i_;
                continue;
            }
            if (peek() == ']') {
                ++i_;
                return true;
            }
            return error(fmt::format("expected ',' or ']' in an array, found '{}'", shown(peek())));
        }
    }

    bool hex_escape(std::string& out, int digits)
    {
        uint32_t cp = 0;
        for (int k = 0; k < digits; ++k) {
            char h = peek();
            int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (d < 0)
                return error(fmt::format("\\{} needs {} hex digits", digits == 4 ? 'u' : 'U', digits));
            cp = cp * 16 + static_cast<uint32_t>(d);
            ++i_;
        }
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return error(fmt::format("\\{} escape U+{:X} is not a Unicode scalar value", digits == 4 ? 'u' : 'U', cp));
        append_utf8(out, cp);
        return true;
    }

    // After a backslash in a basic string.
    bool escape(std::string& out)
    {
        char e = peek();
        ++i_;
        switch (e) {
        case 'b': out += '\b'; return true;
        case 't': out += '\t'; return true;
        case 'n': out += '\n'; return true;
        case 'f': out += '\f'; return true;
        case 'r': out += '\r'; return true;
        case '"': out += '"'; return true;
        case '\\': out += '\\'; return true;
        case 'u': return hex_escape(out, 4);
        case 'U': return hex_escape(out, 8);
        default: --i_; return error(fmt::format("unknown escape '\\{}' in a string", shown(e)));
        }
    }

    bool single_line_string(TomlValue& v, char quote)
    {
        v.type = TomlValue::Type::string;
        ++i_;
        while (true) {
            if (at_end() || peek() == '\n' || (peek() == '\r' && peek(1) == '\n'))
                return error("unterminated string (no closing quote on this line)");
            char c = s_[i_];
            if (c == quote) {
                ++i_;
                return true;
            }
            if (!string_char(v, quote))
                return false;
        }
    }

    // One character of a string's body at i_: an escape (basic strings
    // only), a control character (refused), or the character itself.
    bool string_char(TomlValue& v, char quote)
    {
        char c = s_[i_];
        if (quote == '"' && c == '\\') {
            ++i_;
            return escape(v.text);
        }
        if (is_forbidden_control(static_cast<unsigned char>(c)))
            return error("a control character in a string (write it as an escape)");
        v.text += c;
        ++i_;
        return true;
    }

    bool multi_line_string(TomlValue& v, char quote)
    {
        v.type = TomlValue::Type::string;
        int start_line = line_;
        i_ += 3;
        if (peek() == '\n' || (peek() == '\r' && peek(1) == '\n'))
            eol();  // a newline right after the opening delimiter is trimmed
        while (true) {
            if (at_end()) {
                line_ = start_line;
                return error("unterminated multi-line string");
            }
            char c = s_[i_];
            if (c == quote && peek(1) == quote && peek(2) == quote) {
                // Up to two quotes may stand right before the closing three.
                size_t run = 3;
                while (peek(run) == quote)
                    ++run;
                if (run > 5)
                    return error("too many quotes at the end of a multi-line string");
                v.text.append(run - 3, quote);
                i_ += run;
                return true;
            }
            if (c == '\n' || (c == '\r' && peek(1) == '\n')) {
                eol();
                v.text += '\n';
                continue;
            }
            if (quote == '"' && c == '\\') {
                // A backslash at the end of a line joins it to the next
                // non-blank text.
                size_t j = i_ + 1;
                while (j < s_.size() && (s_[j] == ' ' || s_[j] == '\t'))
                    ++j;
                if (j < s_.size() && (s_[j] == '\n' || (s_[j] == '\r' && j + 1 < s_.size() && s_[j + 1] == '\n'))) {
                    i_ = j;
                    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' ||
                                         (peek() == '\r' && peek(1) == '\n'))) {
                        if (!eol())
                            ++i_;
                    }
                    continue;
                }
            }
            if (!string_char(v, quote))
                return false;
        }
    }

    // Digits of one base with single underscores between them; appends the
    // digits without underscores. False when empty or badly placed '_'.
    static bool digit_run(std::string_view t, size_t& k, int base, std::string& out)
    {
        auto is_digit = [base](char c) {
            if (base == 16)
                return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
            return c >= '0' && c < static_cast<char>('0' + base);
        };
        size_t start = k;
        bool last_digit = false;
        while (k < t.size()) {
            if (is_digit(t[k])) {
                out += t[k];
                last_digit = true;
            } else if (t[k] == '_' && last_digit && k + 1 < t.size() && is_digit(t[k + 1])) {
                last_digit = false;
            } else {
                break;
            }
            ++k;
        }
        return k > start && last_digit;
    }

    bool bare_value(TomlValue& v)
    {
        size_t start = i_;
        while (!at_end()) {
            char c = s_[i_];
            if (is_bare_key_char(c) || c == '+' || c == '.' || c == ':')
                ++i_;
            else
                break;
        }
        std::string_view t = s_.substr(start, i_ - start);
        if (t.empty())
            return error(fmt::format("expected a value, found '{}'", shown(peek())));
        if (t == "true" || t == "false") {
            v.type = TomlValue::Type::boolean;
            v.text = std::string(t);
            return true;
        }
        std::string_view body = t;
        bool negative = false;
        if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
            negative = body[0] == '-';
            body.remove_prefix(1);
        }
        if (body == "inf" || body == "nan") {
            v.type = TomlValue::Type::floating;
            v.text = std::string(t);
            return true;
        }
        if (t.size() >= 5 && t[4] == '-' && t[0] >= '0' && t[0] <= '9')
            return error(fmt::format("dates and times are not used ('{}')", t));
        if (t.find(':') != std::string_view::npos)
            return error(fmt::format("dates and times are not used ('{}')", t));
        if (body.size() >= 2 && body[0] == '0' && (body[1] == 'x' || body[1] == 'o' || body[1] == 'b')) {
            if (t.size() != body.size())
                return error(fmt::format("'{}': a sign is not allowed before 0x, 0o or 0b", t));
            int base = body[1] == 'x' ? 16 : body[1] == 'o' ? 8 : 2;
            std::string digits;
            size_t k = 2;
            if (!digit_run(body, k, base, digits) || k != body.size())
                return error(fmt::format("'{}' is not a valid integer", t));
            return set_integer(v, digits, base, false, t);
        }
        std::string int_part, frac, exp;
        size_t k = 0;
        if (!digit_run(body, k, 10, int_part))
            return error(fmt::format("'{}' is not a valid value (a string needs quotes)", t));
        if (int_part.size() > 1 && int_part[0] == '0')
            return error(fmt::format("'{}': leading zeros are not allowed", t));
        bool is_float = false;
        if (k < body.size() && body[k] == '.') {
            ++k;
            if (!digit_run(body, k, 10, frac))
                return error(fmt::format("'{}' is not a valid number", t));
            is_float = true;
        }
        if (k < body.size() && (body[k] == 'e' || body[k] == 'E')) {
            ++k;
            if (k < body.size() && (body[k] == '+' || body[k] == '-'))
                exp += body[k++];
            if (!digit_run(body, k, 10, exp))
                return error(fmt::format("'{}' is not a valid number", t));
            is_float = true;
        }
        if (k != body.size())
            return error(fmt::format("'{}' is not a valid value (a string needs quotes)", t));
        if (!is_float)
            return set_integer(v, int_part, 10, negative, t);
        v.type = TomlValue::Type::floating;
        v.text = fmt::format("{}{}{}{}{}{}", negative ? "-" : "", int_part, frac.empty() ? "" : ".", frac,
                             exp.empty() ? "" : "e", exp);
        return true;
    }

    bool set_integer(TomlValue& v, const std::string& digits, int base, bool negative, std::string_view as_written)
    {
        // Magnitude up to 2^63 (so that INT64_MIN fits).
        const uint64_t limit = uint64_t(1) << 63;
        uint64_t n = 0;
        for (char c : digits) {
            uint64_t d = c <= '9' ? uint64_t(c - '0') : uint64_t((c | 0x20) - 'a' + 10);
            if (n > (limit - d) / static_cast<uint64_t>(base))
                return error(fmt::format("'{}' is out of the 64-bit integer range", as_written));
            n = n * static_cast<uint64_t>(base) + d;
        }
        if (!negative && n == limit)
            return error(fmt::format("'{}' is out of the 64-bit integer range", as_written));
        v.type = TomlValue::Type::integer;
        v.text = fmt::format("{}{}", negative && n != 0 ? "-" : "", n);
        return true;
    }

    std::string_view s_;
    size_t i_ = 0;
    int line_ = 1;
    std::string msg_;
};

}  // namespace

Result<std::vector<TomlEntry>> parse_toml(std::string_view text) { return Reader(text).run(); }

}  // namespace ktp
