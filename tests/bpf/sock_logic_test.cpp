// The hooks' address decisions, executed by the kernel through BPF_PROG_RUN.
#include "base/sock_addr.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>

#include "sock_logic_case.h"
#include "sock_logic_test.skel.h"

using namespace ktp;

namespace {

struct Expect {
    const char* ip;
    bool local4, local6, mapped;
    int family;
    bool linklocal = false;
};

struct SkelDeleter {
    void operator()(sock_logic_test* s) const { sock_logic_test__destroy(s); }
};

}  // namespace

TEST_CASE("socket hook decisions classify addresses as the design says")
{
    // IPv4 entries are given v4-mapped, as the hooks store them.
    const Expect table[] = {
        {"127.0.0.1", true, false, true, AF_INET},
        {"127.255.255.254", true, false, true, AF_INET},
        {"0.0.0.0", true, false, true, AF_INET},
        {"10.201.0.2", false, false, true, AF_INET},
        {"128.0.0.1", false, false, true, AF_INET},
        {"1.127.0.0", false, false, true, AF_INET},
        {"::1", false, true, false, AF_INET6},
        {"::", true, true, false, AF_INET6},  // all-zero: local either way
        {"fd00:201::2", false, false, false, AF_INET6},
        {"::2", false, false, false, AF_INET6},
        {"::fffe:0:1", false, false, false, AF_INET6},  // near the mapped prefix, not in it
        {"::ffff:0:1", false, false, true, AF_INET},     // that is ::ffff:0.0.0.1
        {"64:ff9b::a00:1", false, false, false, AF_INET6},
        // Link-local: connect6 leaves them alone (the scope id would be lost).
        {"fe80::1", false, false, false, AF_INET6, true},
        {"febf:ffff::1", false, false, false, AF_INET6, true},  // last of fe80::/10
        {"fec0::1", false, false, false, AF_INET6},             // just past it
        {"fe7f::1", false, false, false, AF_INET6},             // just before it
        {"ff02::1", false, false, false, AF_INET6},
        {"::ffff:169.254.1.1", false, false, true, AF_INET},    // IPv4 link-local has no scope id
    };
    std::unique_ptr<sock_logic_test, SkelDeleter> skel(sock_logic_test__open_and_load());
    REQUIRE(skel);
    const size_t n = sizeof(table) / sizeof(table[0]);
    for (size_t i = 0; i < n; ++i) {
        auto a = SockAddr::parse_ip(table[i].ip, 0);
        REQUIRE(a);
        a->to_mapped(skel->bss->ktp_cases[i].addr);
    }
    skel->bss->ktp_ncases = n;

    unsigned char pkt[64] = {};
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(pkt), .repeat = 1);
    REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.ktp_test_sock_logic), &opts) == 0);
    CHECK(opts.retval == 0);

    for (size_t i = 0; i < n; ++i) {
        const auto& c = skel->bss->ktp_cases[i];
        INFO("address " << table[i].ip);
        CHECK(bool(c.is_mapped) == table[i].mapped);
        if (table[i].mapped)
            CHECK(bool(c.is_local4) == table[i].local4);
        else
            CHECK(bool(c.is_local6) == table[i].local6);
        CHECK(int(c.wire_family) == table[i].family);
        CHECK(c.remapped[2] == htonl(0xffff));
        CHECK(c.remapped[3] == c.addr[3]);
        CHECK(bool(c.is_linklocal6) == table[i].linklocal);
        const bool skip = table[i].mapped ? table[i].local4 : (table[i].local6 || table[i].linklocal);
        CHECK(bool(c.skip_dst6) == skip);
    }
}
