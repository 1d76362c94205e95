// CLI11 wiring for ktproxy's flags and their validation.
#include "config/options.h"

#include "config/cgroup_glob.h"
#include "config/config_file.h"
#include "base/sock_addr.h"

#include <arpa/inet.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <memory>

namespace ktp {

void add_proxy_options(CLI::App& app, Options& o)
{
    app.add_option("--listen4", o.listen4, "IPv4 address of the local listener that intercepted IPv4 connections are sent to")
        ->capture_default_str();
    app.add_option("--listen6", o.listen6, "IPv6 address of the local listener for IPv6 connections; \"\" disables IPv6 interception")
        ->capture_default_str();
    app.add_option("--port", o.port, "listener port; 0 lets the kernel pick a free one")
        ->capture_default_str();
    app.add_option("--mark", o.mark, "SO_MARK on ktproxy's outgoing sockets (the hooks skip them) and listeners (the hooks deliver only to them); decimal or 0x hex")
        ->capture_default_str();
    app.add_option("--connect-timeout", o.connect_timeout, "seconds to wait for the original destination to accept")
        ->check(CLI::Range(0.1, 3600.0))
        ->capture_default_str();
    app.add_option("--max-conns", o.max_conns, "size of the kernel's hand-off map (connections established by apps, not yet on ktproxy's side)")
        ->check(CLI::Range(1024u, 4u * 1024 * 1024))
        ->capture_default_str();
    app.add_option("--buffer-size", o.buffer_size, "bytes per relay buffer")
        ->check(CLI::Range(4096u, 1024u * 1024))
        ->capture_default_str();
    app.add_option("--buffers", o.buffers,
                   "relay buffers per worker, a power of two; taken only while data is in flight, so this bounds "
                   "relay memory whatever the number of connections")
        ->check(CLI::Range(16u, 32768u))
        ->capture_default_str();
    app.add_option("--relay", o.relay,
                   "how bytes are relayed: buffers (io_uring recv/send into provided buffers) or splice (a pipe "
                   "per direction, bytes never copied to user space; --buffers then bounds the pipes per worker)")
        ->check(CLI::IsMember({"buffers", "splice"}))
        ->capture_default_str();
    app.add_option("--egress", o.egress,
                   "where a container's connections leave from: container (its own network namespace, its routes "
                   "and NAT) or host (ktproxy's namespace: a container with loopback only reaches what ktproxy "
                   "lets it)")
        ->check(CLI::IsMember({"container", "host"}))
        ->capture_default_str();
    app.add_option("--workers", o.workers, "event loop threads (0: one per CPU)")
        ->check(CLI::Range(0u, 256u))
        ->capture_default_str();
    app.add_option("--idle-timeout", o.idle_timeout,
                   "seconds without a byte moving either way before a connection is cut (0: never)")
        ->check(CLI::Range(0.0, 1e7))
        ->capture_default_str();
    // Liveness of ktproxy's outgoing sockets (tcp/setup.cpp, TcpSetup::set_upstream_options).
    app.add_option_function<std::string>(
           "--keepalive", [&o](const std::string& v) { parse_keepalive(v, o); },
           "TCP keepalive on ktproxy's outgoing sockets: IDLE[,INTVL,CNT] seconds idle before the first probe, "
           "seconds between probes, unanswered probes before the connection is reset (0: off)")
        ->check(CLI::Validator(
            [](std::string& v) {
                Options scratch;
                return parse_keepalive(v, scratch);
            },
            "IDLE[,INTVL,CNT]"))
        ->default_str("30,10,3");
    app.add_option("--user-timeout", o.user_timeout,
                   "TCP_USER_TIMEOUT on ktproxy's outgoing sockets: seconds sent data may stay unacknowledged "
                   "before the connection is reset (0: the kernel's default, about 15 minutes)")
        ->check(CLI::Range(0.0, 2000000.0))
        ->capture_default_str();
    app.add_option("--dead-cache", o.dead_cache,
                   "seconds a destination that refused ktproxy or never answered makes the cgroup's connects to it "
                   "fail at once with that error, as direct, so apps try the next address (0: off)")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    // On by default: without it the cgroup's DNS queries leave the host
    // directly whatever the rules say (docs/dns.md "Leak model").
    app.add_flag("--udp,!--no-udp", o.udp,
                 "intercept the cgroup's UDP and DNS (on by default; --no-udp leaves UDP untouched and DNS goes "
                 "straight to the resolver; docs/dns.md)");
    app.add_option("--udp-timeout", o.udp_timeout,
                   "seconds an unconnected UDP flow lives without a datagram before its state is dropped")
        ->check(CLI::Range(1.0, 86400.0))
        ->capture_default_str();
    app.add_option("--dns-resolver", o.dns_resolver,
                   "resolver (IP or IP:PORT, [IPv6]:PORT) that DNS queries routed to an upstream are sent to "
                   "through it, over TCP (default: the resolver the app asked)");
    app.add_option("--dns-block", o.dns_block,
                   "answer to a DNS query whose name a block rule matches: refused or nxdomain")
        ->check(CLI::IsMember({"refused", "nxdomain"}))
        ->capture_default_str();
    app.add_option("--dns-mode", o.dns_mode,
                   "real: DNS queries are forwarded by their route; fake: A/AAAA queries for names routed to a proxy "
                   "upstream are answered with fake addresses, the name is resolved only at the upstream (not with --no-udp)")
        ->check(CLI::IsMember({"real", "fake"}))
        ->capture_default_str();
    app.add_option("--fake-range4", o.fake_range4, "IPv4 range of the fake addresses (--dns-mode fake)")
        ->capture_default_str();
    app.add_option("--fake-range6", o.fake_range6, "IPv6 range of the fake addresses (--dns-mode fake)")
        ->capture_default_str();
    app.add_option("--rule", o.rules,
                   "routing rule, repeatable, first match wins: [cidr=NET] [port=N|N-M] [domain=NAME|*.NAME] "
                   "direct|block|proxy=UPSTREAM (see docs/rules.md)")
        ->allow_extra_args(false)
        ->take_all();
    app.add_option("--upstream", o.upstreams,
                   "named upstream, repeatable: NAME=socks5://[user:pass@]host:port or NAME=http://[user:pass@]host:port")
        ->allow_extra_args(false)
        ->take_all();
    app.add_option("--upstream-group", o.upstream_groups,
                   "upstream group, repeatable: NAME=UPSTREAM,UPSTREAM... used like an upstream: the first member "
                   "that is up; one that fails is skipped for a back-off (docs/usage.md)")
        ->allow_extra_args(false)
        ->take_all();
    app.add_option("--default", o.default_action,
                   "action when no rule matches: direct, block, or proxy=UPSTREAM (proxy=direct: via ktproxy, "
                   "straight to the original destination)")
        ->capture_default_str();
    app.add_option("--sniff-timeout", o.sniff_timeout,
                   "seconds to wait for a client's first bytes (TLS SNI / HTTP Host) when a domain rule needs them")
        ->check(CLI::Range(0.001, 60.0))
        ->capture_default_str();
    app.add_option_function<std::string>(
           "--log-level",
           [&o](const std::string& v) { o.log_level = *log::parse_level(v); },
           "trace, debug, info (one line per connection), warn or error")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
        ->default_str("info");
}

std::string parse_keepalive(const std::string& text, Options& o)
{
    // IDLE alone keeps the default interval and count.
    uint32_t v[3] = {0, 10, 3};
    size_t start = 0;
    int n = 0;
    for (; n < 3 && start <= text.size(); ++n) {
        size_t comma = text.find(',', start);
        std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (part.empty() || part.size() > 5 || part.find_first_not_of("0123456789") != std::string::npos)
            return fmt::format("'{}' is not IDLE[,INTVL,CNT] in whole seconds (or 0 for off)", text);
        v[n] = static_cast<uint32_t>(std::stoul(part));
        if (comma == std::string::npos) {
            ++n;
            break;
        }
        start = comma + 1;
        if (n == 2)
            return fmt::format("'{}' has more than three fields (IDLE,INTVL,CNT)", text);
    }
    if (n == 2)
        return fmt::format("'{}' gives INTVL without CNT (IDLE or IDLE,INTVL,CNT)", text);
    if (v[0] == 0 && n == 1) {
        o.keepalive_idle = 0;
        return {};
    }
    // The kernel's bounds (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT).
    if (v[0] < 1 || v[0] > 32767 || v[1] < 1 || v[1] > 32767 || v[2] < 1 || v[2] > 127)
        return fmt::format("'{}' out of range (IDLE and INTVL 1-32767 s, CNT 1-127; 0 alone for off)",
                           text);
    o.keepalive_idle = v[0];
    o.keepalive_intvl = v[1];
    o.keepalive_cnt = v[2];
    return {};
}

namespace {

// 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104.
bool is_loopback(const SockAddr& a)
{
    uint32_t m[4];
    a.to_mapped(m);
    if (m[0] == 0 && m[1] == 0 && ntohl(m[2]) == 0xffff)
        return (ntohl(m[3]) >> 24) == 127;
    return m[0] == 0 && m[1] == 0 && m[2] == 0 && ntohl(m[3]) == 1;
}

std::string validate(const Options& o)
{
    if (!SockAddr::parse_ip(o.listen4, 0) || SockAddr::parse_ip(o.listen4, 0)->family() != AF_INET)
        return fmt::format("--listen4: '{}' is not an IPv4 address", o.listen4);
    if (!o.listen6.empty() &&
        (!SockAddr::parse_ip(o.listen6, 0) || SockAddr::parse_ip(o.listen6, 0)->family() != AF_INET6))
        return fmt::format("--listen6: '{}' is not an IPv6 address", o.listen6);
    // The hooks rewrite connects to the listener's address and ktproxy then
    // asks for the destination of sockets whose local end is that address:
    // it must be one a connection can be made to and accepted on.
    {
        uint32_t a[4];
        SockAddr::parse_ip(o.listen4, 0)->to_mapped(a);
        const uint32_t v4 = ntohl(a[3]);
        if (v4 == 0 || v4 == 0xffffffffu || (v4 >> 28) == 0xe)
            return fmt::format("--listen4: '{}' is {}: connections are made to one address; give a unicast one "
                               "such as 127.0.0.1",
                               o.listen4, v4 == 0 ? "the unspecified address" : v4 >> 28 == 0xe ? "multicast" : "broadcast");
        if (!o.listen6.empty()) {
            SockAddr::parse_ip(o.listen6, 0)->to_mapped(a);
            const bool unspecified = (a[0] | a[1] | a[2] | a[3]) == 0;
            const bool multicast = (ntohl(a[0]) >> 24) == 0xff;
            const bool mapped = a[0] == 0 && a[1] == 0 && ntohl(a[2]) == 0xffff;
            if (unspecified || multicast || mapped)
                return fmt::format("--listen6: '{}' is {}: connections are made to one address; give a unicast one "
                                   "such as ::1",
                                   o.listen6, unspecified ? "the unspecified address" : multicast ? "multicast" : "v4-mapped");
        }
    }
    if (o.mark == 0)
        return "--mark: must not be 0 (0 is every unmarked socket)";
    if (o.gateway_mark == 0 || o.gateway_mark == o.mark)
        return "--gateway-mark: must be non-zero and differ from --mark";
    // A dry run lets every connect out directly, and a ktproxy that dies in
    // it would leave pinned hooks doing the same: the opposite of fail-closed.
    if (o.dry_run && o.fail_closed)
        return "--dry-run: not with --fail-closed (a dry run lets connections out directly, which --fail-closed "
               "exists to prevent); try the rules without --fail-closed first";
    if ((o.buffers & (o.buffers - 1)) != 0)
        return fmt::format("--buffers: {} is not a power of two", o.buffers);
    if (!o.metrics.empty()) {
        auto colon = o.metrics.rfind(':');
        unsigned port = 0;
        bool ok = colon != std::string::npos && colon + 1 < o.metrics.size() &&
                  o.metrics.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
                  o.metrics.size() - colon - 1 <= 5 && (port = std::stoul(o.metrics.substr(colon + 1))) > 0 &&
                  port <= 65535 && SockAddr::parse_ip(o.metrics.substr(0, colon), 0);
        if (!ok)
            return fmt::format("--metrics: '{}' is not ADDR:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)", o.metrics);
        if (!o.metrics_public && !is_loopback(*SockAddr::parse_ip(o.metrics.substr(0, colon), 0)))
            return fmt::format("--metrics: '{}' is not a loopback address; the page shows every connection's "
                               "route: give --metrics-public to serve it there anyway",
                               o.metrics);
    }
    return {};
}

}  // namespace

namespace {

constexpr const char* kAbout =
    "ktproxy: send every TCP connection made by the processes of one cgroup through a local\n"
    "proxy, transparently (eBPF connect/sockops/getsockopt hooks + an io_uring relay).\n\n"
    "Usage:\n"
    "  ktproxy --cgroup PATH [options]        intercept a cgroup until stopped (Ctrl-C)\n"
    "  ktproxy run [options] -- CMD [ARGS]    run one command with its connections intercepted\n"
    "  ktproxy status [--json]                show live connections of running instances\n"
    "  ktproxy cleanup [--cgroup PATH]        remove state left by a killed ktproxy (all, or one instance's)\n"
    "  ktproxy doctor [--cgroup PATH]         check this host for what ktproxy needs and what conflicts\n"
    "  ktproxy ctl dry-run on|off             switch a running instance's dry run\n\n"
    "Example:  sudo ktproxy --cgroup /sys/fs/cgroup/app --upstream tor=socks5://127.0.0.1:9050 \\\n"
    "                       --rule 'domain=*.onion proxy=tor'\n"
    "Every connect() from a process in that cgroup then goes via ktproxy. Stop with Ctrl-C:\n"
    "the hooks go away with the process (fail-open) unless --fail-closed.";

void add_instance_options(CLI::App& app, Options& o)
{
    app.add_option("--control", o.control_socket,
                   "unix socket that `ktproxy status` talks to (default /run/ktproxy/NAME.sock, mode 0600)");
    app.add_option("--metrics", o.metrics, "serve Prometheus metrics over HTTP on ADDR:PORT, e.g. 127.0.0.1:9464");
    app.add_flag("--metrics-public", o.metrics_public,
                 "allow --metrics on a non-loopback address (the page names every connection's route)");
    app.add_option("--proxy-user", o.proxy_user,
                   "user the relay runs as once the hooks are attached (default ktproxy, else nobody); root keeps "
                   "every privilege")
        ->capture_default_str();
    app.add_option_function<std::string>(
           "--log-format", [&o](const std::string& v) { o.log_format = v == "json" ? LogFormat::json : LogFormat::text; },
           "text, or json for one JSON object per line")
        ->check(CLI::IsMember({"text", "json"}))
        ->default_str("text");
    app.add_option("--gateway-iface", o.gateway_ifaces,
                   "also proxy TCP forwarded through this interface (repeatable; containers, VMs, LAN clients "
                   "routed via this host); see docs/gateway.md")
        ->allow_extra_args(false)
        ->take_all();
    app.add_option("--gateway-mark", o.gateway_mark, "fwmark for packets the gateway hands to ktproxy")
        ->capture_default_str();
    app.add_option("--gateway-table", o.gateway_table, "routing table for the gateway's local route")
        ->check(CLI::Range(1u, 0xfffffffeu))
        ->capture_default_str();
    app.add_flag("--fail-closed", o.fail_closed,
                 "pin the hooks in bpffs so that, if ktproxy dies, the cgroup's connections fail instead of going "
                 "out directly; a restarted ktproxy takes over, `ktproxy cleanup` removes them");
    app.add_flag("--dry-run", o.dry_run,
                 "the hooks decide but change nothing: every connect that would be redirected, blocked or passed is "
                 "logged and counted, and goes out directly; switch with `ktproxy ctl dry-run on|off` or SIGHUP");
}

// A message about "--name..." whose value came from the config file says
// where in the file: the user edits the file, not a flag.
std::string with_origin(const CLI::App& app, std::string message)
{
    if (message.rfind("--", 0) != 0)
        return message;
    size_t end = message.find_first_of(": ", 2);
    std::string origin = config_origin(app, std::string_view(message).substr(2, end == std::string::npos ? end : end - 2));
    return origin.empty() ? message : fmt::format("{}: {}", origin, message);
}

ParseResult parse_app(CLI::App& app, int argc, const char* const* argv, Options& opts)
{
    ParseResult r;
    try {
        app.parse(argc, argv);
        if (auto* cfg = app.get_config_ptr(); cfg && cfg->count() > 0)
            opts.config_file = cfg->as<std::string>();
    } catch (const CLI::CallForHelp&) {
        r.message = app.help();
        return r;
    } catch (const CLI::CallForVersion&) {
        r.message = "ktproxy " KTP_VERSION "\n";
        return r;
    } catch (const CLI::ParseError& e) {
        r.exit_code = 2;
        std::string what = with_origin(app, e.what());
        // A config file's error names the file and line; --help adds nothing.
        r.message = what.rfind("config ", 0) == 0
                        ? what
                        : fmt::format("{} (see ktproxy{} --help)", what,
                                      opts.command == Command::daemon ? "" : " " + app.get_name());
        return r;
    }
    if (auto err = validate(opts); !err.empty()) {
        r.exit_code = 2;
        r.message = with_origin(app, err);
        return r;
    }
    r.run = true;
    return r;
}

}  // namespace

namespace {

constexpr const char* kCommands[] = {"run", "status", "cleanup", "doctor", "ctl"};

// The parser of one command ("" is the daemon). One builder per command, used
// both to parse and to list the flags, so the two cannot differ.
std::unique_ptr<CLI::App> make_app(std::string_view sub, Options& opts)
{
    std::unique_ptr<CLI::App> app;
    if (sub == "run") {
        opts.command = Command::run;
        app = std::make_unique<CLI::App>(
            "ktproxy run: run CMD in a transient cgroup whose TCP connections go through ktproxy;\n"
            "exits with CMD's exit status. As root via sudo, CMD runs as the calling user.\n"
            "Example: sudo ktproxy run --upstream s=socks5://10.0.0.5:1080 --default proxy=s -- curl URL",
            "run");
        app->set_config("--config", "", "TOML file with any long option as a key")->check(CLI::ExistingFile);
        use_strict_config(*app);
        app->add_option("--user", opts.run_user, "run CMD as this user (default: $SUDO_USER, else the current user)");
        // A wrapper stays quiet unless something goes wrong; --log-level info
        // shows one line per connection as the daemon does.
        opts.log_level = log::Level::warn;
        add_proxy_options(*app, opts);
        app->get_option("--log-level")->default_str("warn");
        add_instance_options(*app, opts);
    } else if (sub == "status") {
        opts.command = Command::status;
        app = std::make_unique<CLI::App>("ktproxy status: live connections and counters of running ktproxy instances",
                                         "status");
        app->add_option("--control", opts.control_socket, "ask only this control socket");
        app->add_flag("--json", opts.status_json, "print JSON");
        app->add_flag("--watch", opts.status_watch,
                      "live view of the connections' rates, refreshed each second (plain lines when not a terminal)");
    } else if (sub == "cleanup") {
        opts.command = Command::cleanup;
        app = std::make_unique<CLI::App>("ktproxy cleanup: remove pinned hooks (--fail-closed), transient cgroups and "
                                         "gateway routing state left by a ktproxy that was killed",
                                         "cleanup");
        app->add_option("--cgroup", opts.cgroup,
                        "only what the instance of this cgroup left (its pins, lock and control socket): another "
                        "instance's --fail-closed hooks stay, even while it restarts");
    } else if (sub == "doctor") {
        opts.command = Command::doctor;
        app = std::make_unique<CLI::App>(
            "ktproxy doctor: check this host for every kernel feature ktproxy uses and for what would conflict\n"
            "with it (other BPF programs, ip rules, a running instance); one verdict and one fix per check.\n"
            "Exit status: 0 all good (warnings allowed), 1 something ktproxy would do fails, 2 bad usage.",
            "doctor");
        app->add_option("--cgroup", opts.cgroup,
                        "the cgroup2 directory ktproxy will intercept: also check it and the programs attached to it");
        app->add_option("--gateway-iface", opts.gateway_ifaces,
                        "an interface ktproxy will proxy forwarded TCP on (repeatable): check it, its TC filters "
                        "and the gateway's ip rules")
            ->allow_extra_args(false)
            ->take_all();
        app->add_option("--max-conns", opts.max_conns, "the --max-conns ktproxy will run with (RLIMIT_NOFILE check)")
            ->check(CLI::Range(1024u, 4u * 1024 * 1024))
            ->capture_default_str();
        app->add_option("--mark", opts.mark, "the --mark ktproxy will run with (ip rule check)")->capture_default_str();
        app->add_option("--gateway-mark", opts.gateway_mark, "the --gateway-mark ktproxy will run with")
            ->capture_default_str();
        app->add_option("--gateway-table", opts.gateway_table, "the --gateway-table ktproxy will run with")
            ->check(CLI::Range(1u, 0xfffffffeu))
            ->capture_default_str();
        app->add_flag("--fail-closed", opts.fail_closed, "ktproxy will run with --fail-closed: bpffs is then required");
        app->add_flag("--json", opts.doctor_json, "print the checks as JSON");
    } else if (sub == "ctl") {
        opts.command = Command::ctl;
        app = std::make_unique<CLI::App>(
            "ktproxy ctl: change a running instance through its control socket, without restarting it or its apps.\n"
            "  ktproxy ctl dry-run on|off   the connect hooks decide and report, or act (see --dry-run)",
            "ctl");
        app->add_option("--control", opts.control_socket,
                        "the instance's control socket (default: the only one in /run/ktproxy)");
        app->add_option("what", opts.ctl_what, "what to change: dry-run")->required()->check(CLI::IsMember({"dry-run"}));
        app->add_option("value", opts.ctl_value, "on or off")->required()->check(CLI::IsMember({"on", "off"}));
    } else {
        opts.command = Command::daemon;
        app = std::make_unique<CLI::App>(kAbout, "ktproxy");
        app->set_version_flag("--version", "ktproxy " KTP_VERSION);
        app->set_config("--config", "",
                        "TOML file with any long option as a key (rule = [\"...\"]); re-read on SIGHUP")
            ->check(CLI::ExistingFile);
        use_strict_config(*app);
        app->add_option("--cgroup", opts.cgroup,
                        "cgroup2 directory to intercept, absolute or relative to the cgroup2 mount");
        app->add_option("--cgroup-match", opts.cgroup_match,
                        "repeatable: intercept only the cgroups (existing and future) whose path relative to the "
                        "cgroup2 mount matches this glob (* within a level, ** any depth), and their descendants")
            ->allow_extra_args(false)
            ->take_all();
        add_proxy_options(*app, opts);
        add_instance_options(*app, opts);
    }
    return app;
}

}  // namespace

std::string list_flags()
{
    std::string out;
    for (std::string_view sub : {std::string_view(""), std::string_view(kCommands[0]), std::string_view(kCommands[1]),
                                 std::string_view(kCommands[2]), std::string_view(kCommands[3]),
                                 std::string_view(kCommands[4])}) {
        Options scratch;
        auto app = make_app(sub, scratch);
        const std::string cmd = sub.empty() ? "ktproxy" : std::string(sub);
        for (const CLI::Option* opt : app->get_options())
            for (const std::string& l : opt->get_lnames())
                out += fmt::format("{} --{}{}\n", cmd, l, opt->get_expected_max() == 0 ? "" : "=");
    }
    return out;
}

ParseResult parse_command_line(int argc, const char* const* argv, Options& opts)
{
    std::string_view sub = argc > 1 ? argv[1] : "";
    if (sub == "--list-flags") {
        ParseResult r;
        r.message = list_flags();
        return r;
    }
    if (sub == "run") {
        // Everything after "--" is the command, passed on untouched.
        int split = argc;
        for (int i = 2; i < argc; ++i)
            if (std::string_view(argv[i]) == "--") {
                split = i;
                break;
            }
        auto app = make_app(sub, opts);
        std::vector<const char*> args{"ktproxy run"};
        for (int i = 2; i < split; ++i)
            args.push_back(argv[i]);
        ParseResult r = parse_app(*app, static_cast<int>(args.size()), args.data(), opts);
        if (!r.run)
            return r;
        for (int i = split + 1; i < argc; ++i)
            opts.run_argv.emplace_back(argv[i]);
        if (opts.run_argv.empty()) {
            r.run = false;
            r.exit_code = 2;
            r.message = "run: no command given; put it after --, e.g. ktproxy run -- curl http://example.com/";
        }
        return r;
    }
    if (sub == "status" || sub == "cleanup" || sub == "doctor" || sub == "ctl") {
        auto app = make_app(sub, opts);
        return parse_app(*app, argc - 1, argv + 1, opts);
    }

    auto app = make_app("", opts);
    ParseResult r = parse_app(*app, argc, argv, opts);
    if (r.run && opts.cgroup.empty() && !opts.cgroup_match.empty()) {
        opts.cgroup = cgroup_glob_prefix(opts.cgroup_match);
        if (opts.cgroup.empty()) {
            r.run = false;
            r.exit_code = 2;
            r.message = "--cgroup-match: the patterns share no literal parent directory; give --cgroup too";
            return r;
        }
    }
    if (r.run && opts.cgroup.empty() && opts.gateway_ifaces.empty()) {
        r.run = false;
        r.exit_code = 2;
        r.message = "--cgroup is required (or --gateway-iface, or `ktproxy run -- CMD`; see ktproxy --help)";
    } else if (r.run && opts.dry_run && !opts.gateway_ifaces.empty()) {
        // The gateway's TC program has no dry run: beside --cgroup it would
        // still redirect and block forwarded connections.
        r.run = false;
        r.exit_code = 2;
        r.message = "--dry-run: not with --gateway-iface (forwarded traffic has no dry run: it would still be "
                    "proxied and blocked); dry-run the rules on --cgroup alone";
    }
    return r;
}

}  // namespace ktp
