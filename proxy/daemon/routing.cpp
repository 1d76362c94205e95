// Building the rules from the options, and reloading them on SIGHUP.
#include "daemon/routing.h"

#include "base/error.h"
#include "base/log.h"
#include "daemon/kernel_side.h"

namespace ktp {

Routing build_routing(const Options& o)
{
    auto router = std::make_shared<const Router>(o.rules, o.upstreams, o.default_action);
    auto kernel = compile_routes(router->rules());
    return Routing{router, std::move(kernel), to_kernel_action(router->default_action())};
}

void ReloadCount::refuse(std::string why)
{
    log::error("reload refused, keeping the rules in force: {}", why);
    ++refused;
    last_error = std::move(why);
}

void reload(int argc, const char* const* argv, KernelSide& kernel, RouterSlot& slot, ReloadCount& count)
{
    // Everything that can fail (parsing, rules, upstream names, compiling
    // for the kernel) happens before anything is swapped in.
    Options fresh;
    ParseResult pr = parse_command_line(argc, argv, fresh);
    if (!pr.run) {
        count.refuse(pr.exit_code == 0 ? std::string("--help or --version on the command line") : pr.message);
        return;
    }
    // Checked before anything is swapped: the file may have dropped
    // fail-closed or gateway-iface, which this running instance still has.
    if (std::string why = kernel.dry_run_refusal(); fresh.dry_run && !why.empty()) {
        count.refuse("--dry-run: " + why);
        return;
    }
    try {
        Routing next = build_routing(fresh);
        kernel.set_routes(next);
        slot.store(next.router, std::memory_order_release);
        // The file (or command line) decides the dry run again, whatever
        // `ktproxy ctl` switched it to since.
        const bool was = kernel.dry_run();
        kernel.set_dry_run(fresh.dry_run);
        ++count.applied;
        log::info("reloaded: {}{}", next.router->describe(),
                  was == fresh.dry_run ? "" : fresh.dry_run ? "; dry run on" : "; dry run off");
    } catch (const Error& e) {
        count.refuse(e.what());
    }
}

}  // namespace ktp
