// Router: rule evaluation in user space and upstream resolution.
#include "route/router.h"

#include <algorithm>

#include "base/error.h"

#include <netdb.h>

#include <fmt/format.h>

namespace ktp {

namespace {

SockAddr resolve(const UpstreamUrl& u, const std::string& name)
{
    if (auto a = SockAddr::parse_ip(u.host, u.port))
        return *a;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(u.host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || !res)
        fail("upstream {}: cannot resolve host '{}': {}", name, u.host, gai_strerror(rc));
    SockAddr a(res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    auto with_port = SockAddr::parse_ip(a.ip_string(), u.port);
    return *with_port;
}

}  // namespace

Router::Router(const std::vector<std::string>& rules, const std::vector<std::string>& upstreams,
               const std::string& default_action, const std::vector<std::string>& groups)
{
    auto direct = std::make_unique<Upstream>();
    direct->name = "direct";
    direct->url.kind = UpstreamUrl::Kind::direct;
    upstreams_.push_back(std::move(direct));

    for (const std::string& spec : upstreams) {
        auto eq = spec.find('=');
        if (eq == std::string::npos || eq == 0)
            fail("--upstream '{}': expected NAME=URL, e.g. corp=socks5://user:pass@10.0.0.5:1080", spec);
        std::string name = spec.substr(0, eq);
        if (upstream(name))
            fail("--upstream '{}': upstream '{}' is defined twice", spec, name);
        auto url = parse_upstream_url(spec.substr(eq + 1));
        if (auto* f = std::get_if<ParseFailure>(&url))
            fail("--upstream {}: {}", name, f->message);
        auto up = std::make_unique<Upstream>();
        up->name = name;
        up->url = std::get<UpstreamUrl>(url);
        if (up->url.kind != UpstreamUrl::Kind::direct)
            up->addr = resolve(up->url, name);
        upstreams_.push_back(std::move(up));
    }

    for (const std::string& spec : groups) {
        auto eq = spec.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
            fail("--upstream-group '{}': expected NAME=UPSTREAM,UPSTREAM..., e.g. out=a,b", spec);
        std::string name = spec.substr(0, eq);
        if (upstream(name))
            fail("--upstream-group '{}': the name '{}' is already an upstream or group", spec, name);
        auto g = std::make_unique<Upstream>();
        g->name = name;
        g->url.pool = 0;
        std::string_view list(spec);
        list.remove_prefix(eq + 1);
        while (!list.empty()) {
            size_t comma = list.find(',');
            std::string member(list.substr(0, comma));
            list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
            const Upstream* m = upstream(member);
            if (!m || !m->members.empty() || m->url.kind == UpstreamUrl::Kind::direct)
                fail("--upstream-group {}: '{}' is not a proxy upstream (members are --upstream names, not "
                     "direct or groups)", name, member);
            if (std::find(g->members.begin(), g->members.end(), m) != g->members.end())
                fail("--upstream-group {}: '{}' is listed twice", name, member);
            g->members.push_back(m);
            m->health->grouped.store(true, std::memory_order_relaxed);
        }
        upstreams_.push_back(std::move(g));
    }

    for (const std::string& text : rules) {
        auto r = parse_rule(text);
        if (auto* f = std::get_if<ParseFailure>(&r))
            fail("--rule '{}': {}", text, f->message);
        rules_.push_back(std::get<Rule>(r));
    }
    auto d = parse_action(default_action);
    if (auto* f = std::get_if<ParseFailure>(&d))
        fail("--default '{}': {}", default_action, f->message);
    default_ = std::get<Action>(d);

    auto check = [&](const Action& a, const std::string& where) {
        if (a.kind == ActionKind::proxy && !upstream(a.upstream))
            fail("{}: no upstream named '{}' (define it with --upstream {}=socks5://HOST:PORT)", where,
                 a.upstream, a.upstream);
    };
    for (const Rule& r : rules_) {
        check(r.action, fmt::format("--rule '{}'", r.text));
        has_domain_rules_ |= r.domain.has_value();
    }
    check(default_, "--default");
}

const Upstream* Router::upstream(const std::string& name) const
{
    for (const auto& u : upstreams_)
        if (u->name == name)
            return u.get();
    return nullptr;
}

Decision Router::finish(const Action& a, int rule) const
{
    Decision d;
    d.kind = Decision::decided;
    d.action = a;
    d.rule = rule;
    if (a.kind == ActionKind::proxy)
        d.upstream = upstream(a.upstream);
    return d;
}

Decision Router::decide(const SockAddr& dst, const std::string* domain) const
{
    for (size_t i = 0; i < rules_.size(); ++i) {
        const Rule& r = rules_[i];
        if (!matches_address(r, dst))
            continue;
        if (r.domain) {
            if (!domain) {
                Decision d;
                d.kind = Decision::need_sniff;
                return d;
            }
            if (domain->empty() || !matches_domain(*r.domain, *domain))
                continue;
        }
        return finish(r.action, static_cast<int>(i));
    }
    return finish(default_, -1);
}

std::string Router::describe() const
{
    std::string s = fmt::format("{} rules, {} upstreams", rules_.size(), upstreams_.size() - 1);
    return s;
}

}  // namespace ktp
