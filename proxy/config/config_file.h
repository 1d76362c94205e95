// --config files: what each key may hold, checked against the options the
// command line accepts, and the CLI11 hook that makes CLI11 read them this
// way. A file that is not entirely understood is refused, never partly used:
// a silently dropped `rule` or `default` would let traffic out unproxied.
#pragma once

#include "base/result.h"
#include "config/toml.h"

#include <string>
#include <string_view>
#include <vector>

namespace CLI {
class App;
}

namespace ktp {

enum class ConfigKind {
    flag,     // boolean
    integer,  // integer
    number,   // integer or float
    string,   // string
    list,     // repeatable option: a string or an array of strings
};

struct ConfigKey {
    std::string name;  // the long option without "--"
    ConfigKind kind;
};

// One key's values as the command line would spell them.
struct ConfigSetting {
    std::string key;
    std::vector<std::string> values;
    int line = 0;
};

// The keys a config file may hold: the app's long options, except those that
// make no sense in a file (--help, --version, --config itself).
std::vector<ConfigKey> config_schema(const CLI::App& app);

// Parses and checks the text; a failure's message starts with "line N: ".
Result<std::vector<ConfigSetting>> read_config(std::string_view text, const std::vector<ConfigKey>& schema);

// Makes app read its --config file with read_config; any failure becomes a
// CLI::ConfigError "config FILE line N: ...", which parsing reports as a bad
// flag (exit status 2).
void use_strict_config(CLI::App& app);

// "FILE line N" for an option the config file set and the command line did
// not, or "" (used to point later validation errors at the file).
std::string config_origin(const CLI::App& app, std::string_view option);

// While one lives, messages about the config file at `actual` (a private
// copy, e.g. a memfd the dropped relay reads on SIGHUP) name `shown`, the
// file the user wrote. Main thread only, as parsing is.
class ConfigShownAs {
public:
    ConfigShownAs(std::string actual, std::string shown);
    ~ConfigShownAs();
    ConfigShownAs(const ConfigShownAs&) = delete;
    ConfigShownAs& operator=(const ConfigShownAs&) = delete;
};

}  // namespace ktp
