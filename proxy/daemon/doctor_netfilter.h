// `ktproxy doctor`'s netfilter check, the pure part: which nftables and
// iptables rules use ktproxy's marks, from the text `nft -j list ruleset`,
// `iptables-save` and `ip6tables-save` print. No I/O: unit-tested.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace ktp {

// A mark ktproxy uses, and what to call it in a verdict ("--mark").
struct MarkUse {
    uint32_t value;
    const char* flag;
};

// One rule that uses one of the marks.
struct NetfilterHit {
    std::string rule;  // where: "nft inet t c handle 3" or "iptables -t mangle -A OUTPUT ..."
    std::string what;  // "matches meta mark 0x6b74 (--mark)", "sets meta mark 0x6b75 (--gateway-mark)"
};

struct NftScan {
    std::vector<NetfilterHit> hits;
    std::string error;  // not empty: the text was not nft's JSON
};

// Rules of tables in `skip` ("ip mangle", "ip6 filter") are left out: the
// iptables-save of iptables-nft reports them, with the targets that nft's
// JSON only shows as opaque "xt" expressions.
NftScan scan_nft_json(std::string_view json, const std::vector<MarkUse>& marks,
                      const std::set<std::string>& skip = {});

struct IptablesScan {
    std::vector<NetfilterHit> hits;
    std::set<std::string> tables;  // "ip mangle", ... (family "ip" or "ip6") that the text listed
    bool nf_tables = false;        // printed by the nf_tables variant (its rules are also in nft's ruleset)
};

// family: "ip" for iptables-save, "ip6" for ip6tables-save.
IptablesScan scan_iptables_save(std::string_view text, const std::string& family, const std::vector<MarkUse>& marks);

}  // namespace ktp
