#!/bin/bash
# End-to-end tests of the DNS forwarder (on by default; proxy/udp/, proxy/dns/):
# dnsmasq on the server host as the resolver (it logs every query), dig and
# Python's getaddrinfo in the app cgroup; replies come from the resolver's
# address; a domain rule blocks a name (REFUSED, dnsmasq never asked); a
# query whose name is routed to an upstream never leaks to the resolver; the
# name memory routes a server-speaks-first TCP protocol by its domain rule
# through microsocks (which gets the address, the name only routes, unless
# the connecting process asked for the name itself); 10,000 queries from short-lived
# sockets leave no flow state; a query whose name ktproxy cannot read does
# not go to the resolver direct past a domain rule. Fake mode (--dns-mode fake): dig gets an
# address of 198.18.0.0/15, curl to the name reaches the server through
# microsocks, which is given the name; no port-53 packet leaves the client
# host and dnsmasq is never asked; a connect to a fake address ktproxy did
# not hand out, or one a rule routes direct, is refused and reaches nobody; a
# name routed direct still resolves for real. DNS over TCP (dig +tcp, glibc's
# use-vc, pipelined queries from Python) gets the same routing by name, name
# memory, block and fake answers; hostile TCP clients are cut with a log line,
# and a resolver that never answers gives SERVFAIL in bounded time. Issue
# 13's first user story as typed, with no UDP flag: `ktproxy run --upstream
# s=socks5://(dante) --default proxy=s -- curl http://name/` puts no port-53
# packet from the client host on the wire, and dnsmasq is asked from dante's
# side; a resolver on loopback (not intercepted) gets a warning at start.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

PY=/usr/bin/python3
TOOLS="$(cd "$(dirname "$0")" && pwd)/udp_tools.py"
command -v dig >/dev/null || ktp_die "dig not installed (bind9-dnsutils; scripts/setup installs it)"
command -v dnsmasq >/dev/null || ktp_die "dnsmasq not installed (dnsmasq-base; scripts/setup installs it)"

ktp_topo_up
DNSMASQ_LOG="$KTP_TMP/dnsmasq.log"
: > "$DNSMASQ_LOG"
ktp_bg in_srv dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address="$KTP_SRV4" --listen-address="$KTP_SRV6" --port=53 --user=root \
    --log-queries=extra --log-facility="$DNSMASQ_LOG" --pid-file="$KTP_TMP/dnsmasq.pid" \
    --host-record="web.test,$KTP_SRV4,$KTP_SRV6" --host-record="banner.test,$KTP_SRV4" \
    --host-record="blocked.test,$KTP_SRV4" --host-record="secret.test,$KTP_SRV4" \
    --host-record="grouped.test,$KTP_SRV4" --host-record="gosecret.test,$KTP_SRV4" --cname=alias.test,web.test \
    --host-record="story.test,$KTP_SRV4" \
    --host-record="tcpsecret.test,$KTP_SRV4"
# A server that speaks first and says whom it sees: direct, the client host;
# through microsocks, the server host.
ktp_bg in_srv socat TCP-LISTEN:2525,reuseaddr,fork SYSTEM:'echo 220 banner for $SOCAT_PEERADDR; sleep 1'
# microsocks resolves banner.test to the server host's loopback: a banner
# "for 127.0.0.1" shows it was given the name. A name another process asked
# for routes a connection but the upstream is given the address (one app's
# answers must not steer another app's connection): the banner then says
# the server host's own address.
printf '127.0.0.1 localhost banner.test fakeweb.test\n' > "$KTP_TMP/hosts"
# The Go client's HTTP Host (sniffed: the upstream gets that name) resolves
# at microsocks to the server host.
printf '%s gosecret.test\n' "$KTP_SRV4" >> "$KTP_TMP/hosts"
ktp_bg unshare -m sh -c "mount --bind '$KTP_TMP/hosts' /etc/hosts &&
    exec nsenter --net=/run/netns/$KTP_SRV microsocks -i $KTP_SRV4 -p 1081 > '$KTP_TMP/microsocks.log' 2>&1"
# dante with a password, as a user would run it (the user story's upstream).
DANTE_DIR="$KTP_TMP/dante"
ktp_dante_setup "$DANTE_DIR" "$KTP_SRV4" 1082
# The user story's name resolves at dante (given the name: curl asked for
# it itself) from its own hosts file: no resolver outside the test is ever
# asked.
printf '127.0.0.1 localhost\n%s story.test\n' "$KTP_SRV4" > "$KTP_TMP/hosts.dante"
ktp_dante_run "$DANTE_DIR" "$KTP_TMP/hosts.dante"
# The web server fake mode's curl reaches (by name, through microsocks).
mkdir -p "$KTP_TMP/www"
printf 'fake page\n' > "$KTP_TMP/www/fake.txt"
ktp_bg in_srv "$PY" -m http.server 8088 --bind 127.0.0.1 --directory "$KTP_TMP/www"
# The one the Go client reaches by a name its own resolver looked up.
ktp_bg in_srv "$PY" -m http.server 8089 --bind "$KTP_SRV4" --directory "$KTP_TMP/www"
# A static Go binary: Go's own resolver (connected UDP sockets), no libc.
(cd "$(dirname "$0")/goclient" && HOME="$KTP_TMP/go" GOCACHE="$KTP_TMP/go/cache" GO111MODULE=off CGO_ENABLED=0 \
    timeout 300 go build -o "$KTP_TMP/goclient" main.go) || ktp_die "building the Go client failed"
ktp_wait_port "$KTP_SRV" 1081
ktp_wait_port "$KTP_SRV" 1082
ktp_wait_port "$KTP_SRV" 2525
for _ in $(seq 50); do grep -q "started" "$DNSMASQ_LOG" && break; sleep 0.1; done

# stop_every_ktproxy: ends whichever instance this suite started is still
# running (tests run in subshells: $KTP_PID may name an older one).
stop_every_ktproxy() {
    local f
    for f in "$KTP_TMP"/ktproxy.*.log.pid; do
        [ -e "${f%.pid}.rc" ] || kill -TERM "$(cat "$f")" 2>/dev/null
    done
    for f in "$KTP_TMP"/ktproxy.*.log.pid; do
        for _ in $(seq 200); do [ -s "${f%.pid}.rc" ] && break; sleep 0.05; done
    done
}

# queries_for NAME: how many queries for NAME dnsmasq logged.
queries_for() { grep -c "query\[[A-Z]*\] $1 from" "$DNSMASQ_LOG" || true; }

test_dig_answer_comes_from_the_resolver() {
    local out before
    before=$(ktp_counter udp_redirected)
    out=$(in_app dig +time=3 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "status: NOERROR" "dig status"
    expect_match "$out" "web\.test\..*IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig answer"
    expect_match "$out" "SERVER: $KTP_SRV4#53" "dig's server line"
    ! printf '%s' "$out" | grep -q "unexpected source" || fail "dig saw a reply from an unexpected source"
    [ "$(ktp_counter udp_redirected)" -gt "$before" ] || fail "the query did not go through ktproxy"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] web.test from $KTP_CLI4" "dnsmasq log"
}

test_dig_over_ipv6_and_cname_chain() {
    # dig's IPv6 sockets are connected ones (connect6 + sock_diag path).
    local out before
    before=$(ktp_counter udp_redirected)
    out=$(in_app dig +time=3 +tries=1 @"$KTP_SRV6" alias.test AAAA 2>&1) || fail "dig failed: $out"
    expect_match "$out" "status: NOERROR" "dig status"
    expect_match "$out" "web\.test\..*AAAA[[:space:]]+$KTP_SRV6" "AAAA through the CNAME"
    [ "$(ktp_counter udp_redirected)" -gt "$before" ] || fail "the IPv6 query did not go through ktproxy"
    expect_file_match "$DNSMASQ_LOG" "query\[AAAA\] alias.test from $KTP_CLI6" "dnsmasq log"
    ! printf '%s' "$out" | grep -q "unexpected source" || fail "dig saw a reply from an unexpected source"
}

test_python_getaddrinfo() {
    local out
    printf 'nameserver %s\noptions attempts:1 timeout:3\n' "$KTP_SRV4" > "$KTP_TMP/resolv.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.app"
    out=$(in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.app' /etc/hosts &&
        exec $PY -c 'import socket; print(sorted({a[4][0] for a in socket.getaddrinfo(\"web.test\", 80)}))'") ||
        fail "getaddrinfo failed: $out"
    expect_match "$out" "'$KTP_SRV4'" "getaddrinfo result"
    }

test_blocked_name_is_refused_and_never_asked() {
    local out
    out=$(in_app dig +time=3 +tries=1 @"$KTP_SRV4" blocked.test A 2>&1) || true
    expect_match "$out" "status: REFUSED" "dig status for a blocked name"
    expect_eq "$(queries_for blocked.test)" 0 "queries for blocked.test that reached dnsmasq"
    expect_file_match "$KTP_LOG" "dns [^ ]+\[[0-9]+\] blocked.test type 1 .*blocked" "ktproxy's log"
}

test_name_routed_to_an_upstream_goes_through_it() {
    # proxy=m for secret.test: DNS over TCP through microsocks; the resolver
    # sees the query from the server host (microsocks), never from the client.
    local out
    out=$(in_app dig +time=5 +tries=1 @"$KTP_SRV4" secret.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "status: NOERROR" "dig status for a name routed to an upstream"
    expect_match "$out" "secret\.test\..*IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig answer"
    ! printf '%s' "$out" | grep -q "unexpected source" || fail "dig saw a reply from an unexpected source"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] secret.test from $KTP_SRV4" "dnsmasq log (query via microsocks)"
    expect_no_file_match "$DNSMASQ_LOG" "secret.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
}

test_name_routed_to_an_upstream_group_goes_through_its_member() {
    # proxy=g, a group of m: DNS over TCP through microsocks, never direct
    # (a group has no URL of its own; read as one, it was direct).
    local out
    out=$(in_app dig +time=5 +tries=1 @"$KTP_SRV4" grouped.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "status: NOERROR" "dig status for a name routed to a group"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] grouped.test from $KTP_SRV4" "dnsmasq log (query via the group)"
    expect_no_file_match "$DNSMASQ_LOG" "grouped.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
}

test_go_resolver_goes_through_the_forwarder() {
    # Go's pure resolver (not libc) reads resolv.conf and asks over its own
    # UDP sockets: the query for a name routed to m goes through microsocks,
    # never from the client host; the connection by that name follows.
    local out before
    before=$(wc -l < "$KTP_TMP/microsocks.log")
    printf 'nameserver %s\noptions attempts:1 timeout:3\n' "$KTP_SRV4" > "$KTP_TMP/resolv.go.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.go"
    out=$(in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.go.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.go' /etc/hosts &&
        exec '$KTP_TMP/goclient' http://gosecret.test:8089/fake.txt" 2>&1) || fail "goclient failed: $out"
    expect_match "$out" "^200 10 $KTP_SRV4:8089$" "goclient's answer"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] gosecret.test from $KTP_SRV4" "dnsmasq log (Go's query via microsocks)"
    expect_no_file_match "$DNSMASQ_LOG" "gosecret.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
    [ "$(wc -l < "$KTP_TMP/microsocks.log")" -gt "$before" ] || fail "microsocks saw nothing"
}

test_hostile_name_is_escaped_in_the_log() {
    # A label holding a newline, an escape sequence and a space: printed raw
    # it would forge a log line and drive the reader's terminal. Its backslash
    # is \x5c too, so the text maps back to one name.
    local out
    out=$(in_app "$PY" -c '
import socket, struct, sys
q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
for label in (b"evil\nforged line\x1b[31m\\", b"x", b"blocked", b"test"):
    q += bytes([len(label)]) + label
q += b"\x00" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, (sys.argv[1], 53))
print(s.recvfrom(600)[0][3] & 0x0f)' "$KTP_SRV4") || fail "query failed: $out"
    expect_eq "$out" 5 "rcode of the blocked hostile name (REFUSED)"
    wait_log "$KTP_LOG" 'evil\\x0aforged\\x20line\\x1b\[31m\\x5c\.x\.blocked\.test type 1 .*blocked' ||
        fail "no escaped log line for the hostile name"
    expect_no_file_match "$KTP_LOG" "^forged" "a log line forged by the name"
    ! grep -q $'\x1b' "$KTP_LOG" || fail "an escape byte reached the log"
}

# banner_by_name SEEN [DIG_FLAGS...]: the app resolves banner.test through
# ktproxy (dig with these flags), then reads the banner server's greeting at
# the answered address: a server-speaks-first protocol, so only the
# remembered name can route it. It must go by banner.test's rule through
# microsocks, and the banner must name SEEN: the server host's own address
# when microsocks is given the address, 127.0.0.1 when it is given the name
# (its /etc/hosts).
banner_by_name() {
    local out seen=$1
    shift
    out=$(in_app sh -c "dig $* +short +time=5 +tries=1 @$KTP_SRV4 banner.test A >/dev/null &&
        $PY -c '
import socket
s = socket.create_connection((\"$KTP_SRV4\", 2525), timeout=5)
print(s.recv(200).decode().strip())'") || fail "banner client failed: $out"
    expect_eq "$out" "220 banner for $seen" "the banner (through microsocks)"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:2525 .*route=m .*domain=banner.test" ||
        fail "no conn line routing banner.test via m"
}

test_name_memory_routes_a_server_speaks_first_protocol() {
    # dig asked, another process connects: the name routes its connection,
    # but microsocks gets the address (one process's answer must not steer
    # another's connection).
    banner_by_name "$KTP_SRV4"
}

test_name_the_app_resolved_itself_goes_to_the_upstream() {
    # One process resolves banner.test (getaddrinfo, its resolver dnsmasq)
    # and connects to the answer: the name is its own, so the upstream is
    # given it (SOCKS5 ATYP 3), as the issue asks; microsocks resolves it
    # from its hosts file to the server host's loopback.
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    printf 'nameserver %s\noptions attempts:1 timeout:3\n' "$KTP_SRV4" > "$KTP_TMP/resolv.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.app"
    out=$(in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.app' /etc/hosts &&
        exec $PY -c '
import socket
addr = socket.getaddrinfo(\"banner.test\", 2525, socket.AF_INET, socket.SOCK_STREAM)[0][4]
s = socket.create_connection(addr, timeout=5)
print(s.recv(200).decode().strip())'") || fail "banner client failed: $out"
    expect_eq "$out" "220 banner for 127.0.0.1" "the banner (microsocks given the name)"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:2525 .*route=m .*domain=banner.test" ||
        fail "no conn line routing banner.test via m"
    stop_ktproxy TERM || true
}

test_another_apps_answer_for_a_shared_address_does_not_reroute_a_connection() {
    # banner.test (proxy=m) and web.test (no rule: direct) share the server
    # host's address, as names behind a CDN do. One process resolves
    # banner.test; before it connects, another resolves web.test. The first
    # connection must still go by its own name through microsocks (with the
    # latest answer deciding, it went direct to a port nothing serves there).
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    printf 'nameserver %s\noptions attempts:1 timeout:3\n' "$KTP_SRV4" > "$KTP_TMP/resolv.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.app"
    rm -f "$KTP_TMP/cdn.resolved" "$KTP_TMP/cdn.go"
    in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.app' /etc/hosts &&
        exec $PY -c '
import os, socket, time
addr = socket.getaddrinfo(\"banner.test\", 2525, socket.AF_INET, socket.SOCK_STREAM)[0][4]
open(\"$KTP_TMP/cdn.resolved\", \"w\").close()
for _ in range(100):
    if os.path.exists(\"$KTP_TMP/cdn.go\"):
        break
    time.sleep(0.1)
s = socket.create_connection(addr, timeout=5)
print(s.recv(200).decode().strip())'" > "$KTP_TMP/cdn.out" 2>&1 &
    local app=$!
    for _ in $(seq 100); do [ -e "$KTP_TMP/cdn.resolved" ] && break; sleep 0.1; done
    [ -e "$KTP_TMP/cdn.resolved" ] || { kill $app 2>/dev/null; fail "the first app did not resolve banner.test"; }
    out=$(in_app dig +time=5 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || { kill $app 2>/dev/null; fail "dig failed: $out"; }
    expect_match "$out" "web\.test\..*IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "the other app's answer (same address)"
    touch "$KTP_TMP/cdn.go"
    wait $app || fail "the first app's connection failed: $(cat "$KTP_TMP/cdn.out")"
    expect_eq "$(cat "$KTP_TMP/cdn.out")" "220 banner for 127.0.0.1" "the banner (through microsocks, by its own name)"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:2525 .*route=m .*domain=banner.test" ||
        fail "no conn line routing banner.test via m"
    stop_ktproxy TERM || true
}

test_10000_queries_from_short_lived_sockets_leave_no_flows() {
    local out n
    out=$(in_app "$PY" "$TOOLS" dnsmany "$KTP_SRV4" 10000 web.test)
    expect_eq "$out" "answered=10000" "short-lived resolver sockets answered"
    for _ in $(seq 20); do
        n=$(ktp_counter udp_flows)
        [ "$n" = 0 ] && break
        sleep 0.2
    done
    expect_eq "$n" 0 "ktp_udp_flows entries after 10,000 closed resolver sockets"
}

test_default_proxy_leaks_no_dns() {
    # --default proxy=m: getaddrinfo's queries and the connection that
    # follows all go through microsocks; tcpdump on the server host sees no
    # DNS packet from the client host.
    local out cap
    stop_every_ktproxy
    start_ktproxy --udp --upstream "m=socks5://$KTP_SRV4:1081" --default proxy=m || fail "ktproxy did not start"
    cap="$KTP_TMP/leak.pcap"
    ktp_bg in_srv tcpdump -i "kv${KTP_ID}s" -n -U -w "$cap" "src host $KTP_CLI4 and port 53"
    local tcpdump_pid="${KTP_PIDS[-1]}"
    sleep 1
    printf 'nameserver %s\noptions attempts:1 timeout:5\n' "$KTP_SRV4" > "$KTP_TMP/resolv.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.app"
    out=$(in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.app' /etc/hosts &&
        exec $PY -c '
import socket
ip = socket.getaddrinfo(\"banner.test\", 2525, socket.AF_INET)[0][4][0]
s = socket.create_connection((ip, 2525), timeout=5)
print(s.recv(200).decode().strip())'") || fail "client failed: $out"
    # The process asked for the name itself: microsocks is given it and
    # resolves it from its hosts file (the server host's loopback).
    expect_eq "$out" "220 banner for 127.0.0.1" "the banner through microsocks"
    sleep 0.5
    kill "$tcpdump_pid"
    sleep 0.5
    expect_eq "$(tcpdump -r "$cap" -n 2>/dev/null | wc -l)" 0 "DNS packets from the client host on the wire"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] banner.test from $KTP_SRV4" "dnsmasq log (query via microsocks)"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:2525 .*route=m .*domain=banner.test" ||
        fail "no conn line with the remembered name"
    stop_ktproxy TERM || true
}

test_run_default_proxy_leaks_no_dns_without_any_udp_flag() {
    # Issue 13's first user story, the command as a user types it: no --udp.
    # curl's getaddrinfo asks dnsmasq (its resolv.conf) for story.test; the
    # query must reach dnsmasq from dante's side only, and curl gets the page
    # through dante. (Before UDP was on by default, the query went straight
    # from the client host to dnsmasq: packets on the wire, and dnsmasq's
    # log said "from $KTP_CLI4".)
    local out cap tcpdump_pid
    cap="$KTP_TMP/story.pcap"
    ktp_bg in_srv tcpdump -i "kv${KTP_ID}s" -n -U -w "$cap" "port 53 and (src host $KTP_CLI4 or src host $KTP_CLI6)"
    tcpdump_pid="${KTP_PIDS[-1]}"
    sleep 1
    printf 'nameserver %s\noptions attempts:1 timeout:5\n' "$KTP_SRV4" > "$KTP_TMP/resolv.story.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.story"
    out=$(in_cli unshare -m sh -c "mount --bind '$KTP_TMP/resolv.story.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.story' /etc/hosts &&
        exec timeout 60 '$KTPROXY' run --upstream 's=socks5://ktpuser:s3cret@$KTP_SRV4:1082' --default proxy=s -- \
            curl -sS --max-time 15 http://story.test:8089/fake.txt" 2>&1) || fail "ktproxy run curl failed: $out"
    expect_eq "$out" "fake page" "the page, through dante by a name resolved through dante"
    sleep 0.5
    kill "$tcpdump_pid"
    sleep 0.5
    expect_eq "$(tcpdump -r "$cap" -n 2>/dev/null | wc -l)" 0 "port-53 packets from the client host on the wire"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] story.test from $KTP_SRV4" "dnsmasq log (query via dante)"
    expect_no_file_match "$DNSMASQ_LOG" "story.test from ($KTP_CLI4|$KTP_CLI6)" "dnsmasq log (a query from the client host)"
    wait_log "$DANTE_DIR/danted.log" "username%ktpuser@.* -> .* $KTP_SRV4\.53( |$)" ||
        fail "dante's log shows no DNS-over-TCP connection to dnsmasq"
    wait_log "$DANTE_DIR/danted.log" "username%ktpuser@.* -> .* $KTP_SRV4\.8089( |$)" ||
        fail "dante's log shows no connection to the web server"
}

test_loopback_resolver_without_dns_resolver_gets_a_warning_at_start() {
    # A resolver on loopback (systemd-resolved's 127.0.0.53) cannot be
    # reached from an upstream: with neither --dns-resolver nor resolved's
    # own server list, `ktproxy run` (quiet unless something is wrong) says
    # on stderr, once, that proxied names will get SERVFAIL; not with
    # --dns-resolver, nor with --no-udp, where nothing is intercepted.
    local out
    printf 'nameserver 127.0.0.53\noptions edns0\n' > "$KTP_TMP/resolv.lo.conf"
    [ -e /run/systemd/resolve/resolv.conf ] && echo "    (this host runs systemd-resolved: its server list is read)" >&2
    out=$(in_cli unshare -m sh -c "mount --bind '$KTP_TMP/resolv.lo.conf' /etc/resolv.conf &&
        mount --bind /dev/null /run/systemd/resolve/resolv.conf 2>/dev/null;
        exec timeout 30 '$KTPROXY' run -- true" 2>&1) || fail "ktproxy run true failed: $out"
    expect_match "$out" "warn: DNS: /etc/resolv.conf names a resolver on loopback \\(127\\.0\\.0\\.53\\), which an upstream cannot reach" "stderr"
    expect_eq "$(grep -c 'resolver on loopback' <<< "$out")" 1 "warning lines"
    out=$(in_cli unshare -m sh -c "mount --bind '$KTP_TMP/resolv.lo.conf' /etc/resolv.conf &&
        exec timeout 30 '$KTPROXY' run --dns-resolver $KTP_SRV4 -- true" 2>&1) || fail "ktproxy run true failed: $out"
    expect_eq "$out" "" "stderr of ktproxy run --dns-resolver"
    out=$(in_cli unshare -m sh -c "mount --bind '$KTP_TMP/resolv.lo.conf' /etc/resolv.conf &&
        exec timeout 30 '$KTPROXY' run --no-udp -- true" 2>&1) || fail "ktproxy run --no-udp true failed: $out"
    expect_eq "$out" "" "stderr of ktproxy run --no-udp"
}

# A local resolver like systemd-resolved: dnsmasq on 127.0.0.53 in the
# client host, forwarding to the server host's dnsmasq (from outside the
# cgroup: a query it forwards is a leak of the name).
LOCAL_DNS_LOG="$KTP_TMP/dnsmasq.local.log"
start_local_resolver() {
    [ -s "$KTP_TMP/dnsmasq.local.pid" ] && kill -0 "$(cat "$KTP_TMP/dnsmasq.local.pid")" 2>/dev/null && return 0
    : > "$LOCAL_DNS_LOG"
    ktp_bg in_cli dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address=127.0.0.53 --port=53 --user=root --server="$KTP_SRV4" \
        --log-queries --log-facility="$LOCAL_DNS_LOG" --pid-file="$KTP_TMP/dnsmasq.local.pid"
    for _ in $(seq 50); do grep -q "started" "$LOCAL_DNS_LOG" && return 0; sleep 0.1; done
    return 1
}

test_loopback_resolver_queries_go_through_the_forwarder() {
    # The app asks 127.0.0.53 (UDP). A direct name goes to that resolver as
    # the app asked (its answer from 127.0.0.53); a proxied one goes
    # through the upstream to --dns-resolver and never reaches the local
    # resolver, which would ask for it from outside the cgroup.
    local out
    start_local_resolver || fail "the local resolver did not start"
    stop_every_ktproxy
    start_ktproxy --upstream "m=socks5://$KTP_SRV4:1081" --rule "domain=secret.test proxy=m" \
        --dns-resolver "$KTP_SRV4" || fail "ktproxy did not start"
    out=$(in_app dig +time=3 +tries=1 @127.0.0.53 web.test A 2>&1) || fail "dig web.test failed: $out"
    expect_match "$out" "status: NOERROR" "dig web.test at 127.0.0.53"
    expect_match "$out" "SERVER: 127.0.0.53#53" "the answer's source"
    expect_file_match "$LOCAL_DNS_LOG" "query\\[A\\] web.test from 127.0.0.1" "the local resolver asked for web.test"
    out=$(in_app dig +time=5 +tries=1 @127.0.0.53 secret.test A 2>&1) || fail "dig secret.test failed: $out"
    expect_match "$out" "status: NOERROR" "dig secret.test at 127.0.0.53"
    expect_file_match "$DNSMASQ_LOG" "query\\[A\\] secret.test from $KTP_SRV4" "dnsmasq asked from microsocks' side"
    # The same over TCP (glibc's use-vc, a truncated answer asked again).
    local via_m
    via_m=$(grep -c "query\[A\] secret.test from $KTP_SRV4" "$DNSMASQ_LOG")
    out=$(in_app dig +tcp +time=5 +tries=1 @127.0.0.53 secret.test A 2>&1) || fail "dig +tcp secret.test failed: $out"
    expect_match "$out" "status: NOERROR" "dig +tcp secret.test at 127.0.0.53"
    expect_eq "$(grep -c "query\[A\] secret.test from $KTP_SRV4" "$DNSMASQ_LOG")" $((via_m + 1)) \
        "queries for secret.test dnsmasq got from microsocks' side after the TCP one"
    out=$(in_app dig +tcp +time=3 +tries=1 @127.0.0.53 web.test A 2>&1) || fail "dig +tcp web.test failed: $out"
    expect_match "$out" "status: NOERROR" "dig +tcp web.test at 127.0.0.53"
    expect_no_file_match "$LOCAL_DNS_LOG" "secret.test" "the local resolver's log"
    stop_ktproxy TERM || true
    # Without --dns-resolver (and no resolved server list): SERVFAIL, logged.
    start_ktproxy --upstream "m=socks5://$KTP_SRV4:1081" --rule "domain=secret.test proxy=m" ||
        fail "ktproxy did not start"
    out=$(in_app dig +time=3 +tries=1 @127.0.0.53 secret.test A 2>&1) || true
    expect_match "$out" "status: SERVFAIL" "dig secret.test at 127.0.0.53 without --dns-resolver"
    expect_file_match "$KTP_LOG" "secret.test to 127.0.0.53:53: routed to m, but a resolver on loopback cannot be reached" \
        "the log line"
    expect_no_file_match "$LOCAL_DNS_LOG" "secret.test" "the local resolver's log"
    stop_ktproxy TERM || true
}

test_unparsed_query_does_not_leak_direct() {
    # A query whose name ktproxy cannot read (a forward compression pointer,
    # which dnsmasq follows) for secret.test, routed proxy=m: the forwarder
    # must not hand it to the resolver direct from the client host.
    local out
    stop_every_ktproxy
    start_ktproxy --udp --upstream "m=socks5://$KTP_SRV4:1081" --rule "domain=secret.test proxy=m" ||
        fail "ktproxy did not start"
    out=$(in_app "$PY" -c '
import socket, struct, sys
q = struct.pack("!HHHHHH", 4242, 0x0100, 1, 0, 0, 0) + b"\xc0\x12" + struct.pack("!HH", 1, 1)
q += b"\x06secret\x04test\x00"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
try:
    s.recvfrom(4096)
    print("answered")
except OSError:
    print("unanswered")' "$KTP_SRV4") || fail "client failed: $out"
    stop_ktproxy TERM || true
    expect_eq "$out" unanswered "the unreadable query's fate"
    expect_no_file_match "$DNSMASQ_LOG" "secret.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
}

test_dns_block_nxdomain() {
    local out
    stop_every_ktproxy
    start_ktproxy --udp --dns-block nxdomain --rule "domain=blocked.test block" || fail "ktproxy did not start"
    out=$(in_app dig +time=3 +tries=1 @"$KTP_SRV4" blocked.test A 2>&1) || true
    stop_ktproxy TERM || true
    expect_match "$out" "status: NXDOMAIN" "dig status for a blocked name with --dns-block nxdomain"
    expect_eq "$(queries_for blocked.test)" 0 "queries for blocked.test that reached dnsmasq"
}

# in_app_resolving CMD...: CMD in the app cgroup with dnsmasq as its resolver
# and no names in /etc/hosts.
in_app_resolving() {
    printf 'nameserver %s\noptions attempts:1 timeout:5\n' "$KTP_SRV4" > "$KTP_TMP/resolv.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.app"
    in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.app' /etc/hosts && exec \"\$@\"" sh "$@"
}

# connect_result IP PORT: "refused" when the connect is refused or reset
# before any byte, else what the server said.
connect_result() {
    in_app "$PY" -c '
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    d = s.recv(200)
    print("refused" if not d else d.decode().strip())
except (ConnectionRefusedError, ConnectionResetError):
    print("refused")
except OSError as e:
    print("error:", e)' "$1" "$2"
}

test_fake_mode_names_go_to_the_upstream_and_no_dns_leaks() {
    local out cap tcpdump_pid
    stop_every_ktproxy
    start_ktproxy --udp --dns-mode fake --upstream "m=socks5://$KTP_SRV4:1081" --default proxy=m \
        --rule "domain=web.test direct" || fail "ktproxy did not start"
    cap="$KTP_TMP/fake-leak.pcap"
    ktp_bg in_srv tcpdump -i "kv${KTP_ID}s" -n -U -w "$cap" "port 53 and (src host $KTP_CLI4 or src host $KTP_CLI6)"
    tcpdump_pid="${KTP_PIDS[-1]}"
    sleep 1
    out=$(in_app dig +time=3 +tries=1 @"$KTP_SRV4" fakeweb.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "status: NOERROR" "dig status in fake mode"
    expect_match "$out" "fakeweb\.test\..*IN[[:space:]]+A[[:space:]]+198\.1[89]\.[0-9]+\.[0-9]+" "a fake address"
    out=$(in_app_resolving curl -sS --max-time 10 http://fakeweb.test:8088/fake.txt 2>&1) || fail "curl failed: $out"
    expect_eq "$out" "fake page" "the page, through microsocks by name"
    sleep 0.5
    kill "$tcpdump_pid"
    sleep 0.5
    expect_eq "$(tcpdump -r "$cap" -n 2>/dev/null | wc -l)" 0 "port-53 packets from the client host on the wire"
    expect_eq "$(queries_for fakeweb.test)" 0 "queries for fakeweb.test that reached dnsmasq"
    expect_file_match "$KTP_TMP/microsocks.log" "fakeweb\.test" "microsocks' log (given the name)"
    wait_log "$KTP_LOG" "orig=198\.1[89]\.[0-9.]+:8088 .*route=m .*domain=fakeweb.test" ||
        fail "no conn line routing the fake address by its name"
    # A name routed direct keeps real DNS: dnsmasq answers the client host.
    out=$(in_app dig +time=3 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "web\.test\..*IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "the real address of a direct name"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] web.test from $KTP_CLI4" "dnsmasq log (direct name)"
    stop_ktproxy TERM || true
}

test_fake_mode_refuses_unknown_and_direct_fake_addresses() {
    local out before
    stop_every_ktproxy
    # The cidr rule would send fake addresses out direct: they are refused.
    start_ktproxy --udp --dns-mode fake --upstream "m=socks5://$KTP_SRV4:1081" --default proxy=m \
        --rule "cidr=198.18.0.0/15 port=2526 direct" || fail "ktproxy did not start"
    before=$(wc -l < "$KTP_TMP/microsocks.log")
    expect_eq "$(connect_result 198.19.255.200 2525)" refused "a connect to a fake address never handed out"
    expect_eq "$(connect_result fd6b:7470:726f:7879::4242 2525)" refused "the same over IPv6"
    wait_log "$KTP_LOG" "fake address ktproxy did not hand out" || fail "no log line for the unknown fake address"
    out=$(in_app dig +short +time=3 +tries=1 @"$KTP_SRV4" banner.test A 2>&1)
    expect_match "$out" "^198\.1[89]\." "banner.test's fake address"
    expect_eq "$(connect_result "$out" 2525)" "220 banner for 127.0.0.1" "the fake address, through microsocks"
    expect_eq "$(connect_result "$out" 2526)" refused "the fake address on a port routed direct"
    wait_log "$KTP_LOG" "fake address of banner.test routed direct" || fail "no log line for the direct fake address"
    expect_eq "$(wc -l < "$KTP_TMP/microsocks.log")" "$((before + 1))" "microsocks connects (the one by name only)"
    stop_ktproxy TERM || true
}

# start_tcp_ktproxy ARGS...: a fresh instance (empty name memory, its own
# log) with the rules the DNS-over-TCP tests use.
start_tcp_ktproxy() {
    stop_every_ktproxy
    start_ktproxy --udp --upstream "m=socks5://$KTP_SRV4:1081" --rule "domain=blocked.test block" \
        --rule "domain=tcpsecret.test proxy=m" --rule "domain=banner.test port=2525 proxy=m" "$@"
}

test_tcp_name_routed_to_an_upstream_goes_through_it() {
    # dig +tcp: the query is read, routed by its name (proxy=m) and goes as
    # DNS over TCP through microsocks; the resolver never sees the client.
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    out=$(in_app dig +tcp +time=5 +tries=1 @"$KTP_SRV4" tcpsecret.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "status: NOERROR" "dig +tcp status for a name routed to an upstream"
    expect_match "$out" "tcpsecret\.test\..*IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig +tcp answer"
    expect_match "$out" "SERVER: $KTP_SRV4#53.*TCP" "dig's server line"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] tcpsecret.test from $KTP_SRV4" "dnsmasq log (query via microsocks)"
    expect_no_file_match "$DNSMASQ_LOG" "tcpsecret.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
    stop_ktproxy TERM || true
}

test_tcp_answer_is_remembered_for_domain_rules() {
    # The answer dig +tcp got for banner.test names the address: the banner
    # connection that follows is routed by banner.test's rule (through
    # microsocks, which sees the server host's own address).
    start_tcp_ktproxy || fail "ktproxy did not start"
    banner_by_name "$KTP_SRV4" +tcp
    stop_ktproxy TERM || true
}

test_tcp_blocked_name_is_refused() {
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    out=$(in_app dig +tcp +time=5 +tries=1 @"$KTP_SRV4" blocked.test A 2>&1) || true
    stop_ktproxy TERM || true
    expect_match "$out" "status: REFUSED" "dig +tcp status for a blocked name"
    expect_eq "$(queries_for blocked.test)" 0 "queries for blocked.test that reached dnsmasq"
}

test_tcp_zone_transfer_is_refused_not_cut_short() {
    # An AXFR answer is many messages; the forwarder's exchange is one
    # query, one answer. A transfer cut after the first message would look
    # complete to the client: NOTIMP at once instead, and a log line.
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    out=$(in_app dig +time=5 +tries=1 @"$KTP_SRV4" axfr zone.test 2>&1) || true
    stop_ktproxy TERM || true
    expect_match "$out" "Transfer failed" "dig axfr through ktproxy"
    expect_file_match "$KTP_LOG" "dns-tcp [^ ]+\\[[0-9]+\\] zone.test type AXFR: zone transfers are not forwarded; answered NOTIMP" \
        "the log line"
    expect_eq "$(queries_for zone.test)" 0 "queries for zone.test that reached dnsmasq"
}

test_tcp_fake_mode_answers_fake_addresses() {
    # dig +tcp and glibc with `options use-vc` (every query over TCP) get a
    # fake address; curl reaches the page through microsocks by name.
    local out before
    stop_every_ktproxy
    start_ktproxy --udp --dns-mode fake --upstream "m=socks5://$KTP_SRV4:1081" --default proxy=m ||
        fail "ktproxy did not start"
    before=$(queries_for fakeweb.test)
    out=$(in_app dig +tcp +time=5 +tries=1 @"$KTP_SRV4" fakeweb.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "fakeweb\.test\..*IN[[:space:]]+A[[:space:]]+198\.1[89]\.[0-9]+\.[0-9]+" "a fake address over TCP"
    printf 'nameserver %s\noptions attempts:1 timeout:5 use-vc\n' "$KTP_SRV4" > "$KTP_TMP/resolv.vc.conf"
    printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.vc"
    out=$(in_app unshare -m sh -c "mount --bind '$KTP_TMP/resolv.vc.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.vc' /etc/hosts &&
        exec curl -sS --max-time 10 http://fakeweb.test:8088/fake.txt" 2>&1) || fail "curl failed: $out"
    expect_eq "$out" "fake page" "the page, through microsocks by name"
    wait_log "$KTP_LOG" "orig=198\.1[89]\.[0-9.]+:8088 .*route=m .*domain=fakeweb.test" ||
        fail "no conn line routing the fake address by its name"
    expect_eq "$(queries_for fakeweb.test)" "$before" "queries for fakeweb.test that reached dnsmasq"
    stop_ktproxy TERM || true
}

test_tcp_pipelined_queries_are_all_answered() {
    # Three queries written at once on one connection (RFC 7766): one the
    # resolver answers direct, one blocked, one through microsocks; each is
    # answered (in any order), and the connection then ends cleanly.
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    out=$(in_app "$PY" -c '
import socket, struct, sys
def query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", 1, 1)
    return struct.pack("!H", len(q)) + q
s = socket.create_connection((sys.argv[1], 53), timeout=10)
s.sendall(query(1, "web.test") + query(2, "blocked.test") + query(3, "tcpsecret.test"))
buf, got = b"", []
while len(got) < 3:
    d = s.recv(4096)
    if not d:
        break
    buf += d
    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
        n = struct.unpack("!H", buf[:2])[0]
        m, buf = buf[2:2 + n], buf[2 + n:]
        qid, flags, _, an = struct.unpack("!HHHH", m[:8])
        got.append("%d rcode=%d answers=%d" % (qid, flags & 0xf, an))
s.shutdown(socket.SHUT_WR)
print(" | ".join(sorted(got)), "| eof" if s.recv(10) == b"" else "| more")' "$KTP_SRV4" 2>&1) ||
        fail "pipelining client failed: $out"
    stop_ktproxy TERM || true
    expect_eq "$out" "1 rcode=0 answers=1 | 2 rcode=5 answers=0 | 3 rcode=0 answers=1 | eof" "the three answers"
}

test_tcp_hostile_clients_are_cut_and_dns_goes_on() {
    # A zero length, a message cut short by the FIN, bytes no name can be
    # read from, and a client that never sends: each connection is closed
    # (the last after ktproxy's 10 s), with a log line; dig +tcp still works.
    local out
    start_tcp_ktproxy || fail "ktproxy did not start"
    out=$(in_app "$PY" -c '
import socket, struct, sys, time
def fate(payload, shut=False, wait=5):
    s = socket.create_connection((sys.argv[1], 53), timeout=wait)
    if payload:
        s.sendall(payload)
    if shut:
        s.shutdown(socket.SHUT_WR)
    try:
        return "closed" if s.recv(100) == b"" else "answered"
    except ConnectionResetError:
        return "closed"
    except socket.timeout:
        return "open"
idle = socket.create_connection((sys.argv[1], 53), timeout=20)
t0 = time.monotonic()
print("zero-length", fate(b"\x00\x00"))
print("truncated", fate(struct.pack("!H", 100) + b"\x12\x34" * 5, shut=True))
print("garbage", fate(struct.pack("!H", 20) + b"\xff" * 20))
try:
    idle_fate = "closed" if idle.recv(100) == b"" else "answered"
except ConnectionResetError:
    idle_fate = "closed"
except socket.timeout:
    idle_fate = "open"
print("silent", idle_fate, "in time" if time.monotonic() - t0 < 19 else "late")' "$KTP_SRV4" 2>&1) ||
        fail "hostile client failed: $out"
    expect_eq "$(printf '%s' "$out" | tr '\n' ' ')" \
        "zero-length closed truncated closed garbage closed silent closed in time" "the hostile connections' fates"
    expect_file_match "$KTP_LOG" "dns-tcp .*shorter than a DNS header; closed" "log line for the zero length"
    expect_file_match "$KTP_LOG" "dns-tcp .*closed in the middle of a query.*; closed" "log line for the cut query"
    expect_file_match "$KTP_LOG" "dns-tcp .*will not forward; closed" "log line for the garbage"
    expect_file_match "$KTP_LOG" "dns-tcp .*no query for 10 s; closed" "log line for the silent client"
    out=$(in_app dig +tcp +time=5 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || fail "dig after the hostile clients: $out"
    expect_match "$out" "web\.test\..*IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig +tcp after the hostile clients"
    stop_ktproxy TERM || true
}

test_tcp_resolver_that_never_answers_gets_servfail() {
    # A resolver (on an address of the server host's own) that accepts and
    # never answers: the exchange gives up after 5 s and the client gets
    # SERVFAIL, not a hang.
    local mute=10.201.0.53 out
    ip -n "$KTP_SRV" addr add "$mute/24" dev "kv${KTP_ID}s" || fail "adding $mute"
    ktp_bg in_srv "$PY" -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 53))
s.listen(8)
s.settimeout(30)
held = []
end = time.monotonic() + 30
while time.monotonic() < end and len(held) < 8:
    try:
        held.append(s.accept())
    except OSError:
        break
time.sleep(max(0, end - time.monotonic()))' "$mute"
    local mute_pid="${KTP_PIDS[-1]}"
    for _ in $(seq 50); do
        ip netns exec "$KTP_SRV" ss -Hltn "src $mute:53" | grep -q LISTEN && break
        sleep 0.1
    done
    start_tcp_ktproxy || fail "ktproxy did not start"
    out=$(in_app dig +tcp +time=12 +tries=1 @"$mute" web.test A 2>&1) || true
    stop_ktproxy TERM || true
    kill "$mute_pid" 2>/dev/null
    expect_match "$out" "status: SERVFAIL" "dig +tcp status when the resolver never answers"
    expect_file_match "$KTP_LOG" "dns-tcp .*web.test via direct: no answer from $mute:53; answered SERVFAIL" \
        "log line for the silent resolver"
}

start_main_ktproxy() {
    start_ktproxy --udp --upstream "m=socks5://$KTP_SRV4:1081" --rule "domain=blocked.test block" \
        --rule "domain=*.blocked.test block" \
        --rule "domain=secret.test proxy=m" --rule "domain=banner.test port=2525 proxy=m" \
        --upstream-group g=m --rule "domain=grouped.test proxy=g" --rule "domain=gosecret.test proxy=m"
}
start_main_ktproxy || ktp_die "ktproxy did not start"
run_all_tests "$0"
finish
