#!/bin/bash
# Hostile conditions (issue 16): the ways transparent proxies are known to
# fail, each tried with a count. Restarts that open a bypass window, reloads
# under live flows, connection churn that could leave map entries or fds
# behind, a full hand-off map, a low fd limit, routing loops, leaks by address
# family, SO_ORIGINAL_DST asked by strangers, and a short soak.
#
# Figures are scaled to keep the suite near 3 minutes on a 2-core CI machine;
# KTP_HOSTILE_FULL=1 runs the issue's own figures (each test names both).
# Direct SYNs are counted on the server host with tcpdump: a SYN from the
# client host whose source port is one the app bound and not one of
# ktproxy's (via= in its conn lines) left without ktproxy.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root
command -v tcpdump >/dev/null || ktp_die "tcpdump missing (scripts/setup installs it)"

TOOLS="$(cd "$(dirname "$0")" && pwd)/hostile_tools.py"
FULL="${KTP_HOSTILE_FULL:-0}"
full() { [ "$FULL" = 1 ] && echo "$1" || echo "$2"; }

ktp_topo_up
# echo 9000, reset-at-once 9001, never-accepting 9002, nothing on 9003,
# identity servers 10000-10049.
ktp_bg in_srv python3 "$TOOLS" servers echo:9000 rst:9001 stuck:9002 id:10000-10049 --timeout 1200
ktp_wait_port "$KTP_SRV" 9000
ktp_wait_port "$KTP_SRV" 10049
start_nginx
# The Go client: Go's own socket code, no libc (tests/e2e/goclient).
mkdir -p "$KTP_TMP/go"
(cd "$(dirname "$0")/goclient" && HOME="$KTP_TMP/go" GOCACHE="$KTP_TMP/go/cache" GO111MODULE=off CGO_ENABLED=0 \
    timeout 300 go build -o "$KTP_TMP/goclient" main.go) || ktp_die "building the Go client failed"

# kill_left_instances: a failed test must not leave its ktproxy, its clients
# or its pins to the next one.
kill_left_instances() {
    local rc=$? f
    set +e
    for f in "$KTP_TMP"/ktproxy.*.log.pid; do
        [ -e "$f" ] || continue
        [ -s "${f%.pid}.rc" ] && continue
        kill -9 "$(cat "$f")" 2>/dev/null
    done
    for f in "$KTP_TMP"/bg.pids; do
        [ -e "$f" ] && xargs -r kill -9 < "$f" 2>/dev/null
        rm -f "$f"
    done
    sleep 0.2
    # Only this suite's instance: another suite's --fail-closed instance
    # may be between a kill and its restart right now.
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" >/dev/null 2>&1
    return "$rc"
}
KTP_EXTRA_CLEANUP+=("kill_left_instances")
KTP_EXTRA_CLEANUP+=('rmdir "$KTP_CG/m0" "$KTP_CG/m9" "$KTP_CG/g9"')
remember_bg() { echo "$1" >> "$KTP_TMP/bg.pids"; }
# app_bg OUT CMD...: CMD in the app cgroup, in the background, stdout to OUT;
# $BG is its pid (the command's own: sh and nsenter exec it), so that
# signals reach it.
app_bg() {
    local out="$1"; shift
    nsenter --net="/run/netns/$KTP_CLI" sh -c 'cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"' \
        sh "$KTP_CG" "$@" > "$out" &
    BG=$!
    remember_bg "$BG"
}

# --- counting direct SYNs ----------------------------------------------------

# syn_capture_start: tcpdump on the server host, SYNs (no ACK) from the
# client host. -i any: nsenter keeps the host's /sys, and libpcap, given the
# veth's name, can end up on another interface than the namespace's, v4 and v6 (ip6[53] is the TCP flags byte after a
# 40-byte header: the client sends no extension headers).
syn_capture_start() {
    SYN_PCAP="$KTP_TMP/syn.$RANDOM.pcap"
    nsenter --net="/run/netns/$KTP_SRV" tcpdump -i any --immediate-mode -nn -U -s 96 -w "$SYN_PCAP" \
        "(ip and src host $KTP_CLI4 and tcp[13] & 0x12 == 0x02) or (ip6 and src host $KTP_CLI6 and ip6[6] == 6 and ip6[53] & 0x12 == 0x02)" \
        2>"$SYN_PCAP.err" &
    SYN_PID=$!
    remember_bg "$SYN_PID"
    for _ in $(seq 50); do grep -q 'listening on' "$SYN_PCAP.err" 2>/dev/null && return 0; sleep 0.1; done
    fail "tcpdump did not start: $(cat "$SYN_PCAP.err")"
}

# syn_capture_stop: ends tcpdump, leaves the SYNs' source ports, one a line,
# in $SYN_PCAP.ports.
syn_capture_stop() {
    sleep 0.3
    kill -INT "$SYN_PID" 2>/dev/null
    wait "$SYN_PID" 2>/dev/null
    tcpdump -nn -r "$SYN_PCAP" 2>/dev/null |
        sed -nE 's/^.* IP6? ([0-9a-f:.]+)\.([0-9]+) > .*/\2/p' > "$SYN_PCAP.ports"
}

# direct_syns APP_PORTS_FILE: SYNs seen on the server from a port the app
# bound, that no ktproxy log names as its own (via=ADDR:PORT). A port the
# app used and ktproxy later reused for a logged connection is ktproxy's.
direct_syns() {
    local p n=0 vias="$KTP_TMP/vias"
    grep -hoE 'via=[^ ]*:[0-9]+ ' "$KTP_TMP"/ktproxy.*.log 2>/dev/null | sed -E 's/.*:([0-9]+) $/\1/' | sort -u > "$vias"
    sort -u "$1" > "$1.sorted"
    for p in $(sort -u "$SYN_PCAP.ports" | comm -12 - "$1.sorted" | comm -23 - "$vias"); do
        n=$((n + 1))
        echo "    direct SYN from app port $p: $(tcpdump -nn -r "$SYN_PCAP" "src port $p" 2>/dev/null | head -3 | tr '\n' ';')" >&2
    done
    echo "$n"
}

# go_syns_not_ktproxys: SYNs to nginx (port 80, only the Go client's
# requests go there) whose source port no ktproxy log names as via=.
go_syns_not_ktproxys() {
    local vias="$KTP_TMP/vias80"
    grep -hoE 'via=[^ ]*:[0-9]+ ' "$KTP_TMP"/ktproxy.*.log 2>/dev/null | sed -E 's/.*:([0-9]+) $/\1/' | sort -u > "$vias"
    tcpdump -nn -r "$SYN_PCAP" 'dst port 80' 2>/dev/null | sed -nE 's/^.* IP6? ([0-9a-f:.]+)\.([0-9]+) > .*/\2/p' |
        sort -u | comm -23 - "$vias" | wc -l
}

fd_count() { ls "/proc/$KTP_PID/fd" | wc -l; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$KTP_PID/stat"; }
listen_port() { grep -o 'listening on 127.0.0.1:[0-9]*' "$KTP_LOG" | head -1 | cut -d: -f2; }
echo_once() { in_app timeout 3 python3 -c "
import socket; s = socket.create_connection(('$1', $2), timeout=2); s.sendall(b'e'); assert s.recv(1) == b'e'" 2>/dev/null; }

# --- tests -------------------------------------------------------------------

test_restart_window_fail_closed_no_direct_syn() {
    # Issue's figures: 20 restarts with a probe connecting every 1 ms.
    # Restarts alternate SIGTERM and kill -9 (a crash leaves the pins).
    trap kill_left_instances EXIT
    local restarts i t0 t1 ms worst=0 out
    restarts=20
    start_ktproxy --fail-closed || fail "ktproxy did not start"
    syn_capture_start
    app_bg "$KTP_TMP/probe.out" python3 "$TOOLS" probe "$KTP_SRV4" 9000 --duration 120 --interval 0.001 \
        --ports "$KTP_TMP/probe.ports"
    local probe=$BG
    sleep 0.5
    for i in $(seq "$restarts"); do
        if [ $((i % 2)) = 0 ]; then stop_ktproxy KILL || true; else stop_ktproxy || true; fi
        sleep 0.2
        t0=$(date +%s%N)
        start_ktproxy --fail-closed || fail "restart $i: ktproxy did not start"
        # The issue states this bound as the behaviour: relaying resumes within
        # 2 s of each start. Measured from launching the process (hooks loaded
        # and taken over included); polled every 20 ms at most 5 s.
        for _ in $(seq 250); do echo_once "$KTP_SRV4" 9000 && break; sleep 0.02; done
        t1=$(date +%s%N)
        ms=$(( (t1 - t0) / 1000000 ))
        [ "$ms" -gt "$worst" ] && worst=$ms
        sleep 0.3
    done
    kill -TERM "$probe"; wait "$probe"
    stop_ktproxy || true
    syn_capture_stop
    out=$(cat "$KTP_TMP/probe.out")
    echo "    probe: $out; slowest resume ${worst} ms" >&2
    expect_match "$out" 'ok=[1-9]' "probe"
    expect_eq "$(direct_syns "$KTP_TMP/probe.ports")" 0 "direct SYNs during $restarts restarts"
    [ "$worst" -le 2000 ] || fail "relaying resumed ${worst} ms after a start (bound 2000 ms)"
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

test_reload_keeps_flows_none_interrupted() {
    # Issue's figures as they are: 100 echo connections sending every 10 ms,
    # 10 SIGHUPs (the config changes every time, so each reload swaps rules).
    trap kill_left_instances EXIT
    local cfg="$KTP_TMP/reload.toml" out i
    echo 'rule = ["port=9999 block"]' > "$cfg"
    start_ktproxy --config "$cfg" || fail "ktproxy did not start"
    rm -f "$KTP_TMP/flows.ready"
    app_bg "$KTP_TMP/flows.out" python3 "$TOOLS" flows "$KTP_SRV4" 9000 --conns 100 --interval 0.01 --duration 5 \
        --ready "$KTP_TMP/flows.ready"
    local flows=$BG
    for _ in $(seq 100); do [ -e "$KTP_TMP/flows.ready" ] && break; sleep 0.05; done
    [ -e "$KTP_TMP/flows.ready" ] || fail "the flows did not connect"
    for i in $(seq 10); do
        echo "rule = [\"port=$((9900 + i)) block\"]" > "$cfg"
        kill -HUP "$KTP_PID"
        sleep 0.35
    done
    wait "$flows" || fail "flows client failed"
    out=$(cat "$KTP_TMP/flows.out")
    expect_eq "$(grep -c 'reloaded\|reload' "$KTP_LOG" | awk '{ print ($1 >= 10) }')" 1 "reload lines (10 SIGHUPs)"
    expect_match "$out" 'interrupted=0$' "flows"
    local sent echoed
    sent=$(printf '%s' "$out" | sed -nE 's/.*sent=([0-9]+).*/\1/p')
    echoed=$(printf '%s' "$out" | sed -nE 's/.*echoed=([0-9]+).*/\1/p')
    [ "$sent" -gt 100000 ] || fail "only $sent bytes sent: $out"
    expect_eq "$echoed" "$sent" "bytes echoed vs sent"
    stop_ktproxy || fail "ktproxy exit status $?"
}

# leak_case MODE: AF_INET, AF_INET6 and v4-mapped connects, 50 each.
leak_case() {
    local dst
    for dst in "$KTP_SRV4" "$KTP_SRV6" "::ffff:$KTP_SRV4"; do
        in_app python3 "$TOOLS" probe "$dst" 9000 --duration 0.3 --interval 0 \
            --ports "$KTP_TMP/leak.ports.tmp" > "$KTP_TMP/leak.out"
        cat "$KTP_TMP/leak.ports.tmp" >> "$KTP_TMP/leak.ports"
        echo "    $1 $dst: $(cat "$KTP_TMP/leak.out") (until $(date +%T.%N))" >&2
        case "$1" in
            dead) expect_match "$(cat "$KTP_TMP/leak.out")" '^ok=0 ' "$1 $dst" ;;
            *) expect_match "$(cat "$KTP_TMP/leak.out")" '^ok=[1-9][0-9]* refused=0 other=0 ' "$1 $dst" ;;
        esac
    done
    # The Go client, one request per family; it reports the peer the
    # getpeername hook shows (the original address).
    local url out
    for url in "http://$KTP_SRV4/" "http://[$KTP_SRV6]/" "http://[::ffff:$KTP_SRV4]/"; do
        out=$(in_app "$KTP_TMP/goclient" "$url" 2>&1 || true)
        echo "    $1 Go client $url: $out" >&2
        case "$1" in
            dead) expect_match "$out" 'refused' "$1: Go client $url" ;;
            *) expect_match "$out" '^200 [0-9]+ ' "$1: Go client $url" ;;
        esac
    done
}

test_leaks_by_family_v4_v6_v4mapped_no_direct_syn() {
    trap kill_left_instances EXIT
    : > "$KTP_TMP/leak.ports"
    syn_capture_start
    start_ktproxy || fail "ktproxy did not start"
    leak_case fail-open
    stop_ktproxy || true
    start_ktproxy --fail-closed || fail "ktproxy --fail-closed did not start"
    leak_case fail-closed
    # go_syns_not_ktproxys knows ktproxy's upstream ports from its conn
    # lines, logged when a connection ends: a kill -9 before the last Go
    # client's line is written would count that SYN as direct (seen once).
    local _
    for _ in $(seq 100); do
        [ "$(grep -c 'comm=goclient' "$KTP_LOG")" -ge 3 ] && break
        sleep 0.05
    done
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$(listen_port)" || true
    leak_case dead
    syn_capture_stop
    expect_eq "$(direct_syns "$KTP_TMP/leak.ports")" 0 "direct SYNs (v4, v6, v4-mapped; fail-open, fail-closed, killed)"
    expect_eq "$(go_syns_not_ktproxys)" 0 "direct SYNs of the Go client"
    # The count's control, in a capture of its own (its port may be one the
    # app used before): a connect from outside the cgroup goes direct and
    # must be counted as such, exactly once.
    syn_capture_start
    in_cli python3 "$TOOLS" probe "$KTP_SRV4" 9000 --duration 5 --max 1 --ports "$KTP_TMP/control.ports" >/dev/null
    syn_capture_stop
    expect_eq "$(direct_syns "$KTP_TMP/control.ports" 2>/dev/null)" 1 "direct SYNs counted of one connect from outside the cgroup"
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

status_json() { "$KTPROXY" status --control "/run/ktproxy/ktp-test-${KTP_ID}_app.sock" --json; }
# Descriptors of connections: open fds less the pooled empty pipes (two each),
# and the sockets in io_uring's fixed-file tables.
conn_fds() { echo $(( $(fd_count) - 2 * $(status_json | jq .pipes_pooled) )); }
# fd_kinds: ktproxy's fds by kind (socket, pipe, anon_inode:...), counted.
fd_kinds() { for f in /proc/"$KTP_PID"/fd/*; do readlink "$f" | sed 's/:\[.*//'; done | sort | uniq -c; }
fixed_count() { status_json | jq .fixed_files_in_use; }

test_churn_leaves_no_map_entries_and_fds_at_baseline() {
    # Issue: 100,000 connections; scaled: 10,000, a fifth of each kind (clean
    # close, client reset, server reset, refused, never accepted), plus 5 x 20
    # clients kill -9ed mid-stream. Then 5 s idle. The never-accepted ones
    # are closed by the app with a FIN: the ones the server's queue took
    # are released by the half-closed check (see half_closed_case).
    trap kill_left_instances EXIT
    local n out i base_fds base_fixed
    n=$(full 100000 10000)
    start_ktproxy --connect-timeout 1 || fail "ktproxy did not start"
    sleep 0.5
    base_fds=$(conn_fds) base_fixed=$(fixed_count)
    fd_kinds > "$KTP_TMP/fds.before"
    out=$(in_app python3 "$TOOLS" churn "$KTP_SRV4" --echo 9000 --rst 9001 --stuck 9002 --refused 9003 \
        --conns "$n" --concurrency 100 --timeout 150 --stuck-close fin) || fail "churn client: $out"
    echo "    churn: $out" >&2
    expect_match "$out" "clean=$((n / 5)) " "clean connections that echoed"
    for i in 1 2 3 4 5; do
        app_bg "$KTP_TMP/streamers.out" python3 "$TOOLS" streamers "$KTP_SRV4" 9000 --conns 20 --timeout 20
        wait_log "$KTP_TMP/streamers.out" streaming 10 || fail "streamers did not connect"
        sleep 0.2
        kill -9 "$BG"; wait "$BG" 2>/dev/null
    done
    # Issue's own figure: after 5 s idle.
    sleep 5
    expect_eq "$(ktp_counter live_tuples)" 0 "ktp_handoff entries (live_tuples) after 5 s idle"
    fd_kinds > "$KTP_TMP/fds.after"
    [ "$(conn_fds)" = "$base_fds" ] || { diff "$KTP_TMP/fds.before" "$KTP_TMP/fds.after" >&2; status_json | jq -c '.connections' >&2; in_cli ss -tanp >&2; in_srv ss -tan >&2; }
    expect_eq "$(conn_fds)" "$base_fds" "ktproxy's fds (less pooled pipes) against the baseline"
    expect_eq "$(fixed_count)" "$base_fixed" "sockets in fixed-file tables against the baseline"
    stop_ktproxy || fail "ktproxy exit status $?"
}

# half_closed_case PORT ADDR ARGS...: an app connects to a server on
# ADDR:PORT whose listener never accepts (its queue takes the connection),
# then closes its socket normally; ktproxy (started with ARGS) must be back
# at its baseline fds 5 s later. It passes the app's FIN on and would wait
# for the server's, which never comes, while the app's own socket is gone:
# the relay is cut once the kernel's socket table says no process holds the
# app's end (end=dead), as HAProxy's client-fin timeout would, without a
# timeout that could cut an app that is still waiting.
half_closed_case() {
    local port="$1" addr="$2"; shift 2
    ktp_bg in_srv python3 -c "
import socket, time
s = socket.socket(socket.AF_INET6 if ':' in '$addr' else socket.AF_INET); s.bind(('$addr', $port)); s.listen(0); time.sleep(120)"
    ktp_wait_port "$KTP_SRV" "$port"
    start_ktproxy "$@" || fail "ktproxy did not start"
    sleep 0.5
    local base_fds
    base_fds=$(conn_fds)
    in_app python3 -c "
import socket, time
s = socket.create_connection(('$addr', $port), timeout=3); time.sleep(0.2); s.close()" || fail "client"
    sleep 5
    [ "$(conn_fds)" = "$base_fds" ] || status_json | jq -c '.connections' >&2
    expect_eq "$(conn_fds)" "$base_fds" "ktproxy's fds 5 s after the app closed"
    expect_file_match "$KTP_LOG" "orig=[^ ]*:$port .* end=dead .*app closed its socket" "the relay's log line"
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_half_closed_relay_to_a_server_that_never_reads_is_released() {
    trap kill_left_instances EXIT
    half_closed_case 9004 "$KTP_SRV4"
}

test_half_closed_relay_to_a_server_that_never_reads_is_released_v6() {
    trap kill_left_instances EXIT
    half_closed_case 9005 "$KTP_SRV6"
}

test_half_closed_app_still_waiting_gets_a_late_answer() {
    # The other side of the rule above: an app that only shut down its
    # sending side (a request, then EOF, then the answer) keeps its relay
    # through a quiet spell longer than the check's (1 s) and gets every
    # byte of the answer.
    trap kill_left_instances EXIT
    ktp_bg in_srv python3 -c "
import socket, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('$KTP_SRV4', 9006)); l.listen(4)
c, _ = l.accept()
got = b''
while True:
    b = c.recv(65536)
    if not b: break
    got += b
time.sleep(3.5)
c.sendall(got[::-1] * 1000); c.close(); time.sleep(5)"
    ktp_wait_port "$KTP_SRV" 9006
    start_ktproxy || fail "ktproxy did not start"
    local out
    out=$(in_app python3 -c "
import socket
s = socket.create_connection(('$KTP_SRV4', 9006), timeout=10)
s.sendall(b'question'); s.shutdown(socket.SHUT_WR)
got = b''
while True:
    b = s.recv(65536)
    if not b: break
    got += b
print(len(got), got[:8].decode())") || fail "client: $out"
    expect_eq "$out" "8000 noitseuq" "answer after 3.5 s of quiet on a half-closed relay"
    expect_file_match "$KTP_LOG" "orig=[^ ]*:9006 .* end=eof" "the relay's log line"
    stop_ktproxy || fail "ktproxy exit status $?"
}

# identity_case LABEL [MODE]: 2,000 connects at once to 50 identity servers,
# with map_full counted around it. MODE stop: ktproxy stopped for the
# connects' first 2 s. MODE acks: the handshakes' last ACK to ktproxy's
# listener dropped for 2 s, so that every connection waits in ktp_handoff
# (established on the app's side, not yet on the listener's) and the map
# overflows; the clients send a byte, which completes the handshake once
# the ACKs pass again.
identity_case() {
    local before after out reset bg="" send="" port
    before=$(ktp_counter map_full)
    port=$(listen_port)
    case "${2:-}" in
        stop)
            kill -STOP "$KTP_PID"
            ( sleep 2; kill -CONT "$KTP_PID" ) &
            bg=$! ;;
        acks)
            send=--send
            in_cli iptables -I INPUT -i lo -p tcp --dport "$port" --tcp-flags SYN,ACK,RST,FIN ACK -j DROP
            ( sleep 2; in_cli iptables -D INPUT -i lo -p tcp --dport "$port" --tcp-flags SYN,ACK,RST,FIN ACK -j DROP ) &
            bg=$! ;;
    esac
    out=$(in_app python3 "$TOOLS" identity "$KTP_SRV4" 10000-10049 --conns 2000 --seed "$RANDOM" --timeout 40 $send)
    [ -z "$bg" ] || wait "$bg"
    after=$(ktp_counter map_full)
    echo "    $1: $out map_full=$((after - before))" >&2
    expect_match "$out" ' wrong=0 ' "$1: connections that reached another server"
    expect_match "$out" ' unanswered=0$' "$1"
    reset=$(printf '%s' "$out" | sed -nE 's/.* reset=([0-9]+) .*/\1/p')
    expect_eq "$reset" "$((after - before))" "$1: connections without an identity against map_full"
    MAP_FULL_SEEN=$((after - before))
}

test_map_full_never_reaches_the_wrong_server_and_counts_overflow() {
    # Issue's figures: --max-conns 1024 (the smallest), 2,000 concurrent
    # connects to 50 servers. The overflow (hand-off map full) is reset, one
    # map_full each (fail-open or not: the connect was already redirected).
    # Three ways: ktproxy accepting, ktproxy stopped while the connects pile
    # up, and the listener's handshake ACKs held back (the map overflows).
    trap kill_left_instances EXIT
    start_ktproxy --max-conns 1024 || fail "ktproxy did not start"
    identity_case running
    identity_case stopped stop
    identity_case acks-held acks
    [ "$MAP_FULL_SEEN" -gt 0 ] || fail "the hand-off map never overflowed with the ACKs held back"
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_fd_limit_no_spin_few_log_lines_recovers() {
    # Issue: RLIMIT_NOFILE 256 and 400 connections: CPU under 5% at the limit,
    # at most 10 log lines/s, recovered within 1 s once clients close. CPU and
    # recovery are the behaviour, so bounded here, with room for a loaded
    # 2-core CI machine: CPU under 20% (a spin shows as ~100%), recovery
    # within 3 s. Log lines are counted exactly as the issue states.
    trap kill_left_instances EXIT
    local hz t0 t1 l0 l1 cpu i ok=0
    hz=$(getconf CLK_TCK)
    KTP_LAUNCHER="prlimit --nofile=256:256 nsenter --net=/run/netns/$KTP_CLI" start_ktproxy --workers 1 ||
        fail "ktproxy did not start"
    app_bg "$KTP_TMP/hold.out" python3 "$TOOLS" hold "$KTP_SRV4" 9000 --conns 400 --timeout 60
    local holder=$BG
    wait_log "$KTP_TMP/hold.out" 'opened 400' 10 || fail "the client did not open 400 connections"
    sleep 2
    l0=$(wc -l < "$KTP_LOG") t0=$(cpu_ticks)
    sleep 3
    l1=$(wc -l < "$KTP_LOG") t1=$(cpu_ticks)
    cpu=$(( (t1 - t0) * 100 / (hz * 3) ))
    local held
    held=$(status_json | jq '.connections | length')
    # At the limit: fewer than the 400 connections are relayed.
    [ "$held" -lt 400 ] || fail "all 400 connections relayed: the fd limit was not reached"
    echo "    at the fd limit ($held of 400 relayed): ${cpu}% CPU, $((l1 - l0)) log lines in 3 s; fds $(fd_count)" >&2
    [ "$cpu" -lt 20 ] || fail "ktproxy used ${cpu}% CPU at the fd limit"
    [ $((l1 - l0)) -le 30 ] || fail "ktproxy logged $((l1 - l0)) lines in 3 s at the fd limit (at most 10/s)"
    kill -TERM "$holder"; wait "$holder" 2>/dev/null
    for i in $(seq 30); do
        echo_once "$KTP_SRV4" 9000 && { ok=1; break; }
        sleep 0.1
    done
    [ "$ok" = 1 ] || fail "no connection relayed within 3 s of the clients closing"
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_loop_guard_upstream_and_own_listener_no_recursion() {
    # An upstream inside the intercepted range (everything is), and apps in
    # the cgroup connecting to the upstream and to ktproxy's own listener:
    # every accepted connection is one the app made (20 + 20 + 20).
    trap kill_left_instances EXIT
    ktp_bg in_srv sh -c "exec microsocks -i 0.0.0.0 -p 1080 >/dev/null 2>&1"
    ktp_wait_port "$KTP_SRV" 1080
    start_ktproxy --upstream "up=socks5://$KTP_SRV4:1080" --default proxy=up || fail "ktproxy did not start"
    local port fds0 fds1 t0 t1 lines
    port=$(listen_port)
    sleep 0.3
    fds0=$(conn_fds)
    in_app python3 -c "
import socket, time
for dst in [('$KTP_SRV4', 9000), ('$KTP_SRV4', 1080), ('127.0.0.1', $port)]:
    for _ in range(20):
        try:
            s = socket.create_connection(dst, timeout=3)
            s.sendall(b'\x05\x01\x00' if dst[1] == 1080 else b'x')
            s.settimeout(1)
            try: s.recv(10)
            except OSError: pass
            s.close()
        except OSError:
            pass
" || fail "client"
    sleep 1
    lines=$(grep -c 'conn client=' "$KTP_LOG")
    expect_eq "$lines" 60 "connections ktproxy accepted (the app made 60)"
    t0=$(cpu_ticks); sleep 2; t1=$(cpu_ticks)
    fds1=$(conn_fds)
    expect_eq "$fds1" "$fds0" "ktproxy's fds before and after"
    # Flat: an idle ktproxy uses next to nothing; a loop would keep a core busy.
    [ $((t1 - t0)) -lt $(( $(getconf CLK_TCK) / 5 )) ] || fail "ktproxy used $((t1 - t0)) ticks in 2 s idle"
    stop_ktproxy || fail "ktproxy exit status $?"
}

# An app of the cgroup that holds CAP_NET_RAW (root here; a binary with
# cap_net_raw, a container's root) and puts ktproxy's --mark on its sockets:
# the mark makes a socket ktproxy's only when ktproxy's own threads use it,
# so this one goes through the rules like any other. TCP v4 and v6 to an
# echo server (relayed: no direct SYN, a conn line each), TCP and UDP to a
# blocked destination (EPERM).
test_app_wearing_ktproxys_mark_is_still_relayed_and_blocked() {
    trap kill_left_instances EXIT
    local out foreign0 foreign1
    start_ktproxy --rule "cidr=$KTP_SRV4 port=9003 block" || fail "ktproxy did not start"
    foreign0=$(ktp_counter foreign_mark)
    syn_capture_start
    out=$(in_app timeout 20 python3 - "$KTP_SRV4" "$KTP_SRV6" "$KTP_TMP/mark.ports" <<'PY'
import errno, socket, sys
v4, v6, ports = sys.argv[1], sys.argv[2], sys.argv[3]
MARK = 0x6b74  # ktproxy's default --mark

def marked(fam, kind):
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
    s.settimeout(5)
    return s

res = []
with open(ports, "w") as pf:
    for fam, host in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
        s = marked(fam, socket.SOCK_STREAM)
        s.connect((host, 9000))
        pf.write("%d\n" % s.getsockname()[1])
        s.sendall(b"m")
        res.append("echo" if s.recv(1) == b"m" else "noecho")
        s.close()
s = marked(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect((v4, 9003))
    res.append("tcp-blocked:connected")
except OSError as e:
    res.append("tcp-blocked:" + errno.errorcode.get(e.errno, str(e.errno)))
u = marked(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", (v4, 9003))
    res.append("udp-blocked:sent")
except OSError as e:
    res.append("udp-blocked:" + errno.errorcode.get(e.errno, str(e.errno)))
print(" ".join(res))
PY
    ) || { syn_capture_stop; fail "the marked client failed: $out"; }
    syn_capture_stop
    expect_eq "$out" "echo echo tcp-blocked:EPERM udp-blocked:EPERM" "marked sockets: echo v4, v6, TCP and UDP to a block rule"
    expect_eq "$(direct_syns "$KTP_TMP/mark.ports")" 0 "direct SYNs from the marked sockets"
    expect_eq "$(grep -cE "conn client=.* orig=\[?($KTP_SRV4|$KTP_SRV6)\]?:9000 .*comm=python3" "$KTP_LOG")" 2 \
        "conn lines of the marked connects"
    foreign1=$(ktp_counter foreign_mark)
    [ "$((foreign1 - foreign0))" -ge 4 ] || fail "foreign_mark counted $((foreign1 - foreign0)) of the 4 marked connects/sends"
    stop_ktproxy || fail "ktproxy exit status $?"
}

# ktproxy inside the cgroup it intercepts (--cgroup a parent of its own):
# its own sockets carry the mark and come from its cgroup, so they are left
# alone (skipped_mark), and the app's are relayed once each, TCP and UDP
# (the UDP relay's upstream datagrams). Also after a kill -9 of a
# --fail-closed instance and its restart, which takes over the pinned hooks
# with its own programs.
test_ktproxy_inside_its_intercepted_cgroup_relays_without_recursion() {
    trap 'kill_left_instances; in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG_PARENT" >/dev/null 2>&1' EXIT
    local round lines mark0 mark1 udp0 out
    ktp_bg in_srv python3 "$(dirname "$TOOLS")/udp_tools.py" echo "$KTP_SRV4" 7000
    remember_bg "${KTP_PIDS[-1]}"
    for round in first restarted; do
        KTP_PROXY_OWN_CG=1 KTP_CG_ARG="$KTP_CG_PARENT" start_ktproxy --fail-closed ||
            fail "$round: ktproxy in $KTP_CG_PROXY on $KTP_CG_PARENT did not start"
        mark0=$(ktp_counter skipped_mark)
        in_app python3 -c "
import socket
for _ in range(10):
    s = socket.create_connection(('$KTP_SRV4', 9000), timeout=3); s.sendall(b'e')
    assert s.recv(1) == b'e'; s.close()" || fail "$round: the app's echo failed"
        sleep 0.5
        lines=$(grep -c "conn client=.* orig=$KTP_SRV4:9000 " "$KTP_LOG")
        expect_eq "$lines" 10 "$round: connections ktproxy relayed (the app made 10)"
        expect_eq "$(grep -c 'conn client=' "$KTP_LOG")" 10 "$round: connections ktproxy accepted"
        udp0=$(ktp_counter udp_redirected)
        out=$(in_app timeout 10 python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b'u', ('$KTP_SRV4', 7000)); print(s.recvfrom(200)[0].decode().split('|')[0])") ||
            fail "$round: the app's UDP echo failed: $out"
        expect_eq "$out" u "$round: UDP echo through the relay"
        expect_eq "$(( $(ktp_counter udp_redirected) - udp0 ))" 1 "$round: udp_redirected (the app's one datagram)"
        mark1=$(ktp_counter skipped_mark)
        [ "$((mark1 - mark0))" -ge 11 ] || fail "$round: skipped_mark counted $((mark1 - mark0)) of ktproxy's 10 own connects and 1 datagram"
        expect_eq "$(ktp_counter foreign_mark)" 0 "$round: foreign_mark"
        [ "$round" = first ] && { stop_ktproxy KILL || true; }
    done
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_fail_closed_cgroup_match_keeps_a_cgroup_born_before_its_scan_behind_ktproxy() {
    # --cgroup-match classifies the tree's cgroups at each scan; a cgroup
    # born since the last one (a container starting) is unknown to the
    # hooks. With --fail-closed its connects must neither go direct nor be
    # handed to the relay before the scan says (a relay taken over could
    # stop asking for scans): refused. The scans run in the privileged
    # helper: stopped here, the new cgroup stays unknown for as long as the
    # test needs (less than the relay's 15 s patience with the helper).
    trap 'kill -CONT "$CGM_HELPER" 2>/dev/null || true; kill_left_instances; rmdir "$KTP_CG/m0" "$KTP_CG/m9" "$KTP_CG/g9" 2>/dev/null || true' EXIT
    CGM_HELPER=""
    local out n before
    mkdir -p "$KTP_CG/m0"
    start_ktproxy --fail-closed --log-level info --cgroup-match "ktp-test-$KTP_ID/app/m*" ||
        fail "ktproxy --fail-closed --cgroup-match did not start"
    wait_log "$KTP_LOG" "cgroup-match: intercepting .*/app/m0" || fail "m0 not followed"
    CGM_HELPER=$(pgrep -P "$KTP_PID" -x ktproxy-priv | head -1)
    [ -n "$CGM_HELPER" ] || fail "no privileged helper under $KTP_PID"
    before=$(ktp_counter refused_unscanned)
    n=$(grep -c "^$KTP_CLI4 " "$NGINX_LOG" || true)
    kill -STOP "$CGM_HELPER"
    mkdir "$KTP_CG/m9" "$KTP_CG/g9"
    # Namespace first, then the cgroup, as docker exec does.
    out=$(nsenter --net="/run/netns/$KTP_CLI" sh -c 'echo $$ > "$1/cgroup.procs" && exec curl -sS --max-time 5 -o /dev/null -w "%{http_code}" "$2"' \
        sh "$KTP_CG/m9" "http://$KTP_SRV4/" 2>&1) && { kill -CONT "$CGM_HELPER"; fail "a connect from the unscanned m9 got through: $out"; }
    kill -CONT "$CGM_HELPER"
    expect_match "$out" "Failed to connect" "curl from the unscanned m9"
    expect_eq "$(( $(ktp_counter refused_unscanned) - before ))" 1 "refused_unscanned"
    expect_eq "$(grep -c "^$KTP_CLI4 " "$NGINX_LOG" || true)" "$n" "requests at the server while m9 was unscanned"
    expect_no_file_match "$KTP_LOG" "orig=$KTP_SRV4:80 " "relayed connections while m9 was unscanned"
    # Once scanned: m9 (matching) is relayed, g9 (not) left alone.
    wait_log "$KTP_LOG" "cgroup-match: intercepting .*/app/m9" || fail "m9 not followed after the helper resumed"
    out=$(nsenter --net="/run/netns/$KTP_CLI" sh -c 'echo $$ > "$1/cgroup.procs" && exec curl -sS --max-time 5 -o /dev/null -w "%{http_code}" "$2"' \
        sh "$KTP_CG/m9" "http://$KTP_SRV4/") || fail "curl from the scanned m9: $out"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=curl" || fail "the scanned, matching m9 was not relayed"
    out=$(nsenter --net="/run/netns/$KTP_CLI" sh -c 'echo $$ > "$1/cgroup.procs" && exec curl -sS --max-time 5 -o /dev/null -w "%{http_code}" "$2"' \
        sh "$KTP_CG/g9" "http://$KTP_SRV4/") || fail "curl from g9: $out"
    expect_eq "$out" 200 "curl from the scanned, unmatched g9"
    sleep 0.3
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 " "$KTP_LOG")" 1 "relayed connections after g9's (not matching, scanned)"
    stop_ktproxy || true
    out=$(in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>&1) || fail "cleanup: $out"
}

test_so_original_dst_confined_to_ktproxys_accepted_sockets() {
    # A socket whose remote port is a live relayed connection's source port,
    # made inside and outside the cgroup, gets the kernel's own answer to
    # SO_ORIGINAL_DST (the same as with no ktproxy at all).
    trap kill_left_instances EXIT
    local base inside outside cport vport p
    base=$(in_cli python3 "$TOOLS" origdst 127.0.0.2 40999)
    start_ktproxy || fail "ktproxy did not start"
    app_bg "$KTP_TMP/live.out" python3 -c "
import socket, time
s = socket.create_connection(('$KTP_SRV4', 9000)); s.sendall(b'a'); s.recv(1)
print(s.getsockname()[1], flush=True); time.sleep(20)"
    local live=$BG
    wait_log "$KTP_TMP/live.out" '^[0-9]+$' 5 || fail "the live connection did not start"
    cport=$(cat "$KTP_TMP/live.out")
    # Both source ports of the live connection: the app's (to the listener)
    # and ktproxy's own towards the server.
    vport=$(in_cli ss -Htn "dst $KTP_SRV4:9000" | awk '{ n = split($4, a, ":"); print a[n] }' | head -1)
    [ -n "$vport" ] || fail "no relayed socket towards the server"
    for p in "$cport" "$vport"; do
        inside=$(in_app python3 "$TOOLS" origdst 127.0.0.2 "$p")
        outside=$(in_cli python3 "$TOOLS" origdst 127.0.0.2 "$p")
        echo "    remote port $p: without ktproxy: $base; inside: $inside; outside: $outside" >&2
        expect_eq "$inside" "$base" "SO_ORIGINAL_DST in the cgroup, remote port $p"
        expect_eq "$outside" "$base" "SO_ORIGINAL_DST outside the cgroup, remote port $p"
    done
    kill "$live"
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_stranger_on_the_listener_is_closed_without_upstream_dial() {
    # A process of another user connecting straight to ktproxy's listener.
    # The issue states "closed within 10 ms" as the behaviour; bound here at
    # 200 ms for a loaded CI machine (it is a check for not waiting on a
    # dial, a sniff or a timeout, which take seconds).
    trap kill_left_instances EXIT
    local port missed0 missed1 out ms
    start_ktproxy || fail "ktproxy did not start"
    port=$(listen_port)
    missed0=$(ktp_counter orig_dst_missed)
    syn_capture_start
    out=$(in_cli setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 "$TOOLS" stranger 127.0.0.1 "$port")
    syn_capture_stop
    missed1=$(ktp_counter orig_dst_missed)
    echo "    stranger: $out" >&2
    expect_match "$out" '^end=(eof|reset) ' "how the stranger's connection ended"
    ms=$(printf '%s' "$out" | sed -nE 's/.* ms=([0-9]+).*/\1/p')
    [ "$ms" -le 200 ] || fail "the stranger's connection stayed open ${ms} ms"
    expect_eq "$(wc -l < "$SYN_PCAP.ports")" 0 "SYNs to the server host (upstream dials)"
    expect_eq "$((missed1 - missed0))" 1 "orig_dst_missed"
    expect_file_match "$KTP_LOG" "no original destination"
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_getsockopt_8k_and_64k_from_apps_unchanged() {
    # getsockopt with 8 KiB and 64 KiB buffers (past a page: what the
    # cgroup/getsockopt hook sees is cut at one) gives the same results with
    # ktproxy as without, v4 and v6.
    trap kill_left_instances EXIT
    local dst
    for dst in "$KTP_SRV4" "$KTP_SRV6"; do
        in_app python3 "$TOOLS" sockopts "$dst" 9000 > "$KTP_TMP/sockopts.base.$dst"
    done
    start_ktproxy || fail "ktproxy did not start"
    for dst in "$KTP_SRV4" "$KTP_SRV6"; do
        in_app python3 "$TOOLS" sockopts "$dst" 9000 > "$KTP_TMP/sockopts.ktp.$dst"
        diff "$KTP_TMP/sockopts.base.$dst" "$KTP_TMP/sockopts.ktp.$dst" >&2 ||
            fail "getsockopt results differ with ktproxy ($dst)"
    done
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_listener_port_found_when_ipv6_ports_are_crowded() {
    # ktproxy binds 127.0.0.1:0, then [::1] on the same port. The kernel
    # gives bind() odd ports first; when every odd port it could give is
    # taken on [::1] (TIME_WAITs of the apps' IPv6 connections to ktproxy,
    # after heavy traffic: this suite's own probes got there), each retry
    # picked another such port and ktproxy failed to start ("port in use"),
    # a --fail-closed restart included. Here: a port range of 64 with every
    # odd port bound on [::1].
    trap kill_left_instances EXIT
    local range
    range=$(in_cli sysctl -n net.ipv4.ip_local_port_range)
    KTP_EXTRA_CLEANUP+=("in_cli sysctl -qw net.ipv4.ip_local_port_range='$range'")
    in_cli sysctl -qw net.ipv4.ip_local_port_range="40000 40063"
    ktp_bg in_cli python3 -c "
import socket, time
held = []
for p in range(40001, 40064, 2):
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(('::1', p)); held.append(s)
print('held', flush=True); time.sleep(30)" > "$KTP_TMP/crowd.out"
    local crowd="${KTP_PIDS[-1]}"
    wait_log "$KTP_TMP/crowd.out" held 5 || fail "the [::1] ports were not taken"
    local rc=0
    start_ktproxy --workers 2 || rc=1
    in_cli sysctl -qw net.ipv4.ip_local_port_range="$range"
    [ "$rc" = 0 ] || fail "ktproxy did not start with the odd ports taken on [::1]"
    echo_once "$KTP_SRV6" 9000 || fail "no IPv6 connection relayed"
    stop_ktproxy || fail "ktproxy exit status $?"
    # Its ports must not stay taken for the next tests (out-of-ports: CI).
    kill "$crowd" 2>/dev/null
}

test_egress_out_of_ports_resets_the_app_and_says_why() {
    # At a high connection rate the host's ephemeral ports run dry
    # (TIME_WAIT) on ktproxy's connect to the destination, where a direct
    # app would get EADDRNOTAVAIL from connect(). Here the client
    # namespace has one ephemeral port and the apps bind their own ports:
    # the first relayed connection holds the port, the second must be
    # reset (not hang) and the log line must name the fix. The apps' ports
    # are below the ephemeral range, with SO_REUSEADDR: an earlier test's
    # connection left in TIME_WAIT on one made bind() fail (EADDRINUSE).
    local range
    range=$(in_cli sysctl -n net.ipv4.ip_local_port_range)
    KTP_EXTRA_CLEANUP+=("in_cli sysctl -qw net.ipv4.ip_local_port_range='$range'")
    start_ktproxy || fail "ktproxy did not start"
    # The one port must be free of every socket: in TIME_WAIT from an
    # earlier test's relayed connection, or merely bound (connect never
    # picks a port something bound explicitly, of either family; ss does
    # not list bound-only sockets). A dual-stack bind of it succeeds only
    # then. (CI: both made the first connection fail too.)
    local port
    port=$(in_cli python3 -c '
import socket
for p in range(45000, 46000):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        s.bind(("::", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break')
    [ -n "$port" ] || fail "no free port in 45000-45999"
    in_cli sysctl -qw net.ipv4.ip_local_port_range="$port $port"
    local out
    out=$(in_app timeout 10 python3 -c "
import socket
a = socket.socket(); a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); a.bind(('0.0.0.0', 20001)); a.settimeout(3)
a.connect(('$KTP_SRV4', 9000)); a.sendall(b'a'); assert a.recv(1) == b'a'
b = socket.socket(); b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); b.bind(('0.0.0.0', 20002)); b.settimeout(3)
try:
    b.connect(('$KTP_SRV4', 9000)); b.sendall(b'b'); got = b.recv(1)
    print('second: ' + ('eof' if got == b'' else 'data'))
except ConnectionResetError:
    print('second: reset')
except socket.timeout:
    print('second: hung')
" 2>&1)
    in_cli sysctl -qw net.ipv4.ip_local_port_range="$range"
    expect_eq "$out" "second: reset" "the second app connection"
    expect_file_match "$KTP_LOG" "end=error .*no free local port: widen net.ipv4.ip_local_port_range" "the log line's hint"
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_soak_new_connections_fail_only_while_the_server_is_down() {
    # scripts/soak's CI version: 60 s, 1,000 held, 100 new/s, the server
    # killed and restarted every 20 s (its own namespaces and ktproxy).
    # KTP_HOSTILE_FULL=1: --full, the issue's 10,000 held for 10 minutes
    # with 1,000 new/s and a restart a minute (not for CI).
    local out rc=0
    out=$(KTP_ID="" "$KTP_ROOT/scripts/soak" $(full --full "") 2>&1) || rc=$?
    printf '%s\n' "$out" | grep -E '^(soak:|    )' | sed 's/^/    /' >&2
    expect_eq "$rc" 0 "scripts/soak exit status"
}

run_all_tests "$0"
finish
