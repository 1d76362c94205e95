#!/bin/bash
# End-to-end tests of UDP interception (--udp; bpf/sock_udp.h, proxy/udp/):
# a Python echo server on the server host, connected and unconnected clients
# in the app cgroup over IPv4, IPv6 and v4-mapped IPv6, 10,000 datagrams with
# checksums; replies seen from the original destination; a block rule failing
# sendto with EPERM; a process outside the cgroup untouched; short-lived
# sockets leaving no flow state; a process outside the cgroup sending to an
# app socket's token gets no flow; kill -9 failing open (and --fail-closed not).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

PY=/usr/bin/python3
TOOLS="$(cd "$(dirname "$0")" && pwd)/udp_tools.py"

ktp_topo_up
ktp_bg in_srv "$PY" "$TOOLS" echo "$KTP_SRV4" 7000 "$KTP_SRV6" 7000 "$KTP_SRV4" 7001
sleep 0.5

remove_my_pins() {
    local d
    for d in /sys/fs/bpf/ktproxy/*"ktp-test-${KTP_ID}"[!0-9]*; do
        [ -e "$d" ] && rm -rf "$d"
    done
    rm -f /run/ktproxy/*"ktp-test-${KTP_ID}"[!0-9]*.pin-owner
}
KTP_EXTRA_CLEANUP+=(remove_my_pins)

# client HOST COUNT MODE: the echo client in the app cgroup; its summary line.
client() { in_app "$PY" "$TOOLS" client "$1" 7000 "$2" "$3"; }

expect_relayed() {
    local before="$1" after
    after=$(ktp_counter udp_redirected)
    [ "$after" -gt "$before" ] || fail "udp_redirected did not grow ($before -> $after): not intercepted"
}

test_unconnected_ipv4_10000_datagrams() {
    local before out
    before=$(ktp_counter udp_redirected)
    out=$(client "$KTP_SRV4" 10000 unconnected) || fail "client: $out"
    expect_match "$out" "ok=10000 lost=0 bad=0 badsrc=0" "unconnected IPv4"
    expect_relayed "$before"
    wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> $KTP_SRV4:7000 via direct" 90 ||
        fail "no udp log line for the flow"
}

test_connected_ipv4_with_getpeername() {
    local before out
    before=$(ktp_counter udp_redirected)
    out=$(client "$KTP_SRV4" 10000 connected) || fail "client: $out"
    expect_match "$out" "ok=10000 lost=0 bad=0 badsrc=0 peer=$KTP_SRV4:7000" "connected IPv4"
    expect_relayed "$before"
}

test_unconnected_ipv6_10000_datagrams() {
    local before out
    before=$(ktp_counter udp_redirected)
    out=$(client "$KTP_SRV6" 10000 unconnected) || fail "client: $out"
    expect_match "$out" "ok=10000 lost=0 bad=0 badsrc=0" "unconnected IPv6"
    expect_relayed "$before"
}

test_connected_ipv6_with_getpeername() {
    local before out
    before=$(ktp_counter udp_redirected)
    out=$(client "$KTP_SRV6" 10000 connected) || fail "client: $out"
    expect_match "$out" "ok=10000 lost=0 bad=0 badsrc=0 peer=$KTP_SRV6:7000" "connected IPv6"
    expect_relayed "$before"
}

test_v4_mapped_from_an_ipv6_socket() {
    local before out
    before=$(ktp_counter udp_redirected)
    out=$(client "$KTP_SRV4" 1000 mapped) || fail "client: $out"
    expect_match "$out" "ok=1000 lost=0 bad=0 badsrc=0" "v4-mapped"
    expect_relayed "$before"
}

test_echo_sees_ktproxy_not_a_loopback_address() {
    # The server sees the datagram from the client host's address (ktproxy's
    # upstream socket), never from a token or loopback address.
    local out
    out=$(in_app "$PY" -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'hi', ('$KTP_SRV4', 7000)); print(s.recvfrom(200)[0].decode())")
    expect_match "$out" "^hi\|from=$KTP_CLI4:[0-9]+$" "what the server saw"
}

test_block_rule_gives_eperm() {
    expect_eq "$(in_app "$PY" "$TOOLS" sendto "$KTP_SRV4" 7001)" EPERM "sendto to a blocked port"
    expect_eq "$(in_app "$PY" -c "
import socket, errno
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.connect(('$KTP_SRV4', 7001)); print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])")" EPERM "connect to a blocked port"
}

test_outside_the_cgroup_is_untouched() {
    local before out after
    before=$(ktp_counter udp_redirected)
    out=$(in_cli "$PY" "$TOOLS" client "$KTP_SRV4" 7000 200 unconnected) || fail "client: $out"
    after=$(ktp_counter udp_redirected)
    expect_eq "$after" "$before" "udp_redirected after a client outside the cgroup"
}

test_short_lived_sockets_leave_no_flows() {
    # 10,000 sockets, one datagram each way, then closed: their release
    # deletes their flow entries.
    local out n before
    before=$(ktp_counter udp_redirected)
    out=$(in_app "$PY" -c "
import socket
ok = 0
for i in range(10000):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b'q%d' % i, ('$KTP_SRV4', 7000))
    try:
        d, src = s.recvfrom(200); ok += src == ('$KTP_SRV4', 7000)
    except OSError:
        pass
    s.close()
print(ok)")
    expect_eq "$out" 10000 "answered short-lived sockets"
    # And connected IPv6 ones (flows filed by the relay, deleted at release).
    out=$(in_app "$PY" -c "
import socket
ok = 0
for i in range(1000):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(2)
    s.connect(('$KTP_SRV6', 7000)); s.send(b'c%d' % i)
    try:
        ok += s.recv(200).startswith(b'c%d|' % i)
    except OSError:
        pass
    s.close()
print(ok)")
    expect_eq "$out" 1000 "answered short-lived connected IPv6 sockets"
    [ $(( $(ktp_counter udp_redirected) - before )) -ge 10000 ] || fail "the 10,000 datagrams were not all relayed"
    for _ in $(seq 20); do
        n=$(ktp_counter udp_flows)
        [ "$n" = 0 ] && break
        sleep 0.2
    done
    expect_eq "$n" 0 "ktp_udp_flows entries after the sockets closed"
}

test_another_process_cannot_borrow_a_flow_token() {
    # A process outside the cgroup sending to an app socket's token from 100
    # ports of its own: the token belongs to the app's socket, so the relay
    # opens no upstream socket (and sends nothing) for any of them.
    local token fds_before fds_after port
    port=$(sed -n 's/.*UDP relay on port \([0-9]*\).*/\1/p' "$KTP_LOG" | head -1)
    in_app "$PY" -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 7000))
s.send(b"mine")
s.recv(100)
time.sleep(6)' "$KTP_SRV4" &
    local app=$!
    for _ in $(seq 50); do
        token=$(in_cli ss -Hun state established "dport = :$port" | awk '{ print $NF }' | grep '^127\.' | head -1)
        [ -n "$token" ] && break
        sleep 0.1
    done
    [ -n "$token" ] || { kill "$app"; fail "no app socket connected to a token"; }
    fds_before=$(ls "/proc/$KTP_PID/fd" | wc -l)
    in_cli "$PY" -c '
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
socks = []
for i in range(100):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"borrowed", (host, int(port)))
    socks.append(s)' "$token"
    sleep 1
    fds_after=$(ls "/proc/$KTP_PID/fd" | wc -l)
    kill "$app" 2>/dev/null; wait "$app" 2>/dev/null
    [ "$fds_after" -lt $((fds_before + 10)) ] ||
        fail "the relay opened $((fds_after - fds_before)) fds for 100 senders borrowing token $token"
}

test_kill9_fails_open_and_fail_closed_fails() {
    local out rc
    kill -9 "$KTP_PID"
    ktp_wait_dead() { for _ in $(seq 100); do [ -s "$KTP_LOG.rc" ] && return 0; sleep 0.05; done; return 1; }
    ktp_wait_dead || fail "ktproxy did not die"
    # No hooks: straight to the server, which sees the client's own socket.
    out=$(client "$KTP_SRV4" 100 unconnected) || fail "fail-open client: $out"
    expect_match "$out" "ok=100 lost=0" "after kill -9 (fail-open)"
    start_ktproxy --udp --fail-closed || fail "ktproxy --fail-closed did not start"
    kill -9 "$KTP_PID"
    ktp_wait_dead || fail "ktproxy did not die"
    rc=$(in_app "$PY" "$TOOLS" sendto "$KTP_SRV4" 7000)
    remove_my_pins
    expect_eq "$rc" ECONNREFUSED "sendto with the pinned hooks of a dead --fail-closed ktproxy"
}

start_ktproxy --udp --rule "port=7001 block" || ktp_die "ktproxy did not start"
run_all_tests "$0"
finish
