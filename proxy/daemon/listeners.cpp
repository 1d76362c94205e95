// Opening the instance's listeners.
#include "daemon/listeners.h"

#include "base/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace ktp {
namespace {

// All workers on the same port: the hooks rewrite to a single port,
// SO_REUSEPORT spreads the connections over the workers. transparent: the
// gateway's listeners.
std::vector<std::vector<Listener>> open_sets(const Options& o, unsigned workers, bool transparent)
{
    const bool want6 = !o.listen6.empty();
    const bool reuse = workers > 1;
    const char* w4 = transparent ? "gateway listener" : "--listen4";
    const char* w6 = transparent ? "gateway listener" : "--listen6";
    const uint16_t first_port = transparent ? 0 : o.port;
    // The connect hooks check the cgroup listeners' mark; the gateway's are
    // reached by bpf_sk_assign and keep none.
    const uint32_t mark = transparent ? 0 : o.mark;
    for (int attempt = 0;; ++attempt) {
        std::vector<std::vector<Listener>> sets(workers);
        try {
            uint16_t port = first_port;
            // With port 0, every other attempt lets the IPv6 bind pick the
            // port: the kernel hands bind() odd ports first, and when each
            // one free on the IPv4 address is taken on the IPv6 one (the
            // apps' TIME_WAITs to ktproxy's [::1] after heavy traffic), an
            // IPv4-first pick fails every time.
            const bool v6_first = want6 && port == 0 && attempt % 2 == 1;
            for (unsigned w = 0; w < workers; ++w) {
                if (v6_first && w == 0) {
                    Listener l6 = listen_tcp(*SockAddr::parse_ip(o.listen6, 0), w6, reuse, transparent, mark);
                    port = l6.addr.port();
                    sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen4, port), w4, reuse, transparent, mark));
                    sets[w].push_back(std::move(l6));
                    continue;
                }
                sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen4, port), w4, reuse, transparent, mark));
                port = sets[w][0].addr.port();
                if (want6)
                    sets[w].push_back(listen_tcp(*SockAddr::parse_ip(o.listen6, port), w6, reuse, transparent, mark));
            }
            return sets;
        } catch (const Error& e) {
            // With port 0 the first bind picks the port; if the other
            // family finds it taken, try another.
            if (first_port == 0 && attempt < 20 &&
                std::string_view(e.what()).find("in use") != std::string_view::npos)
                continue;
            throw;
        }
    }
}

}  // namespace

ListenerPlan open_listeners(const Options& o, unsigned workers, bool cgroup_mode, bool gateway_mode)
{
    ListenerPlan p;
    p.sets.resize(workers);
    if (cgroup_mode) {
        p.sets = open_sets(o, workers, false);
        std::vector<const Listener*> ours;
        for (const auto& set : p.sets)
            for (const auto& l : set)
                ours.push_back(&l);
        refuse_shared_listeners(ours);
        p.listen4 = p.sets[0][0].addr;
        if (p.sets[0].size() > 1)
            p.listen6 = p.sets[0][1].addr;
        p.netns_cookie = netns_cookie_of(p.sets[0][0].fd.get());
    }
    if (gateway_mode) {
        auto gw = open_sets(o, workers, true);
        p.gw4 = gw[0][0].addr;
        if (gw[0].size() > 1)
            p.gw6 = gw[0][1].addr;
        for (unsigned w = 0; w < workers; ++w)
            for (auto& l : gw[w])
                p.sets[w].push_back(std::move(l));
    }
    return p;
}

std::string ListenerPlan::where(const Options& o, const std::string& cgroup_path) const
{
    std::string out;
    if (listen4)
        out = fmt::format("listening on {}{}, cgroup {}", listen4->to_string(),
                          listen6 ? " and " + listen6->to_string() : std::string(), cgroup_path);
    if (gw4)
        out += fmt::format("{}gateway on {} via {}{}", out.empty() ? "" : ", ", fmt::join(o.gateway_ifaces, ","),
                           gw4->to_string(), gw6 ? " and " + gw6->to_string() : std::string());
    out += fmt::format("{}{}", out.empty() ? "" : ", ", udp_state(o));
    return out;
}

std::string ListenerPlan::udp_state(const Options& o) const
{
    if (udp_port)
        return fmt::format("UDP relay on port {}", udp_port);
    // Never silent: UDP off means the cgroup's DNS queries go out directly.
    if (!listen4)
        return "UDP not intercepted (no --cgroup: the gateway proxies forwarded TCP only)";
    if (!o.udp)
        return "UDP not intercepted (--no-udp: the cgroup's UDP and DNS go direct)";
    return "UDP not intercepted";
}

std::string ListenerPlan::listening(const Options& o) const
{
    std::string out;
    if (listen4)
        out = fmt::format("{}{}", listen4->to_string(), listen6 ? " " + listen6->to_string() : std::string());
    if (gw4)
        out += fmt::format("{}gateway {} via {}{}", out.empty() ? "" : " ", fmt::join(o.gateway_ifaces, ","),
                           gw4->to_string(), gw6 ? " " + gw6->to_string() : std::string());
    return out;
}

}  // namespace ktp
