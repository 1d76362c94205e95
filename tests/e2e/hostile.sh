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
PINS=/sys/fs/bpf/ktproxy

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
    in_cli "$KTPROXY" cleanup >/dev/null 2>&1
    return "$rc"
}
KTP_EXTRA_CLEANUP+=("kill_left_instances")
remember_bg() { echo "$1" >> "$KTP_TMP/bg.pids"; }
# app_bg OUT CMD...: CMD in the app cgroup, in the background, stdout to OUT;
# $BG is its pid (the command's own: sh and nsenter exec it), so that
# signals reach it.
app_bg() {
    local out="$1"; shift
    sh -c 'cg=$1 ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" "$@"' \
        sh "$KTP_CG" "$KTP_CLI" "$@" > "$out" &
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

fd_count() { ls "/proc/$KTP_PID/fd" | wc -l; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$KTP_PID/stat"; }
listen_port() { grep -o 'listening on 127.0.0.1:[0-9]*' "$KTP_LOG" | head -1 | cut -d: -f2; }
echo_once() { in_app timeout 3 python3 -c "
import socket; s = socket.create_connection(('$1', $2), timeout=2); s.sendall(b'e'); assert s.recv(1) == b'e'" 2>/dev/null; }

# --- tests -------------------------------------------------------------------

test_restart_window_fail_closed_no_direct_syn() {
    # Issue: 20 restarts with a probe connecting every 1 ms; scaled: 6.
    # Restarts alternate SIGTERM and kill -9 (a crash leaves the pins).
    trap kill_left_instances EXIT
    local restarts i t0 t1 ms worst=0 out
    restarts=$(full 20 6)
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
    in_cli "$KTPROXY" cleanup 2>/dev/null || fail "cleanup"
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
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$(listen_port)" || true
    leak_case dead
    syn_capture_stop
    expect_eq "$(direct_syns "$KTP_TMP/leak.ports")" 0 "direct SYNs (v4, v6, v4-mapped; fail-open, fail-closed, killed)"
    # The count's control, in a capture of its own (its port may be one the
    # app used before): a connect from outside the cgroup goes direct and
    # must be counted as such, exactly once.
    syn_capture_start
    in_cli python3 "$TOOLS" probe "$KTP_SRV4" 9000 --duration 5 --max 1 --ports "$KTP_TMP/control.ports" >/dev/null
    syn_capture_stop
    expect_eq "$(direct_syns "$KTP_TMP/control.ports" 2>/dev/null)" 1 "direct SYNs counted of one connect from outside the cgroup"
    in_cli "$KTPROXY" cleanup 2>/dev/null || fail "cleanup"
}

run_all_tests "$0"
finish
