#!/bin/bash
# End-to-end reliability of the relay: ten thousand connections held at once,
# a slow reader that must not make ktproxy buffer, and a server killed in the
# middle of a transfer.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

KTP_LOAD="${KTP_LOAD:-$KTP_BUILD/tools/ktp-load}"
[ -x "$KTP_LOAD" ] || ktp_die "$KTP_LOAD not built"

ktp_topo_up
start_nginx
ktp_bg in_srv "$KTP_LOAD" echo --listen "$KTP_SRV4:9100" --timeout 600
ktp_wait_port "$KTP_SRV" 9100
start_ktproxy || ktp_die "ktproxy did not start"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$KTP_PID/status"; }
fd_count() { ls "/proc/$KTP_PID/fd" | wc -l; }
# Relayed sockets live in io_uring's fixed-file tables, not in /proc/PID/fd.
status_json() { "$KTPROXY" status --control "/run/ktproxy/ktp-test-${KTP_ID}_app.sock" --json; }
fixed_count() { status_json | jq .fixed_files_in_use; }
# Descriptors of connections: all open fds less the empty pipes the splice
# relay keeps for reuse (two fds each).
conn_fds() { echo $(( $(fd_count) - 2 * $(status_json | jq .pipes_pooled) )); }
# wait_held FILE: until `ktp-load hold` writes its "held N" line there (at
# most 120s, or until the loader whose pid is $2 exits).
wait_held() {
    for _ in $(seq 1200); do
        grep -q '^held' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# How ktproxy's connections ended, counted, for failure messages.
conn_ends() { grep -o 'end=[a-z]*\( reason="[^"]*"\)\?' "$KTP_LOG" | sort | uniq -c | tr '\n' ';'; }

test_ten_thousand_concurrent_connections_held_then_each_echoed() {
    local out rss
    in_app timeout 180 "$KTP_LOAD" hold --to "$KTP_SRV4:9100" --conns 10000 --hold-seconds 2 --timeout 170 \
        > "$KTP_TMP/hold.out" 2>"$KTP_TMP/hold.err" &
    local loader=$!
    wait_held "$KTP_TMP/hold.out" "$loader"
    grep -q '^held 10000' "$KTP_TMP/hold.out" || fail "never held 10000 connections: $(cat "$KTP_TMP/hold.out" "$KTP_TMP/hold.err")"
    rss=$(rss_kib)
    wait "$loader" || fail "ktp-load hold failed: $(tail -2 "$KTP_TMP/hold.out") $(tail -2 "$KTP_TMP/hold.err");" \
        "how ktproxy's connections ended: $(conn_ends)"
    out=$(tail -1 "$KTP_TMP/hold.out")
    expect_match "$out" '(^| )ok=10000( |$)' "echo-verified connections"
    expect_match "$out" '(^| )failed=0( |$)' "failed connections"
    echo "    ktproxy RSS with 10000 connections held: $((rss / 1024)) MiB" >&2
    # A ceiling, not a benchmark: relay buffers are shared, so idle
    # connections must not cost buffer memory each (15 MiB measured on the
    # real build: 8 MiB before the first connection, 16 with 10,000).
    # Under ASan the process holds 154 MiB before the first connection
    # (its allocator and the shadow of the pools ktproxy sets up at start)
    # and 165 MiB with 10,000: the same ~10 MiB for the connections, so a
    # looser ceiling there only for the start-up part.
    local ceiling=64
    ldd "$KTPROXY" 2>/dev/null | grep -q libasan && ceiling=256
    [ "$rss" -lt $((ceiling * 1024)) ] || fail "RSS $((rss / 1024)) MiB with 10000 idle connections (ceiling $ceiling MiB)"
}

test_slow_reader_keeps_memory_bounded_and_data_intact() {
    # The server pushes 1 GiB as fast as it can; the client reads at 100 MB/s.
    # Backpressure must stop ktproxy reading from the server, not buffer.
    ktp_bg in_srv bash -c "head -c 1073741824 /dev/urandom | tee >(sha256sum > '$KTP_TMP/srv.sha') \
        | socat -u -b 262144 - TCP-LISTEN:9200,reuseaddr"
    ktp_wait_port "$KTP_SRV" 9200
    # What the earlier tests left resident (the 10,000 connections' pool, and
    # under ASan its quarantine) is the baseline; the slow read must not add
    # to it beyond the relay's bounded buffers.
    local base
    base=$(rss_kib)
    in_app bash -c "timeout 120 socat -u -b 65536 TCP:$KTP_SRV4:9200 - | pv -q -L 100m | sha256sum > '$KTP_TMP/cli.sha'" &
    local reader=$! max=0 r
    while kill -0 "$reader" 2>/dev/null; do
        r=$(rss_kib)
        [ "${r:-0}" -gt "$max" ] && max=$r
        sleep 0.25
    done
    wait "$reader" || true
    local i
    for i in $(seq 50); do [ -s "$KTP_TMP/srv.sha" ] && break; sleep 0.1; done
    expect_eq "$(cut -d' ' -f1 "$KTP_TMP/cli.sha")" "$(cut -d' ' -f1 "$KTP_TMP/srv.sha")" "sha256 of 1 GiB read slowly"
    echo "    ktproxy peak RSS during the slow read: $((max / 1024)) MiB (from $((base / 1024)) MiB)" >&2
    [ $((max - base)) -lt $((32 * 1024)) ] ||
        fail "RSS grew by $(((max - base) / 1024)) MiB while a slow reader lagged (ceiling 32 MiB)"
    # The absolute ceiling holds for the real build; ASan's allocator keeps
    # freed memory in quarantine, so only the growth is asked of it.
    if ! ldd "$KTPROXY" 2>/dev/null | grep -q libasan; then
        [ "$max" -lt $((96 * 1024)) ] || fail "peak RSS $((max / 1024)) MiB while a slow reader lagged (ceiling 96 MiB)"
    fi
}

test_server_killed_mid_transfer_client_told_promptly_no_fd_leak() {
    local before after srv rc fixed_before fixed_after
    sleep 0.5
    before=$(conn_fds)
    fixed_before=$(fixed_count)
    nsenter --net="/run/netns/$KTP_SRV" socat -u /dev/zero TCP-LISTEN:9300,reuseaddr &
    srv=$!
    ktp_wait_port "$KTP_SRV" 9300
    in_app bash -c "timeout 30 socat -u TCP:$KTP_SRV4:9300 - | head -c 50000000000 > /dev/null" &
    local client=$!
    sleep 1
    kill -9 "$srv"
    local i
    for i in $(seq 100); do kill -0 "$client" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$client" 2>/dev/null && fail "the client was not told within 10s that the server died"
    wait "$client" || true
    # ktproxy still serves others.
    expect_eq "$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$KTP_SRV4/")" 200 "curl afterwards"
    for i in $(seq 40); do
        after=$(conn_fds)
        [ "$after" -le "$before" ] && break
        sleep 0.25
    done
    expect_eq "$after" "$before" "ktproxy's open fds before and after"
    for i in $(seq 40); do
        fixed_after=$(fixed_count)
        [ "$fixed_after" -le "$fixed_before" ] && break
        sleep 0.25
    done
    expect_eq "$fixed_after" "$fixed_before" "sockets in ktproxy's fixed-file tables before and after"
}

test_more_transfers_than_relay_buffers_all_arrive_intact() {
    # 40 slow downloads at once through a ktproxy allowed 16 buffers (pipes,
    # when splicing): a direction whose reader lags holds one, up to 12 of
    # them (three quarters of the pool); the others move their stalled bytes
    # to a spill chunk of their own, or wait for a buffer to come back. None
    # may fail, stall or lose a byte. A domain rule makes ktproxy read every request before
    # relaying it; the request goes into a pipe first, so requests made while
    # every pipe is out must go through ring buffers instead of failing.
    # Runs last: it restarts ktproxy with its own flags.
    local f="$KTP_TMP/nginx/html/4m.bin" want mode i max n late code
    head -c 4194304 /dev/urandom > "$f"
    want=$(sha256sum < "$f" | cut -d' ' -f1)
    stop_ktproxy
    # Small socket buffers on the client host, so that a lagging reader backs
    # up into ktproxy within milliseconds instead of after megabytes.
    local rmem wmem
    rmem=$(in_cli sysctl -n net.ipv4.tcp_rmem) wmem=$(in_cli sysctl -n net.ipv4.tcp_wmem)
    in_cli sysctl -qw net.ipv4.tcp_rmem="4096 65536 131072" net.ipv4.tcp_wmem="4096 65536 131072"
    for mode in splice buffers; do
        # Its own --relay, whatever the harness passes to every ktproxy.
        KTP_E2E_ARGS="" start_ktproxy --relay "$mode" --buffers 16 --workers 1 --rule 'domain=none.invalid block' \
            || { fail "ktproxy --relay $mode did not start"; continue; }
        rm -f "$KTP_TMP"/dl.*
        in_app timeout 120 bash -c "for i in \$(seq 40); do
            (curl -sS --max-time 100 http://$KTP_SRV4/4m.bin | pv -q -L 1m | sha256sum > '$KTP_TMP/dl.'\$i) &
        done; wait" &
        local loader=$!
        max=0 late=""
        while kill -0 "$loader" 2>/dev/null; do
            n=$(status_json | jq .pipes_in_use)
            [ "${n:-0}" -gt "$max" ] && max=$n
            if [ -z "$late" ] && { [ "${n:-0}" -ge 12 ] || [ "$mode" = buffers ]; }; then
                for i in 1 2 3 4 5; do
                    code=$(in_app curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "http://$KTP_SRV4/" 2>&1)
                    late+="$code "
                done
            fi
            sleep 0.2
        done
        expect_eq "$late" "200 200 200 200 200 " "--relay $mode: requests made while the downloads hold the pipes stalled directions may"
        wait "$loader" || fail "--relay $mode: the downloads did not finish"
        for i in $(seq 40); do
            expect_eq "$(cut -d' ' -f1 "$KTP_TMP/dl.$i" 2>/dev/null)" "$want" "--relay $mode: sha256 of download $i"
        done
        if [ "$mode" = splice ]; then
            echo "    pipes in use at most: $max (limit 16, 12 of them for stalled directions)" >&2
            [ "$max" -ge 12 ] && [ "$max" -le 16 ] \
                || fail "--relay splice --buffers 16 --workers 1: at most $max pipes in use at once (expected 12 to 16)"
        fi
        stop_ktproxy || fail "--relay $mode: ktproxy exit status $?"
    done
    in_cli sysctl -qw net.ipv4.tcp_rmem="$rmem" net.ipv4.tcp_wmem="$wmem"
}

# Heap allocations made by a ktproxy run (LD_PRELOAD counter, read at exit):
# start, N short connections, optionally MIB each way through the echo
# server, stop. Flags for ktproxy follow. As root (--proxy-user root): the
# count is written by a library destructor at exit, which a dropped relay
# ends without (_exit) and could not write into the test's 0700 directory.
counted_run() {
    local conns="$1" mib="$2" p
    shift 2
    # A process that keeps the app cgroup populated for the whole run: no
    # cgroup.events change, so the container scan stays idle in both runs.
    in_app sleep 300 >/dev/null 2>&1 &
    KTP_LAUNCHER="nsenter --net=/run/netns/$KTP_CLI env LD_PRELOAD=$KTP_TMP/malloc_count.so MALLOC_COUNT_FILE=$KTP_TMP/mallocs" \
        KTP_E2E_ARGS="" start_ktproxy --proxy-user root "$@" >&2 || fail "ktproxy $* did not start"
    in_app "$KTP_LOAD" rate --to "$KTP_SRV4:80" --http / --conns "$conns" --concurrency 10 --timeout 60 >/dev/null \
        || fail "ktp-load rate through ktproxy $* failed"
    if [ "$mib" -gt 0 ]; then
        local got
        got=$(in_app bash -c "head -c $((mib << 20)) /dev/zero | timeout 60 socat -b 262144 -t 10 - TCP:$KTP_SRV4:9100 | wc -c")
        expect_eq "$got" $((mib << 20)) "bytes echoed through ktproxy $*"
    fi
    stop_ktproxy >&2 || fail "ktproxy $* exit status $?"
    for p in $(cat "$KTP_CG/cgroup.procs"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sleep ] && kill "$p" 2>/dev/null
    done
    cat "$KTP_TMP/mallocs"
}

test_no_heap_allocation_per_connection_or_per_chunk() {
    # The issue's "no per-connection heap churn on the hot path", counted:
    # two runs that differ by 1,000 connections (each logged) and 256 MiB
    # each way (thousands of chunks) must differ by a handful of malloc
    # calls at most, on both relay paths and both log formats. Runs after
    # the buffers test; the ASan build has its own allocator, so not there.
    if ldd "$KTPROXY" 2>/dev/null | grep -q libasan; then
        echo "    (skipped under ASan)" >&2
        return 0
    fi
    cc -O2 -shared -fPIC -o "$KTP_TMP/malloc_count.so" "$(dirname "$0")/malloc_count.c" || fail "building the counter"
    stop_ktproxy >&2 || true
    local flags base more
    for flags in "--relay splice" "--relay buffers --log-format json"; do
        # shellcheck disable=SC2086
        base=$(counted_run 100 0 $flags) || fail "$(printf '%s' "$base" | tail -1)"
        # shellcheck disable=SC2086
        more=$(counted_run 1100 256 $flags) || fail "$(printf '%s' "$more" | tail -1)"
        echo "    $flags: $base mallocs for 100 connections, $more for 1,100 and 256 MiB each way" >&2
        [ "$((more - base))" -le 10 ] || fail "$flags: $((more - base)) more heap allocations for 1,000 connections and 256 MiB each way"
    done
}

test_a_burst_waiting_in_setup_past_half_the_fd_limit_loses_no_connection() {
    # A connection waiting for its upstream connect holds the client's socket
    # and the upstream's. Here ktproxy may open 700 fds (sockets go to the
    # fixed-file table past 350) and gets 400 connections at once while the
    # server drops SYNs, so all 400 wait in setup together: 800 ordinary fds
    # if both sockets stayed ordinary until the relay starts, and socket()
    # for the last upstreams would fail. None may.
    stop_ktproxy >&2 || true
    KTP_LAUNCHER="nsenter --net=/run/netns/$KTP_CLI prlimit --nofile=700:700" KTP_E2E_ARGS="" \
        start_ktproxy --workers 1 || fail "ktproxy (700 fds) did not start"
    in_srv iptables -I INPUT -p tcp --dport 9100 --syn -j DROP || fail "iptables in the server host"
    in_app timeout 60 "$KTP_LOAD" hold --to "$KTP_SRV4:9100" --conns 400 --hold-seconds 4 --timeout 50 \
        > "$KTP_TMP/burst.out" 2>"$KTP_TMP/burst.err" &
    local loader=$!
    wait_held "$KTP_TMP/burst.out" "$loader" || fail "ktp-load never held its 400 connections: $(cat "$KTP_TMP/burst.err")"
    sleep 0.3
    in_srv iptables -D INPUT -p tcp --dport 9100 --syn -j DROP
    wait "$loader" || fail "ktp-load hold: $(tail -1 "$KTP_TMP/burst.out") $(tail -2 "$KTP_TMP/burst.err");" \
        "how ktproxy's connections ended: $(conn_ends)"
    expect_match "$(tail -1 "$KTP_TMP/burst.out")" '(^| )ok=400( |$)' "echo-verified connections"
    expect_no_file_match "$KTP_LOG" 'Too many open files' "ktproxy log"
    stop_ktproxy >&2 || fail "ktproxy exit status $?"
}

run_all_tests "$0"
finish
