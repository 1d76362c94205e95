// Building the rules from the options, and reloading them on SIGHUP.
#include "daemon/routing.h"

#include "base/error.h"
#include "base/log.h"
#include "config/config_file.h"
#include "daemon/kernel_side.h"

#include <sys/mman.h>
#include <unistd.h>

#include <optional>
#include <utility>
#include <vector>

namespace ktp {

Routing build_routing(const Options& o)
{
    auto router = std::make_shared<const Router>(o.rules, o.upstreams, o.default_action, o.upstream_groups);
    std::vector<Rule> kernel_rules = router->rules();
    if (o.dns_mode == "fake") {
        // Fake mode: the hooks send every connect to a fake address to
        // ktproxy, whatever the rules say (a cidr rule may say direct), so
        // that none goes out on the network: ktproxy refuses what it cannot
        // route by name (tcp/setup.cpp).
        std::vector<Rule> fake;
        const std::pair<const char*, const std::string*> ranges[] = {{"--fake-range4", &o.fake_range4},
                                                                     {"--fake-range6", &o.fake_range6}};
        for (const auto& [flag, range] : ranges) {
            const std::string& text = *range;
            auto c = parse_cidr(text);
            if (auto* f = std::get_if<ParseFailure>(&c))
                fail("{} {}: {}", flag, text, f->message);
            fake.push_back(Rule{std::get<Cidr>(c), std::nullopt, std::nullopt, Action{ActionKind::proxy, "fake"}, text});
        }
        kernel_rules.insert(kernel_rules.begin(), fake.begin(), fake.end());
    }
    auto kernel = compile_routes(kernel_rules);
    return Routing{router, std::move(kernel), to_kernel_action(router->default_action())};
}

void ReloadCount::refuse(std::string why)
{
    log::error("reload refused, keeping the rules in force: {}", why);
    ++refused;
    last_error = std::move(why);
}

namespace {

// argv with the --config value swapped for `copy`.
std::vector<const char*> with_config(int argc, const char* const* argv, const std::string& file,
                                     const std::string& copy, std::string& joined)
{
    std::vector<const char*> out(argv, argv + argc);
    joined = "--config=" + copy;
    for (int i = 1; i < argc; ++i) {
        std::string_view a(argv[i]);
        if (a == "--config" && i + 1 < argc && argv[i + 1] == file)
            out[static_cast<size_t>(i + 1)] = copy.c_str();
        else if (a == "--config=" + file)
            out[static_cast<size_t>(i)] = joined.c_str();
    }
    return out;
}

}  // namespace

void reload(int argc, const char* const* argv, KernelSide& kernel, RouterSlot& slot, ReloadCount& count,
            const std::string& config_file, const ConfigReader& read_config)
{
    // Everything that can fail (parsing, rules, upstream names, compiling
    // for the kernel) happens before anything is swapped in.
    Options fresh;
    UniqueFd copy;
    std::string copy_path, joined;
    std::vector<const char*> args(argv, argv + argc);
    std::optional<ConfigShownAs> shown;
    if (read_config && !config_file.empty()) {
        // The file as the helper read it, in a memfd this process can open.
        try {
            std::string text = read_config();
            copy = UniqueFd(memfd_create("ktproxy-config", MFD_CLOEXEC));
            if (!copy || ::write(copy.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
                fail_errno("copy the config file");
        } catch (const Error& e) {
            count.refuse(e.what());
            return;
        }
        copy_path = "/proc/self/fd/" + std::to_string(copy.get());
        args = with_config(argc, argv, config_file, copy_path, joined);
        shown.emplace(copy_path, config_file);
    }
    ParseResult pr = parse_command_line(static_cast<int>(args.size()), args.data(), fresh);
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
