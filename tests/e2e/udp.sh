#!/bin/bash
# End-to-end tests of UDP interception (on by default; bpf/sock_udp.h, proxy/udp/):
# a Python echo server on the server host, connected and unconnected clients
# in the app cgroup over IPv4, IPv6 and v4-mapped IPv6, 10,000 datagrams with
# checksums; replies seen from the original destination; a block rule failing
# sendto with EPERM; a process outside the cgroup untouched; short-lived
# sockets leaving no flow state; a process outside the cgroup sending to an
# app socket's token gets no flow; kill -9 failing open (and --fail-closed not,
# until a restart takes the pinned hooks over and relays again).
# Through SOCKS5 upstreams (UDP ASSOCIATE, RFC 1928 section 7): dante with a
# password, 10,000 datagrams each way to IPv4 and IPv6 destinations;
# udp_tools.py's socks5udp as a hostile
# relay (short headers, fragments, other senders: dropped), one that refuses
# UDP and an HTTP upstream (dropped, never direct), one that ends the
# association (the flow ends; the next datagram gets a new association).
# --cgroup-match leaves the UDP of cgroups it does not match alone. --no-udp
# leaves UDP untouched (the server sees the app's own socket, the counters
# stay 0) and says so in the ready line and status.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

PY=/usr/bin/python3
TOOLS="$(cd "$(dirname "$0")" && pwd)/udp_tools.py"

ktp_topo_up
ktp_bg in_srv "$PY" "$TOOLS" echo "$KTP_SRV4" 7000 "$KTP_SRV6" 7000 "$KTP_SRV4" 7001 "$KTP_SRV4" 7003 "$KTP_SRV6" 7003 \
    "$KTP_SRV4" 7005 "$KTP_SRV4" 7007
DANTE_DIR="$KTP_TMP/dante"
# Control connection over IPv4; dante sends to IPv6 targets from KTP_SRV6.
ktp_dante_setup "$DANTE_DIR" "$KTP_SRV4" 1081 "" "$KTP_SRV6"
ktp_dante_run "$DANTE_DIR"
ktp_bg in_srv "$PY" "$TOOLS" socks5udp "$KTP_SRV4" 1090 hostile > "$KTP_TMP/hostile.log" 2>&1
ktp_bg in_srv "$PY" "$TOOLS" socks5udp "$KTP_SRV4" 1091 refuse > "$KTP_TMP/refuse.log" 2>&1
ktp_bg in_srv "$PY" "$TOOLS" socks5udp "$KTP_SRV4" 1092 close > "$KTP_TMP/close.log" 2>&1
for p in 1081 1090 1091 1092; do ktp_wait_port "$KTP_SRV" "$p"; done
sleep 0.5

remove_my_pins() {
    local d
    for d in /sys/fs/bpf/ktproxy/*"ktp-test-${KTP_ID}"[!0-9]*; do
        [ -e "$d" ] && rm -rf "$d"
    done
    rm -f /run/ktproxy/*"ktp-test-${KTP_ID}"[!0-9]*.pin-owner
}
KTP_EXTRA_CLEANUP+=(remove_my_pins)
# The cgroups below the app cgroup that the --cgroup-match test makes.
remove_child_cgroups() { rmdir "$KTP_CG/m1" "$KTP_CG/g1" 2>/dev/null; }
KTP_EXTRA_CLEANUP+=(remove_child_cgroups)

# client HOST COUNT MODE: the echo client in the app cgroup; its summary line.
client() { in_app "$PY" "$TOOLS" client "$1" 7000 "$2" "$3"; }

expect_relayed() {
    local before="$1" after
    after=$(ktp_counter udp_redirected)
    [ "$after" -gt "$before" ] || fail "udp_redirected did not grow ($before -> $after): not intercepted"
}

# echo_through HOST PORT COUNT MODE: COUNT datagrams each way from the app
# cgroup, every one back with its checksum, relayed by ktproxy; connected
# sockets see HOST:PORT as their peer.
echo_through() {
    local host="$1" port="$2" count="$3" mode="$4" before out peer=""
    before=$(ktp_counter udp_redirected)
    out=$(in_app "$PY" "$TOOLS" client "$host" "$port" "$count" "$mode") || fail "client: $out"
    [ "$mode" = connected ] && peer=" peer=$host:$port"
    expect_match "$out" "ok=$count lost=0 bad=0 badsrc=0$peer" "$mode $host:$port"
    expect_relayed "$before"
}

test_unconnected_ipv4_10000_datagrams() {
    echo_through "$KTP_SRV4" 7000 10000 unconnected
    wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> $KTP_SRV4:7000 via direct" 90 ||
        fail "no udp log line for the flow"
}
test_connected_ipv4_with_getpeername() { echo_through "$KTP_SRV4" 7000 10000 connected; }
test_unconnected_ipv6_10000_datagrams() { echo_through "$KTP_SRV6" 7000 10000 unconnected; }
test_connected_ipv6_with_getpeername() { echo_through "$KTP_SRV6" 7000 10000 connected; }
# through_dante HOST MODE: echo_through to HOST:7003 (the rule to dante);
# the flow's closing log line counts all datagrams each way.
through_dante() {
    local dst="$1:7003"
    [[ "$1" == *:* ]] && dst="\[$1\]:7003"
    echo_through "$1" 7003 10000 "$2"
    wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> $dst via proxy=dante: 10000 datagrams out, 10000 in" 90 ||
        fail "no closing log line of the $2 flow to $dst through dante"
}
test_unconnected_ipv4_through_dante_udp_associate() { through_dante "$KTP_SRV4" unconnected; }
test_connected_ipv4_through_dante_udp_associate() { through_dante "$KTP_SRV4" connected; }
# IPv6 targets (ATYP 4) over the IPv4 control connection and relay address.
test_unconnected_ipv6_through_dante_udp_associate() { through_dante "$KTP_SRV6" unconnected; }
test_connected_ipv6_through_dante_udp_associate() { through_dante "$KTP_SRV6" connected; }
# udp_tools.py's relay reads the ATYP 4 header itself too.
test_ipv6_destination_through_a_socks5_relay() { echo_through "$KTP_SRV6" 7004 1000 connected; }

test_dante_relays_the_datagrams() {
    # The echo server sees dante's address of the family, not the client host's.
    local host out
    for host in "$KTP_SRV4" "$KTP_SRV6"; do
        out=$(in_app "$PY" -c "
import socket
s = socket.socket(socket.AF_INET6 if ':' in '$host' else socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b'hi', ('$host', 7003)); d, src = s.recvfrom(200); print(d.decode(), src[0])")
        expect_match "$out" "^hi\|from=$host:[0-9]+ $host$" "what the server saw through dante"
    done
}

test_hostile_relay_bytes_are_dropped() {
    # Each answer comes also with a short header, FRAG=1, another sender's
    # address, a domain sender and reserved bytes set: only the good one
    # reaches the app (a second copy would count as bad).
    # (The relay's six copies per answer may overflow a socket buffer now
    # and then: loss is not the point here, a copy reaching the app is.)
    local out ok
    out=$(in_app "$PY" "$TOOLS" client "$KTP_SRV4" 7004 300 unconnected)
    expect_match "$out" "bad=0 badsrc=0" "hostile relay"
    ok=$(sed -n 's/.* ok=\([0-9]*\) .*/\1/p' <<< "$out")
    [ "${ok:-0}" -ge 270 ] || fail "only ${ok:-0} of 300 answers came back: $out"
    kill -0 "$KTP_PID" || fail "ktproxy died"
}

# no_answer PORT: five datagrams from one socket in the app cgroup, 0.3 s
# apart; "timeout" when nothing answers any.
no_answer() {
    in_app "$PY" -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
got = []
for i in range(5):
    s.sendto(b'leak?', ('$KTP_SRV4', $1))
    try:
        got.append(s.recvfrom(200)[0].decode())
    except socket.timeout:
        pass
print(got[0] if got else 'timeout')"
}

test_upstream_without_udp_drops_never_direct() {
    # An echo server listens on 7005 and 7007: sent direct, they would answer.
    expect_eq "$(no_answer 7005)" timeout "answer through an upstream refusing UDP ASSOCIATE"
    wait_log "$KTP_LOG" "-> $KTP_SRV4:7005 via proxy=refuse: socks5 upstream refused UDP ASSOCIATE" ||
        fail "no log line for the refused association"
    # Refused once, the flow drops the socket's later datagrams: the
    # upstream is not asked again for each.
    expect_eq "$(grep -c refused "$KTP_TMP/refuse.log")" 1 "UDP ASSOCIATE requests for five datagrams of one socket"
    expect_eq "$(no_answer 7007)" timeout "answer through an HTTP upstream"
    wait_log "$KTP_LOG" "-> $KTP_SRV4:7007 via proxy=web \(no UDP through web, an HTTP proxy: dropped\)" ||
        fail "no log line for the flow to the HTTP upstream"
}

test_association_close_ends_the_flow() {
    local out
    out=$(in_app "$PY" -c "
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
dst = ('$KTP_SRV4', 7006)
s.sendto(b'one', dst); a = s.recvfrom(200)[0]
s.sendto(b'close', dst); time.sleep(1.5)
s.sendto(b'two', dst); b = s.recvfrom(200)[0]
print(a.decode(), b.decode())") || fail "client: $out"
    expect_eq "$out" "one|from=relay:0 two|from=relay:0" "answers before and after the association ended"
    wait_log "$KTP_LOG" "-> $KTP_SRV4:7006 via proxy=closer: the upstream closed the association" ||
        fail "no log line for the ended association"
    expect_eq "$(grep -c association "$KTP_TMP/close.log")" 2 "associations (the second for the datagram after the end)"
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

test_relay_port_answers_nothing_from_the_network() {
    # The relay's socket is bound to 0.0.0.0 so that every 127/8 token
    # reaches it (not to lo with SO_BINDTODEVICE: the hooks' socket lookup
    # then no longer finds it, and UDP would go direct). A datagram from
    # the server host to its port on the client host's address names no
    # token: dropped, never relayed or answered, and no flow opened.
    local port out flows
    port=$(sed -n 's/.*UDP relay on port \([0-9]*\).*/\1/p' "$KTP_LOG" | head -1)
    [ -n "$port" ] || fail "no UDP relay port in the ready line"
    flows=$(ls "/proc/$KTP_PID/fd" | wc -l)
    out=$(in_srv "$PY" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    for _ in range(3):
        s.send(b"probe")
        s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("silent")' "$KTP_CLI4" "$port")
    [ "$out" = silent ] || [ "$out" = refused ] || fail "a datagram from the server host to the relay's port: $out"
    expect_eq "$(ls "/proc/$KTP_PID/fd" | wc -l)" "$flows" "ktproxy's fds after the probe (no flow opened)"
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
    [ "$rc" = ECONNREFUSED ] ||
        { remove_my_pins; fail "sendto with the pinned hooks of a dead --fail-closed ktproxy: expected ECONNREFUSED, got '$rc'"; }
    # A restart (a service's Restart=on-failure) takes the pinned hooks
    # over, and UDP, on by default, goes through the new relay's port.
    start_ktproxy --fail-closed || { remove_my_pins; fail "ktproxy --fail-closed did not start again"; }
    out=$(client "$KTP_SRV4" 100 unconnected)
    stop_ktproxy TERM >/dev/null
    remove_my_pins
    expect_match "$out" "ok=100 lost=0" "after the restart that took the pinned hooks over"
    expect_file_match "$KTP_LOG" "ready: .*UDP relay on port .*took over pinned hooks" "the restart's ready line"
}

test_cgroup_match_leaves_unmatched_cgroups_udp_alone() {
    # --cgroup-match: only app/m* is intercepted. UDP from app/g went to
    # the relay all the same (the UDP hooks skipped the check TCP makes).
    # Last: one instance at a time (the main one stops, if still running).
    local before out
    stop_ktproxy TERM >/dev/null
    mkdir -p "$KTP_CG/m1" "$KTP_CG/g1"
    start_ktproxy --udp --cgroup-match "ktp-test-$KTP_ID/app/m*" || fail "ktproxy --cgroup-match did not start"
    wait_log "$KTP_LOG" "cgroup-match: intercepting .*/app/m1" || fail "m1 not followed"
    in_cg() { local cg="$1"; shift; sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
        nsenter --net="/run/netns/$KTP_CLI" "$@"; }
    before=$(ktp_counter udp_redirected)
    out=$(in_cg "$KTP_CG/g1" "$PY" "$TOOLS" client "$KTP_SRV4" 7000 50 unconnected) || fail "client in g1: $out"
    expect_eq "$(ktp_counter udp_redirected)" "$before" "udp_redirected after a client in an unmatched cgroup"
    out=$(in_cg "$KTP_CG/m1" "$PY" "$TOOLS" client "$KTP_SRV4" 7000 50 unconnected) || fail "client in m1: $out"
    [ "$(ktp_counter udp_redirected)" -gt "$before" ] || fail "a client in a matching cgroup was not relayed"
    stop_ktproxy TERM >/dev/null
    remove_child_cgroups
}

test_no_udp_leaves_udp_untouched() {
    # Last too: its own instance. The ready line and status say UDP is off
    # and why; a datagram from the cgroup reaches the server from the app's
    # own socket (through ktproxy it would come from ktproxy's), connected or
    # not, and ktproxy counts nothing.
    local out port ctl="$KTP_TMP/noudp.sock"
    stop_ktproxy TERM >/dev/null
    start_ktproxy --no-udp --control "$ctl" --rule "port=7001 block" || fail "ktproxy --no-udp did not start"
    expect_file_match "$KTP_LOG" "ready: .*UDP not intercepted \(--no-udp: the cgroup's UDP and DNS go direct\)" \
        "the ready line"
    out=$("$KTPROXY" status --control "$ctl") || fail "status failed: $out"
    expect_match "$out" "^udp: UDP not intercepted \(--no-udp" "status"
    out=$("$KTPROXY" status --control "$ctl" --json) || fail "status --json failed"
    expect_eq "$(jq -r .udp_port <<< "$out")" 0 "status --json udp_port"
    out=$(in_app "$PY" -c "
import socket
for connected in (False, True):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    if connected:
        s.connect(('$KTP_SRV4', 7000)); s.send(b'hi')
    else:
        s.sendto(b'hi', ('$KTP_SRV4', 7000))
    d, src = s.recvfrom(200)
    print(d.decode(), s.getsockname()[1], src[0])") || fail "client: $out"
    while read -r seen port src; do
        expect_eq "$seen" "hi|from=$KTP_CLI4:$port" "what the server saw (the app's own port $port)"
        expect_eq "$src" "$KTP_SRV4" "the reply's source"
    done <<< "$out"
    expect_eq "$(wc -l <<< "$out")" 2 "answers (unconnected and connected)"
    # A block rule is for TCP alone now: UDP to the port goes out.
    expect_eq "$(in_app "$PY" "$TOOLS" sendto "$KTP_SRV4" 7001)" ok "sendto to a port a rule blocks"
    expect_eq "$(ktp_counter udp_redirected)" 0 "udp_redirected"
    expect_eq "$(ktp_counter udp_flows)" 0 "udp_flows"
    expect_no_file_match "$KTP_LOG" "^.*udp python3" "a udp flow line"
    stop_ktproxy TERM >/dev/null
}

start_main_ktproxy() {
    start_ktproxy --udp --rule "port=7001 block" \
        --upstream "dante=socks5://ktpuser:s3cret@$KTP_SRV4:1081" --rule "port=7003 proxy=dante" \
        --upstream "hostile=socks5://$KTP_SRV4:1090" --rule "port=7004 proxy=hostile" \
        --upstream "refuse=socks5://$KTP_SRV4:1091" --rule "port=7005 proxy=refuse" \
        --upstream "closer=socks5://$KTP_SRV4:1092" --rule "port=7006 proxy=closer" \
        --upstream "web=http://$KTP_SRV4:1093" --rule "port=7007 proxy=web"
}
start_main_ktproxy || ktp_die "ktproxy did not start"
run_all_tests "$0"
finish
