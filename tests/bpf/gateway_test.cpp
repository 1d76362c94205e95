// The gateway's TC program on crafted packets through BPF_PROG_RUN: the
// proxy/direct/block decision for IPv4 and IPv6 TCP, and everything that is
// not a readable TCP segment (other protocols, fragments, truncated or
// malformed headers) passes untouched.
#include "kernel/bpf_maps.h"
#include "kernel/route_compiler.h"
#include "route/rules.h"
#include "base/sock_addr.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gw_test.skel.h"
#include "tc_gateway.skel.h"

using namespace ktp;

namespace {

using Bytes = std::vector<unsigned char>;

enum Flags : uint8_t { kSyn = 0x02, kAck = 0x10 };

Bytes eth(uint16_t proto)
{
    Bytes b(14, 0);
    b[0] = 0x02;  // locally administered MACs
    b[6] = 0x02;
    b[12] = proto >> 8;
    b[13] = proto & 0xff;
    return b;
}

Bytes tcp_hdr(uint16_t sport, uint16_t dport, uint8_t flags)
{
    tcphdr t{};
    t.source = htons(sport);
    t.dest = htons(dport);
    t.doff = 5;
    t.syn = (flags & kSyn) != 0;
    t.ack = (flags & kAck) != 0;
    t.window = htons(65535);
    Bytes b(sizeof(t));
    std::memcpy(b.data(), &t, sizeof(t));
    return b;
}

Bytes ipv4_packet(const char* src, const char* dst, uint8_t proto, const Bytes& l4, uint16_t frag = 0)
{
    Bytes b = eth(ETH_P_IP);
    iphdr ip{};
    ip.version = 4;
    ip.ihl = 5;
    ip.ttl = 64;
    ip.protocol = proto;
    ip.frag_off = htons(frag);
    ip.tot_len = htons(static_cast<uint16_t>(sizeof(ip) + l4.size()));
    inet_pton(AF_INET, src, &ip.saddr);
    inet_pton(AF_INET, dst, &ip.daddr);
    size_t off = b.size();
    b.resize(off + sizeof(ip));
    std::memcpy(b.data() + off, &ip, sizeof(ip));
    b.insert(b.end(), l4.begin(), l4.end());
    return b;
}

Bytes ipv6_packet(const char* src, const char* dst, uint8_t next, const Bytes& l4)
{
    Bytes b = eth(ETH_P_IPV6);
    ipv6hdr ip{};
    ip.version = 6;
    ip.nexthdr = next;
    ip.hop_limit = 64;
    ip.payload_len = htons(static_cast<uint16_t>(l4.size()));
    inet_pton(AF_INET6, src, &ip.saddr);
    inet_pton(AF_INET6, dst, &ip.daddr);
    size_t off = b.size();
    b.resize(off + sizeof(ip));
    std::memcpy(b.data() + off, &ip, sizeof(ip));
    b.insert(b.end(), l4.begin(), l4.end());
    return b;
}

struct GwDeleter {
    void operator()(gw_test* s) const { gw_test__destroy(s); }
};

class Classifier {
public:
    Classifier(const std::vector<std::string>& rule_texts, uint32_t default_action) : skel_(gw_test__open_and_load())
    {
        REQUIRE(skel_);
        std::vector<Rule> rules;
        for (const auto& t : rule_texts) {
            auto r = parse_rule(t);
            REQUIRE(std::holds_alternative<Rule>(r));
            rules.push_back(std::get<Rule>(r));
        }
        publish_routes(skel_.get(), compile_routes(rules), default_action, "the test");
    }

    static constexpr uint32_t kRefused = 0xfffffffe;

    // kRefused when BPF_PROG_RUN itself rejects the frame: it wants at least
    // the network header that the ethertype announces.
    uint32_t verdict(Bytes pkt)
    {
        skel_->data->ktp_gw_test_verdict = 0xffffffff;
        LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt.data(), .data_size_in = static_cast<__u32>(pkt.size()),
                    .repeat = 1);
        int err = bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.ktp_test_gw), &opts);
        if (err == -EINVAL)
            return kRefused;
        REQUIRE(err == 0);
        return skel_->data->ktp_gw_test_verdict;
    }
    uint32_t syn() const { return skel_->data->ktp_gw_test_syn; }

private:
    std::unique_ptr<gw_test, GwDeleter> skel_;
};

const std::vector<std::string> kRules = {
    "cidr=10.9.0.0/16 direct",
    "cidr=10.8.0.0/16 port=25 block",
    "cidr=fd00:9::/32 direct",
    "cidr=fd00:8::/32 block",
};

}  // namespace

TEST_CASE("gateway: TCP to proxy, direct and block destinations, IPv4 and IPv6")
{
    Classifier c(kRules, KTP_ACT_PROXY);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(40000, 80, kSyn))) == KTP_GW_PROXY);
    CHECK(c.syn() == 1);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.9.1.1", IPPROTO_TCP, tcp_hdr(40000, 80, kSyn))) == KTP_GW_DIRECT);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.8.1.1", IPPROTO_TCP, tcp_hdr(40000, 25, kSyn))) == KTP_GW_BLOCK);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.8.1.1", IPPROTO_TCP, tcp_hdr(40000, 26, kSyn))) == KTP_GW_PROXY);
    CHECK(c.verdict(ipv6_packet("fd00:1::2", "fd00:7::2", IPPROTO_TCP, tcp_hdr(40000, 443, kSyn))) == KTP_GW_PROXY);
    CHECK(c.verdict(ipv6_packet("fd00:1::2", "fd00:9::2", IPPROTO_TCP, tcp_hdr(40000, 443, kSyn))) == KTP_GW_DIRECT);
    CHECK(c.verdict(ipv6_packet("fd00:1::2", "fd00:8::2", IPPROTO_TCP, tcp_hdr(40000, 443, kSyn))) == KTP_GW_BLOCK);
}

TEST_CASE("gateway: the default action applies when no rule matches")
{
    Classifier direct_by_default(kRules, KTP_ACT_DIRECT);
    CHECK(direct_by_default.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn))) ==
          KTP_GW_DIRECT);
    Classifier block_by_default({}, KTP_ACT_BLOCK);
    CHECK(block_by_default.verdict(ipv6_packet("fd00:1::2", "fd00:7::2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn))) ==
          KTP_GW_BLOCK);
}

TEST_CASE("gateway: only SYN without ACK counts as a new connection")
{
    Classifier c({}, KTP_ACT_PROXY);
    c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn | kAck)));
    CHECK(c.syn() == 0);
    c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kAck)));
    CHECK(c.syn() == 0);
}

TEST_CASE("gateway: non-TCP, fragments, truncated and malformed packets pass untouched")
{
    Classifier c({}, KTP_ACT_PROXY);
    Bytes udp(8, 0);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_UDP, udp)) == KTP_GW_PASS);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_ICMP, udp)) == KTP_GW_PASS);
    CHECK(c.verdict(ipv6_packet("fd00:1::2", "fd00:7::2", IPPROTO_UDP, udp)) == KTP_GW_PASS);
    // IPv6 with a hop-by-hop extension header before TCP: not walked.
    CHECK(c.verdict(ipv6_packet("fd00:1::2", "fd00:7::2", 0, tcp_hdr(1, 80, kSyn))) == KTP_GW_PASS);
    // Fragments: more-fragments set, and a non-zero offset.
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn), 0x2000)) == KTP_GW_PASS);
    CHECK(c.verdict(ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn), 0x0010)) == KTP_GW_PASS);
    // ARP.
    Bytes arp = eth(ETH_P_ARP);
    arp.resize(42, 0);
    CHECK(c.verdict(arp) == KTP_GW_PASS);

    Bytes full4 = ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn));
    Bytes full6 = ipv6_packet("fd00:1::2", "fd00:7::2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn));
    // Every truncation of a valid SYN that BPF_PROG_RUN accepts passes; the
    // ones cutting into TCP must be among them.
    for (const Bytes* full : {&full4, &full6}) {
        size_t tested = 0;
        const size_t tcp_start = full == &full4 ? 14 + 20 : 14 + 40;
        for (size_t len = 15; len < full->size(); ++len) {
            INFO("truncated to " << len << " of " << full->size());
            uint32_t v = c.verdict(Bytes(full->begin(), full->begin() + static_cast<long>(len)));
            if (v == Classifier::kRefused) {
                CHECK(len < tcp_start);
                continue;
            }
            CHECK(v == KTP_GW_PASS);
            ++tested;
        }
        CHECK(tested >= 20);  // all of the TCP header's truncations
    }
    // Header fields that lie.
    Bytes bad_ihl = full4;
    bad_ihl[14] = 0x44;  // IHL 4 (< 20 bytes)
    CHECK(c.verdict(bad_ihl) == KTP_GW_PASS);
    Bytes long_ihl = full4;
    long_ihl[14] = 0x4f;  // IHL 15: 60-byte header, TCP would start past the end
    CHECK(c.verdict(long_ihl) == KTP_GW_PASS);
    Bytes bad_version = full4;
    bad_version[14] = 0x65;
    CHECK(c.verdict(bad_version) == KTP_GW_PASS);
    Bytes bad_doff = full4;
    bad_doff[14 + 20 + 12] = 0x30;  // TCP data offset 3
    CHECK(c.verdict(bad_doff) == KTP_GW_PASS);
}

TEST_CASE("gateway: the real TC program passes what is not TCP, and malformed packets, with no mark")
{
    struct Deleter {
        void operator()(tc_gateway* s) const { tc_gateway__destroy(s); }
    };
    std::unique_ptr<tc_gateway, Deleter> skel(tc_gateway__open());
    REQUIRE(skel);
    skel->rodata->ktp_gw_mark = 0x6b75;
    REQUIRE(tc_gateway__load(skel.get()) == 0);
    Bytes udp(8, 0);
    Bytes full4 = ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn));
    std::vector<Bytes> pkts = {
        ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_UDP, udp),
        ipv6_packet("fd00:1::2", "fd00:7::2", IPPROTO_UDP, udp),
        Bytes(full4.begin(), full4.begin() + 40),
        ipv4_packet("10.1.0.2", "10.7.0.2", IPPROTO_TCP, tcp_hdr(1, 80, kSyn), 0x2000),
    };
    for (auto& pkt : pkts) {
        __sk_buff ctx{};
        LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt.data(), .data_size_in = static_cast<__u32>(pkt.size()),
                    .ctx_in = &ctx, .ctx_out = &ctx, .ctx_size_in = sizeof(ctx), .ctx_size_out = sizeof(ctx),
                    .repeat = 1);
        REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.ktp_gateway), &opts) == 0);
        CHECK(opts.retval == TC_ACT_OK);
        CHECK(ctx.mark == 0);
    }
}
