// The real socket hooks load (the verifier accepts them on this kernel) and
// their maps have the layout the C++ side was compiled against.
#include "kernel/bpf_abi.h"
#include "kernel/sock_hooks.h"

#include <bpf/libbpf.h>
#include <catch2/catch.hpp>

#include "sock_redirect.skel.h"

using namespace ktp;

TEST_CASE("map keys and values match bpf/ktproxy_shared.h")
{
    sock_redirect* skel = sock_redirect__open();
    REQUIRE(skel);
    CHECK(bpf_map__value_size(skel->maps.ktp_app_dst) == sizeof(ktp_orig_dst));
    CHECK(bpf_map__value_size(skel->maps.ktp_conn_dst) == sizeof(ktp_orig_dst));
    CHECK(bpf_map__key_size(skel->maps.ktp_handoff) == sizeof(ktp_tuple));
    CHECK(bpf_map__value_size(skel->maps.ktp_handoff) == sizeof(ktp_orig_dst));
    // Socket storage: nothing to size, nothing to evict.
    CHECK(bpf_map__type(skel->maps.ktp_app_dst) == BPF_MAP_TYPE_SK_STORAGE);
    CHECK(bpf_map__type(skel->maps.ktp_conn_dst) == BPF_MAP_TYPE_SK_STORAGE);
    // A plain hash: an update fails when full (counted), it never evicts.
    CHECK(bpf_map__type(skel->maps.ktp_handoff) == BPF_MAP_TYPE_HASH);
    CHECK(bpf_map__max_entries(skel->maps.ktp_counters) == KTP_CTR_MAX);
    CHECK(bpf_map__value_size(skel->maps.ktp_switches) == sizeof(ktp_switches));
    CHECK(bpf_map__max_entries(skel->maps.ktp_switches) == 1);
    CHECK(bpf_map__type(skel->maps.ktp_events) == BPF_MAP_TYPE_RINGBUF);
    sock_redirect__destroy(skel);
}

TEST_CASE("the verifier accepts every socket hook, and a fresh load has empty maps and zero counters")
{
    HookConfig cfg;
    cfg.listen4 = *SockAddr::parse_ip("127.0.0.1", 15001);
    cfg.listen6 = *SockAddr::parse_ip("::1", 15001);
    cfg.mark = 0x6b74;
    cfg.netns_cookie = 1;
    cfg.max_conns = 4096;
    SockHooks hooks(cfg);
    for (auto v : hooks.counters())
        CHECK(v == 0);
    auto occ = hooks.occupancy();
    CHECK(occ.tuples == 0);
    // The dry run's switch: off after a load, and it reads back what was written.
    CHECK_FALSE(hooks.dry_run());
    hooks.set_dry_run(true);
    CHECK(hooks.dry_run());
    hooks.set_dry_run(false);
    CHECK_FALSE(hooks.dry_run());
}

TEST_CASE("counters print with stable names")
{
    Counters c{};
    c[KTP_CTR_REDIRECTED] = 3;
    c[KTP_CTR_NO_LISTENER] = 4;
    c[KTP_CTR_SKIPPED_BOUND] = 5;
    c[KTP_CTR_DRY_BLOCK] = 6;
    c[KTP_CTR_DRY_EVENTS_LOST] = 7;
    c[KTP_CTR_FOREIGN_MARK] = 8;
    c[KTP_CTR_REFUSED_BOUND] = 9;
    c[KTP_CTR_REFUSED_UNSCANNED] = 10;
    auto s = format_counters(c, MapOccupancy{2});
    CHECK(s.find("redirected=3 ") != std::string::npos);
    CHECK(s.find("no_listener=4 skipped_bound=5 ") != std::string::npos);
    CHECK(s.find(" dry_run_block=6 ") != std::string::npos);
    CHECK(s.find(" dry_run_events_lost=7 live_tuples=2") != std::string::npos);
    CHECK(s.find(" foreign_mark=8 refused_bound=9 refused_unscanned=10") != std::string::npos);
}
