// The C++ view of bpf/ktproxy_shared.h, with the layout pinned down: the BPF
// programs and this daemon read the same bytes, so a drift must not compile.
#pragma once

#include <cstddef>

#include "ktproxy_shared.h"

static_assert(sizeof(ktp_orig_dst) == 56);
static_assert(offsetof(ktp_orig_dst, addr) == 0);
static_assert(offsetof(ktp_orig_dst, port) == 16);
static_assert(offsetof(ktp_orig_dst, family) == 18);
static_assert(offsetof(ktp_orig_dst, pid) == 20);
static_assert(offsetof(ktp_orig_dst, tid) == 24);
static_assert(offsetof(ktp_orig_dst, uid) == 28);
static_assert(offsetof(ktp_orig_dst, comm) == 32 && sizeof(ktp_orig_dst::comm) == 16);
static_assert(offsetof(ktp_orig_dst, flags) == 48);
static_assert(sizeof(ktp_conn_info) == 80);
static_assert(offsetof(ktp_conn_info, peer_addr) == 56);
static_assert(offsetof(ktp_conn_info, peer_port) == 72);
static_assert(offsetof(ktp_conn_info, peer_family) == 74);

static_assert(sizeof(ktp_tuple) == 40);
static_assert(offsetof(ktp_tuple, src_addr) == 0);
static_assert(offsetof(ktp_tuple, dst_addr) == 16);
static_assert(offsetof(ktp_tuple, src_port) == 32);
static_assert(offsetof(ktp_tuple, dst_port) == 34);
static_assert(offsetof(ktp_tuple, family) == 36);

static_assert(sizeof(ktp_dead_key) == 32);
static_assert(offsetof(ktp_dead_key, port) == 16);
static_assert(offsetof(ktp_dead_key, netns) == 24);
static_assert(sizeof(ktp_dead_val) == 16);
static_assert(offsetof(ktp_dead_val, err) == 8);

static_assert(sizeof(ktp_udp_key) == 16);
static_assert(offsetof(ktp_udp_key, app_port) == 4);
static_assert(offsetof(ktp_udp_key, family) == 6);
static_assert(offsetof(ktp_udp_key, netns) == 8);
static_assert(sizeof(ktp_udp_flow) == 88);
static_assert(offsetof(ktp_udp_flow, cookie) == 56);
static_assert(offsetof(ktp_udp_flow, last_ns) == 64);
static_assert(offsetof(ktp_udp_flow, flags) == 72);
static_assert(offsetof(ktp_udp_flow, filed_port) == 76);
static_assert(offsetof(ktp_udp_flow, netns) == 80);
static_assert(sizeof(ktp_udp_sock_key) == 8);
static_assert(sizeof(ktp_udp_sock) == 8 * KTP_UDP_SOCK_KEYS + 16);
static_assert(offsetof(ktp_udp_sock, netns) == 8 * KTP_UDP_SOCK_KEYS);
static_assert(sizeof(ktp_netns_listener) == 32);
static_assert(offsetof(ktp_netns_listener, ip6) == 4);
static_assert(offsetof(ktp_netns_listener, port4) == 20);
static_assert(offsetof(ktp_netns_listener, port6) == 22);
static_assert(offsetof(ktp_netns_listener, flags) == 24);
static_assert(offsetof(ktp_netns_listener, udp_port) == 28);
static_assert(sizeof(ktp_netns_event) == 16);
static_assert(offsetof(ktp_netns_event, pid) == 8);

static_assert(KTP_AF_INET == 2 && KTP_AF_INET6 == 10);

static_assert(sizeof(ktp_switches) == 8);
static_assert(offsetof(ktp_switches, dry_run) == 0);

static_assert(sizeof(ktp_dry_event) == 64);
static_assert(offsetof(ktp_dry_event, cgroup_id) == 0);
static_assert(offsetof(ktp_dry_event, pid) == 8);
static_assert(offsetof(ktp_dry_event, tid) == 12);
static_assert(offsetof(ktp_dry_event, uid) == 16);
static_assert(offsetof(ktp_dry_event, addr) == 20);
static_assert(offsetof(ktp_dry_event, port) == 36);
static_assert(offsetof(ktp_dry_event, family) == 38);
static_assert(offsetof(ktp_dry_event, rule) == 40);
static_assert(offsetof(ktp_dry_event, action) == 42);
static_assert(offsetof(ktp_dry_event, would) == 43);
static_assert(offsetof(ktp_dry_event, comm) == 44 && sizeof(ktp_dry_event::comm) == 16);
static_assert(KTP_RULE_DEFAULT == 0xffff && KTP_ROUTE_MAX < KTP_RULE_DEFAULT);
