// What SIGHUP may change: the rules, upstreams and default action, built
// whole from the options, and the dry run; the reload that swaps them in or
// refuses them.
#pragma once

#include "config/options.h"
#include "kernel/route_compiler.h"
#include "loop/event_loop.h"
#include "route/router.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ktp {

class KernelSide;

struct Routing {
    std::shared_ptr<const Router> router;
    std::vector<CompiledRoute> kernel;
    uint32_t default_action;
};

// Throws Error (one line) for a bad rule, upstream or unresolvable host.
Routing build_routing(const Options& o);

// SIGHUP reloads since start, for status and metrics.
struct ReloadCount {
    uint64_t applied = 0, refused = 0;
    std::string last_error;

    void refuse(std::string why);
};

// Parses argv again (flags and --config) and, only if all of it is good,
// publishes the new rules to the kernel and the workers; otherwise the rules
// in force stay and the refusal is logged and counted.
// read_config, when given, supplies the --config file's bytes (the dropped
// relay cannot open a root-only file: the privileged helper reads it).
using ConfigReader = std::function<std::string()>;
void reload(int argc, const char* const* argv, KernelSide& kernel, RouterSlot& slot, ReloadCount& count,
            const std::string& config_file = {}, const ConfigReader& read_config = {});

}  // namespace ktp
