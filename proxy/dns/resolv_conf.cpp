// resolv.conf's nameserver lines: the resolvers the host's configuration names.
#include "dns/resolv_conf.h"

#include "base/sock_addr.h"

namespace ktp::dns {

namespace {

bool loopback(std::string_view ip)
{
    // An IPv6 nameserver may carry a scope (fe80::1%eth0): not loopback.
    auto a = SockAddr::parse_ip(ip, 0);
    return a && a->is_loopback();
}

}  // namespace

std::vector<std::string> nameservers(std::string_view text)
{
    std::vector<std::string> out;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        auto skip_blank = [&line] {
            size_t i = line.find_first_not_of(" \t\r");
            line = i == std::string_view::npos ? std::string_view() : line.substr(i);
        };
        skip_blank();
        constexpr std::string_view kKey = "nameserver";
        if (line.substr(0, kKey.size()) != kKey || line.size() == kKey.size() ||
            (line[kKey.size()] != ' ' && line[kKey.size()] != '\t'))
            continue;
        line.remove_prefix(kKey.size());
        skip_blank();
        std::string_view ip = line.substr(0, line.find_first_of(" \t\r#;"));
        if (!ip.empty())
            out.emplace_back(ip);
    }
    return out;
}

std::vector<SockAddr> nameserver_addresses(std::string_view resolv_conf)
{
    std::vector<SockAddr> out;
    for (const std::string& ip : nameservers(resolv_conf))
        if (auto a = SockAddr::parse_ip(ip, 53))
            out.push_back(*a);
    return out;
}

std::vector<std::string> loopback_nameservers(std::string_view text)
{
    std::vector<std::string> out;
    for (std::string& ip : nameservers(text))
        if (loopback(ip))
            out.push_back(std::move(ip));
    return out;
}

}  // namespace ktp::dns
