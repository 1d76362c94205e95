// Command-line options of the daemon and the parser that fills them. Kept
// free of side effects so that unit tests can drive it with argv arrays.
#pragma once

#include "base/log.h"

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace ktp {

enum class Command {
    daemon,   // ktproxy --cgroup PATH: intercept an existing cgroup until stopped
    run,      // ktproxy run -- CMD: intercept one command in a transient cgroup
    status,   // ktproxy status: ask running instances over their control sockets
    cleanup,  // ktproxy cleanup: remove what a killed instance left behind
    doctor,   // ktproxy doctor: check the host for what ktproxy needs and what conflicts with it
    ctl,      // ktproxy ctl: change a running instance (dry-run on|off)
};

enum class LogFormat { text, json };

struct Options {
    Command command = Command::daemon;
    // cgroup2 directory whose processes are intercepted: absolute, or relative
    // to the cgroup2 mount ("app" -> /sys/fs/cgroup/app).
    std::string cgroup;
    // --cgroup-match: glob patterns of cgroup paths relative to the cgroup2
    // mount ("system.slice/docker-*.scope", "kubepods.slice/**"); only the
    // cgroups below --cgroup that match (and their descendants) are
    // intercepted. Without --cgroup, it is the patterns' literal prefix.
    std::vector<std::string> cgroup_match;
    // Listener addresses; the BPF hooks rewrite IPv4 connects to listen4 and
    // IPv6 connects to listen6. An empty listen6 disables IPv6 interception.
    std::string listen4 = "127.0.0.1";
    std::string listen6 = "::1";
    // 0: the kernel picks a free port (printed in the ready line).
    uint16_t port = 0;
    // SO_MARK on ktproxy's outgoing sockets, so the hooks let them through.
    uint32_t mark = 0x6b74;
    log::Level log_level = log::Level::info;
    // Seconds to wait for the original destination to accept.
    double connect_timeout = 10.0;
    // Size of the BPF maps: connections in flight at once.
    uint32_t max_conns = 65536;
    // Relay memory per worker: `buffers` buffers of `buffer_size` bytes,
    // shared by the worker's connections and taken only while data is in flight.
    uint32_t buffer_size = 32 * 1024;
    uint32_t buffers = 128;
    // How the relay moves bytes: "buffers" (recv/send with io_uring provided
    // buffers) or "splice" (a pipe per direction, splice(2); docs/performance.md).
    std::string relay = "splice";
    // Where connections from a process in another network namespace (a
    // container) leave from: "container" (that namespace) or "host" (ktproxy's).
    std::string egress = "container";
    // Event loop threads; 0 = one per CPU.
    uint32_t workers = 0;
    // Seconds without bytes moving either way after which a relayed
    // connection is cut; 0 = never.
    double idle_timeout = 0;
    // ktproxy's outgoing sockets: TCP keepalive (seconds idle before the
    // first probe, seconds between probes, probes; idle 0 = off) and
    // TCP_USER_TIMEOUT in seconds (0 = the kernel's default), so that a
    // destination that dies silently is noticed.
    uint32_t keepalive_idle = 30, keepalive_intvl = 10, keepalive_cnt = 3;
    double user_timeout = 60;
    // Seconds a destination ktproxy could not connect to stays in the connect
    // hooks' negative cache (its connects fail at once, as direct); 0 = off.
    double dead_cache = 5;
    // UDP from the cgroup through ktproxy's UDP relay (bpf/sock_udp.h,
    // proxy/udp/), and the seconds an unconnected flow lives without
    // datagrams. On unless --no-udp: off, the cgroup's DNS leaks direct.
    bool udp = true;
    double udp_timeout = 60;
    // Where DNS queries routed to an upstream are sent through it (IP or
    // IP:PORT); empty: the resolver the app asked.
    std::string dns_resolver;
    // The answer to a query whose name a `block` rule matches: "refused" or "nxdomain".
    std::string dns_block = "refused";
    std::string dns_mode = "real";  // real | fake (docs/dns.md)
    std::string fake_range4 = "198.18.0.0/15";
    std::string fake_range6 = "fd6b:7470:726f:7879::/64";

    // Routing (docs/rules.md): ordered rules, first match wins; named
    // upstreams that `proxy=NAME` refers to; the action when nothing matches.
    std::vector<std::string> rules;
    std::vector<std::string> upstreams;
    std::vector<std::string> upstream_groups;  // NAME=a,b,c: failover between upstreams
    std::string default_action = "proxy=direct";
    // How long to wait for a client's first bytes when a domain rule needs them.
    double sniff_timeout = 0.3;
    // TOML/INI file with the same keys as the long flags; re-read on SIGHUP.
    std::string config_file;

    LogFormat log_format = LogFormat::text;
    // Unix socket for `ktproxy status` (owner-only). Empty: the default,
    // /run/ktproxy/<cgroup name>.sock.
    std::string control_socket;
    // ADDR:PORT for Prometheus metrics over HTTP; empty = off. Loopback
    // only unless metrics_public: the page lists every connection's route.
    std::string metrics;
    bool metrics_public = false;
    // Whom the relay runs as once setup is done (daemon/privileges.h);
    // "root" (or any uid 0) keeps today's all-root process.
    std::string proxy_user = "ktproxy";
    // Keep the hooks (pinned in bpffs) when ktproxy dies, so that the cgroup's
    // connections fail instead of leaking out directly.
    bool fail_closed = false;
    // The connect hooks decide and report every connect (log, status,
    // metrics) but rewrite and fail none: rules can be tried on live traffic.
    // Switched at run time by `ktproxy ctl dry-run on|off` and SIGHUP.
    bool dry_run = false;

    // Gateway mode: proxy TCP forwarded through these interfaces (TC ingress).
    std::vector<std::string> gateway_ifaces;
    uint32_t gateway_mark = 0x6b75;   // fwmark of packets handed to ktproxy
    uint32_t gateway_table = 27509;   // routing table holding the local route

    // run: the command and whom it runs as (default: the sudo caller).
    std::vector<std::string> run_argv;
    std::string run_user;

    // status: print JSON instead of a table.
    bool status_json = false;
    bool status_watch = false;
    // doctor: print the checks as JSON.
    bool doctor_json = false;
    // ctl: what to change ("dry-run") and to what ("on" or "off").
    std::string ctl_what, ctl_value;
};

struct ParseResult {
    bool run = false;     // false: exit now with exit_code
    int exit_code = 0;
    std::string message;  // what to print (help text on stdout, or one error line)
};

// Adds the options every mode shares (listener, mark, timeouts, logging).
void add_proxy_options(CLI::App& app, Options& opts);
// --keepalive IDLE[,INTVL,CNT] or 0 into opts; what is wrong with it (without
// the flag's name, which CLI11 adds), or "" if valid.
std::string parse_keepalive(const std::string& text, Options& opts);
ParseResult parse_command_line(int argc, const char* const* argv, Options& opts);

// Every command and its flags, one "COMMAND --flag" line each ("--flag=" when
// it takes a value); COMMAND is "ktproxy" for the daemon. What
// `ktproxy --list-flags` prints: the bash completion asks it, and a test
// holds the man page to it.
std::string list_flags();

}  // namespace ktp
