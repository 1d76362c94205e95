// The proxy's half of routing: the same ordered rules the kernel applies,
// plus domain matching once the client's first bytes named a host, and the
// upstreams that `proxy=NAME` actions refer to.
#pragma once

#include "route/rules.h"
#include "base/sock_addr.h"
#include "upstream/upstream_health.h"
#include "upstream/upstream_url.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ktp {

struct Upstream {
    std::string name;  // "direct" is built in: straight to the original destination
    UpstreamUrl url;
    SockAddr addr;     // resolved when the config is loaded
    // Shared by the workers; survives in warm-session pools across reloads.
    std::shared_ptr<UpstreamHealth> health = std::make_shared<UpstreamHealth>();
    // An upstream group (--upstream-group): its members in order of
    // preference; a connection goes through one of them (upstream_group.h).
    std::vector<const Upstream*> members;
};

struct Decision {
    enum Kind { need_sniff, decided } kind = decided;
    Action action{ActionKind::proxy, "direct"};
    int rule = -1;                      // index of the matching rule, -1 = default
    const Upstream* upstream = nullptr; // for proxy actions
};

class Router {
public:
    // Throws Error (one line) for a bad rule, URL, an unknown upstream name,
    // or an upstream host that does not resolve.
    Router(const std::vector<std::string>& rules, const std::vector<std::string>& upstreams,
           const std::string& default_action, const std::vector<std::string>& groups = {});

    // domain: nullptr before sniffing; "" when sniffing found no name.
    Decision decide(const SockAddr& dst, const std::string* domain) const;
    // Does any rule need the client's first bytes? (If not, never sniff.)
    bool has_domain_rules() const { return has_domain_rules_; }

    const std::vector<Rule>& rules() const { return rules_; }
    const Action& default_action() const { return default_; }
    const Upstream* upstream(const std::string& name) const;
    // "direct" first, then each --upstream in order.
    const std::vector<std::unique_ptr<Upstream>>& upstreams() const { return upstreams_; }
    std::string describe() const;

private:
    Decision finish(const Action& a, int rule) const;

    std::vector<Rule> rules_;
    std::vector<std::unique_ptr<Upstream>> upstreams_;
    Action default_;
    bool has_domain_rules_ = false;
};

}  // namespace ktp
