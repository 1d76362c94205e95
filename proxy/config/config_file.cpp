// Checks a parsed --config file against the options and feeds it to CLI11.
#include "config/config_file.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace ktp {

namespace {

ConfigKind kind_of(const CLI::Option& opt)
{
    if (opt.get_expected_min() == 0 && opt.get_items_expected_max() == 0)
        return ConfigKind::flag;
    if (opt.get_items_expected_max() > 1)
        return ConfigKind::list;
    // CLI11 names the stored type first ("UINT:UINT in [..]", "FLOAT", "TEXT:{..}").
    std::string type = opt.get_type_name();
    if (type.rfind("UINT", 0) == 0 || type.rfind("INT", 0) == 0)
        return ConfigKind::integer;
    if (type.rfind("FLOAT", 0) == 0)
        return ConfigKind::number;
    return ConfigKind::string;
}

const char* expected_text(ConfigKind k)
{
    switch (k) {
    case ConfigKind::flag: return "true or false";
    case ConfigKind::integer: return "an integer";
    case ConfigKind::number: return "a number";
    case ConfigKind::string: return "a string";
    case ConfigKind::list: return "a string or an array of strings";
    }
    return "a value";
}

size_t edit_distance(std::string_view a, std::string_view b)
{
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::string suggestion(std::string_view key, const std::vector<ConfigKey>& schema)
{
    const ConfigKey* best = nullptr;
    size_t best_d = 3;  // suggest only close misspellings
    for (const auto& k : schema) {
        size_t d = edit_distance(key, k.name);
        if (d < best_d) {
            best_d = d;
            best = &k;
        }
    }
    return best ? fmt::format(" (did you mean '{}'?)", best->name) : "";
}

}  // namespace

std::vector<ConfigKey> config_schema(const CLI::App& app)
{
    std::vector<ConfigKey> keys;
    const CLI::Option* config = app.get_config_ptr();
    for (const CLI::Option* opt : app.get_options()) {
        if (opt == config || !opt->get_configurable() || opt->get_lnames().empty())
            continue;
        const std::string& name = opt->get_lnames().front();
        if (name == "help" || name == "version")
            continue;
        keys.push_back(ConfigKey{name, kind_of(*opt)});
    }
    return keys;
}

Result<std::vector<ConfigSetting>> read_config(std::string_view text, const std::vector<ConfigKey>& schema)
{
    auto parsed = parse_toml(text);
    if (auto* f = std::get_if<ParseFailure>(&parsed))
        return *f;
    std::vector<ConfigSetting> out;
    for (auto& e : std::get<std::vector<TomlEntry>>(parsed)) {
        auto k = std::find_if(schema.begin(), schema.end(), [&](const ConfigKey& c) { return c.name == e.key; });
        if (k == schema.end())
            return ParseFailure{
                fmt::format("line {}: '{}' is not an option{}", e.line, toml_printable(e.key), suggestion(e.key, schema))};
        using T = TomlValue::Type;
        const TomlValue& v = e.value;
        auto wrong = [&](const TomlValue& got) {
            return ParseFailure{fmt::format("line {}: '{}' takes {}, not {}", e.line, e.key, expected_text(k->kind),
                                            toml_type_name(got.type))};
        };
        ConfigSetting s{e.key, {}, e.line};
        switch (k->kind) {
        case ConfigKind::flag:
            if (v.type != T::boolean)
                return wrong(v);
            s.values.push_back(v.text);
            break;
        case ConfigKind::integer:
            if (v.type != T::integer)
                return wrong(v);
            s.values.push_back(v.text);
            break;
        case ConfigKind::number:
            if (v.type != T::integer && v.type != T::floating)
                return wrong(v);
            s.values.push_back(v.text);
            break;
        case ConfigKind::string:
            if (v.type != T::string)
                return wrong(v);
            s.values.push_back(v.text);
            break;
        case ConfigKind::list:
            if (v.type == T::string) {
                s.values.push_back(v.text);
                break;
            }
            if (v.type != T::array)
                return wrong(v);
            for (const auto& item : v.items) {
                if (item.type != T::string)
                    return ParseFailure{fmt::format("line {}: '{}' takes strings; an element is {}", e.line, e.key,
                                                    toml_type_name(item.type))};
                s.values.push_back(item.text);
            }
            break;
        }
        out.push_back(std::move(s));
    }
    return out;
}

namespace {

std::string g_actual, g_shown;

// CLI11 calls from_config with the opened file; the reader keeps which line
// set which option so that errors found later can point at the file.
class StrictConfigReader : public CLI::Config {
public:
    explicit StrictConfigReader(const CLI::App& app) : app_(app) {}

    std::string to_config(const CLI::App*, bool, bool, std::string) const override { return {}; }

    std::vector<CLI::ConfigItem> from_config(std::istream& in) const override
    {
        std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        if (in.bad())
            throw CLI::ConfigError(fmt::format("config {}: cannot be read", path()));
        auto result = read_config(text, config_schema(app_));
        if (auto* f = std::get_if<ParseFailure>(&result))
            throw CLI::ConfigError(fmt::format("config {} {}", path(), f->message));
        std::vector<CLI::ConfigItem> items;
        lines_.clear();
        for (auto& s : std::get<std::vector<ConfigSetting>>(result)) {
            // CLI11 reads the file after the command line, and a flag given
            // there wins: only the file's own values get its line.
            const CLI::Option* opt = app_.get_option_no_throw("--" + s.key);
            if (!opt || opt->count() == 0)
                lines_[s.key] = s.line;
            // An empty array sets nothing, as if the key were absent (CLI11
            // cannot take an option with no value).
            if (s.values.empty())
                continue;
            CLI::ConfigItem item;
            item.name = s.key;
            item.inputs = std::move(s.values);
            items.push_back(std::move(item));
        }
        return items;
    }

    int line_of(std::string_view key) const
    {
        auto it = lines_.find(std::string(key));
        return it == lines_.end() ? 0 : it->second;
    }

    std::string path() const
    {
        const CLI::Option* c = app_.get_config_ptr();
        if (c && !c->results().empty())
            return !g_actual.empty() && c->results().front() == g_actual ? g_shown : c->results().front();
        return "file";
    }

private:
    const CLI::App& app_;
    mutable std::map<std::string, int> lines_;
};

}  // namespace

void use_strict_config(CLI::App& app)
{
    app.config_formatter(std::make_shared<StrictConfigReader>(app));
    app.allow_config_extras(CLI::config_extras_mode::error);
}

ConfigShownAs::ConfigShownAs(std::string actual, std::string shown)
{
    g_actual = std::move(actual);
    g_shown = std::move(shown);
}

ConfigShownAs::~ConfigShownAs()
{
    g_actual.clear();
    g_shown.clear();
}

std::string config_origin(const CLI::App& app, std::string_view option)
{
    auto reader = std::dynamic_pointer_cast<StrictConfigReader>(app.get_config_formatter());
    if (!reader || option.empty())
        return {};
    int line = reader->line_of(option);
    if (line == 0)
        return {};
    return fmt::format("config {} line {}", reader->path(), line);
}

}  // namespace ktp
