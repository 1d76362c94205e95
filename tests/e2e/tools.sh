#!/bin/bash
# End-to-end tests of the everyday tooling: `ktproxy run` (one command in a
# transient cgroup, a static Go binary included), getpeername, `ktproxy
# status`, --metrics, --log-format json, and --fail-closed.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx
start_echo 9000
ktp_bg in_srv microsocks -i "$KTP_SRV4" -p 1081
ktp_wait_port "$KTP_SRV" 1081
CG2="$(ktp_cgroup2_mount)"

# A statically linked Go client: no libc, so no LD_PRELOAD tool could see it.
GOCLIENT="$KTP_TMP/goclient"
build_goclient() {
    mkdir -p "$KTP_TMP/go"
    (cd "$(dirname "$0")/goclient" && HOME="$KTP_TMP/go" GOCACHE="$KTP_TMP/go/cache" GO111MODULE=off CGO_ENABLED=0 \
        timeout 300 go build -o "$GOCLIENT" main.go) || ktp_die "building the Go client failed"
    chmod 755 "$KTP_TMP" "$GOCLIENT"
}
build_goclient

# kt_run ARGS...: `ktproxy run` on the client host (not in any test cgroup).
kt_run() { in_cli "$KTPROXY" run "$@"; }

transient_cgroups() { ls -d "$CG2"/ktproxy-run-* 2>/dev/null | wc -l; }

test_static_go_client_goes_through_socks5_upstream_via_run() {
    readelf -l "$GOCLIENT" | grep -q INTERP && fail "the Go client is not statically linked"
    local out
    out=$(kt_run --upstream "m=socks5://$KTP_SRV4:1081" --default proxy=m -- "$GOCLIENT" "http://$KTP_SRV4/")
    expect_match "$out" '^200 ' "Go client result"
    # Through microsocks on the server host: nginx saw the server host's address.
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$KTP_SRV4" "address nginx saw"
}

test_curl_goes_through_socks5_upstream_via_run() {
    local out
    out=$(kt_run --upstream "m=socks5://$KTP_SRV4:1081" --default proxy=m -- \
        curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://[$KTP_SRV6]/")
    expect_eq "$out" 200 "curl via run"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$KTP_SRV6" "address nginx saw (microsocks's own)"
}

test_run_passes_the_exit_status_through_and_removes_its_cgroup() {
    local rc=0
    kt_run -- sh -c 'exit 42' || rc=$?
    expect_eq "$rc" 42 "exit status"
    rc=0
    kt_run -- sh -c 'kill -9 $$' || rc=$?
    expect_eq "$rc" 137 "exit status of a command killed by SIGKILL"
    rc=0
    kt_run -- /nonexistent/command 2>"$KTP_TMP/nx.err" || rc=$?
    expect_eq "$rc" 127 "exit status of a command that cannot start"
    expect_file_match "$KTP_TMP/nx.err" "No such file"
    expect_eq "$(transient_cgroups)" 0 "transient cgroups left"
}

test_run_cgroup_is_gone_when_the_command_is_killed_from_outside() {
    kt_run -- sleep 30 &
    local runner=$! i pid=""
    for i in $(seq 100); do
        pid=$(cat "$CG2"/ktproxy-run-*/cgroup.procs 2>/dev/null | head -1)
        [ -n "$pid" ] && break
        sleep 0.05
    done
    [ -n "$pid" ] || fail "the command never appeared in a transient cgroup"
    kill -9 "$pid"
    local rc=0
    wait "$runner" || rc=$?
    expect_eq "$rc" 137 "ktproxy run exit status"
    expect_eq "$(transient_cgroups)" 0 "transient cgroups left"
}

test_sigterm_to_ktproxy_run_reaches_the_command() {
    kt_run -- sh -c 'trap "exit 99" TERM; sleep 30 & wait' &
    local runner=$! i
    for i in $(seq 100); do
        [ "$(cat "$CG2"/ktproxy-run-*/cgroup.procs 2>/dev/null | wc -l)" -ge 2 ] && break
        sleep 0.05
    done
    # ktproxy run is the nsenter'd process in the runner's subshell.
    local kt
    kt=$(pgrep -f "$KTPROXY run -- sh -c trap" | head -1)
    [ -n "$kt" ] || fail "ktproxy run not found"
    kill -TERM "$kt"
    local rc=0
    wait "$runner" || rc=$?
    expect_eq "$rc" 99 "exit status: the command's own TERM handler ran"
    expect_eq "$(transient_cgroups)" 0 "transient cgroups left"
}

test_run_as_the_sudo_caller() {
    local out
    out=$(SUDO_UID=65534 SUDO_GID=65534 SUDO_USER=nobody kt_run -- sh -c 'echo "$(id -u) $(id -g) $HOME"')
    expect_eq "$out" "65534 65534 $(getent passwd 65534 | cut -d: -f6)" "uid gid home of the command"
    out=$(kt_run --user 65534 -- id -u)
    expect_eq "$out" 65534 "--user"
}

test_two_runs_at_once_do_not_interfere() {
    kt_run --log-level info -- sh -c "sleep 0.5; curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://$KTP_SRV4/" \
        > "$KTP_TMP/r1" 2>"$KTP_TMP/r1.err" &
    local a=$!
    kt_run --log-level info -- sh -c "sleep 0.5; curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://[$KTP_SRV6]/" \
        > "$KTP_TMP/r2" 2>"$KTP_TMP/r2.err" &
    local b=$!
    wait "$a" || fail "first run failed: $(cat "$KTP_TMP/r1.err")"
    wait "$b" || fail "second run failed: $(cat "$KTP_TMP/r2.err")"
    expect_eq "$(cat "$KTP_TMP/r1")" 200 "first run"
    expect_eq "$(cat "$KTP_TMP/r2")" 200 "second run"
    local c1 c2
    c1=$(sed -n 's/.*cgroup \([^,]*\),.*/\1/p' "$KTP_TMP/r1.err" | head -1)
    c2=$(sed -n 's/.*cgroup \([^,]*\),.*/\1/p' "$KTP_TMP/r2.err" | head -1)
    expect_ne "$c1" "$c2" "the two runs' cgroups"
    expect_file_match "$KTP_TMP/r1.err" "orig=$KTP_SRV4:80 .*end=eof"
    expect_file_match "$KTP_TMP/r2.err" "orig=\\[$KTP_SRV6\\]:80 .*end=eof"
}

test_app_sees_its_intended_peer_in_getpeername() {
    local out
    out=$(kt_run -- curl -sS --max-time 5 -o /dev/null -w '%{remote_ip} %{remote_port}' "http://$KTP_SRV4/")
    expect_eq "$out" "$KTP_SRV4 80" "getpeername over IPv4"
    out=$(kt_run -- curl -sS --max-time 5 -o /dev/null -w '%{remote_ip} %{remote_port}' "http://[$KTP_SRV6]/")
    expect_eq "$out" "$KTP_SRV6 80" "getpeername over IPv6"
    out=$(kt_run -- "$GOCLIENT" "http://$KTP_SRV4/")
    expect_eq "${out##* }" "$KTP_SRV4:80" "the Go client's RemoteAddr"
}

test_idle_timeout_cuts_a_silent_connection() {
    # One exchange, then silence longer than --idle-timeout: ktproxy resets it.
    kt_run --idle-timeout 1 --log-level info -- \
        sh -c "(printf hi; sleep 6) | timeout 10 socat -t 8 - TCP:$KTP_SRV4:9000 >/dev/null" 2>"$KTP_TMP/idle.err" || true
    expect_file_match "$KTP_TMP/idle.err" "orig=$KTP_SRV4:9000 .*c2s=2 s2c=2 .*end=idle"
}

test_urgent_data_beyond_a_gap_does_not_keep_a_connection_busy() {
    # A peer's urgent byte that arrives beyond a gap (loss, or crafted) is
    # flagged by the kernel (POLLPRI) before anything is readable. Polling
    # for it again would complete at once, forever: a worker at 100% CPU and
    # a connection that never idles out. Here the peer goes silent after
    # that segment: --idle-timeout must end the connection.
    local out
    out=$(kt_run --idle-timeout 1 --log-level info -- \
        timeout 20 python3 "$(dirname "$0")/urgent_beyond_gap.py" "$KTP_SRV4" 9000 2>"$KTP_TMP/urg.err") || true
    expect_eq "$out" "closed" "the silent connection after the segment (urgent_beyond_gap.py)"
    expect_file_match "$KTP_TMP/urg.err" "orig=$KTP_SRV4:9000 .*c2s=5 s2c=5 .*end=idle"
}

test_status_lists_live_connections_and_counters() {
    start_ktproxy --control "$KTP_TMP/ctl.sock" || fail "ktproxy did not start"
    [ "$(stat -c %a "$KTP_TMP/ctl.sock")" = 600 ] || fail "control socket is not owner-only"
    in_app bash -c "(printf hi; sleep 3) | timeout 10 socat -t 5 - TCP:$KTP_SRV4:9000" >/dev/null &
    local held=$! out i
    for i in $(seq 40); do
        out=$("$KTPROXY" status --control "$KTP_TMP/ctl.sock")
        printf '%s' "$out" | grep -q "$KTP_SRV4:9000" && break
        sleep 0.1
    done
    expect_match "$out" "127\\.0\\.0\\.1:[0-9]+ +$KTP_SRV4:9000 +direct" "status connection line"
    expect_match "$out" "redirected=[1-9]" "status kernel counters"
    # UDP is on by default: status names the relay's port.
    expect_match "$out" "^udp: UDP relay on port [1-9][0-9]*$" "status udp line"
    "$KTPROXY" status --control "$KTP_TMP/ctl.sock" --json | jq -e \
        ".connections | map(select(.orig == \"$KTP_SRV4:9000\" and .route == \"direct\")) | length == 1" >/dev/null ||
        fail "status --json has no such connection"
    "$KTPROXY" status --control "$KTP_TMP/ctl.sock" --json | jq -e '.udp_port > 0' >/dev/null ||
        fail "status --json has no UDP relay port"
    # Nobody but root may talk to it.
    setpriv --reuid=65534 --regid=65534 --clear-groups "$KTPROXY" status --control "$KTP_TMP/ctl.sock" >/dev/null 2>&1 &&
        fail "an unprivileged user could read the status"
    wait "$held" || true
    stop_ktproxy
}

test_metrics_endpoint_serves_prometheus_text() {
    start_ktproxy --metrics 127.0.0.1:19464 || fail "ktproxy did not start"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through ktproxy"
    local m
    m=$(in_cli curl -sS --max-time 5 http://127.0.0.1:19464/metrics)
    expect_match "$m" '# TYPE ktproxy_connections_total counter' "metrics"
    expect_match "$m" 'ktproxy_connections_total\{route="direct"\} [1-9]' "connections_total"
    expect_match "$m" 'ktproxy_bytes_total\{route="direct",direction="server_to_client"\} [1-9]' "bytes_total"
    expect_match "$m" 'ktproxy_kernel_events_total\{event="redirected"\} [1-9]' "kernel counters"
    expect_eq "$(in_cli curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:19464/nope)" 404 "unknown path"
    stop_ktproxy
}

test_json_logs_are_one_object_per_line() {
    start_ktproxy --log-format json || fail "ktproxy did not start"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through ktproxy"
    wait_log "$KTP_LOG" '"event":"conn"' || fail "no conn event"
    stop_ktproxy
    jq -e -s 'all(.[]; has("ts") and has("level"))' "$KTP_LOG" >/dev/null || fail "a log line is not a JSON object"
    jq -e -s "map(select(.event == \"conn\" and .orig == \"$KTP_SRV4:80\" and .end == \"eof\" and .s2c > 0)) | length >= 1" \
        "$KTP_LOG" >/dev/null || fail "no conn object with the expected fields"
}

test_starts_under_ip_netns_exec_which_hides_the_cgroup_mounts() {
    # CI harnesses often start a daemon with `ip netns exec`, which remounts
    # /sys in a private mount namespace: no cgroup mount is visible there.
    # ktproxy mounts the hierarchy itself; the cgroup is named relative to it.
    KTP_LAUNCHER="ip netns exec $KTP_CLI" KTP_CG_ARG="${KTP_CG#"$CG2"/}" start_ktproxy \
        || fail "ktproxy did not start under ip netns exec"
    expect_file_match "$KTP_LOG" "mounted cgroup2 at /sys/fs/cgroup"
    local out lport
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status"
    lport="${out##* }"
    wait_log "$KTP_LOG" "conn client=[^ ]+:$lport orig=$KTP_SRV4:80 " || fail "no conn line for curl's port $lport: not intercepted"
    stop_ktproxy || fail "ktproxy exit status $?"
    expect_eq "$(ktp_cgroup2_mount)" "$CG2" "the host's cgroup2 mount, untouched"
    # --fail-closed there would pin into a bpffs that dies with ktproxy's
    # private mount namespace: refused, in one line.
    local rc=0
    out=$(timeout 10 ip netns exec "$KTP_CLI" "$KTPROXY" --cgroup "${KTP_CG#"$CG2"/}" --fail-closed 2>&1) || rc=$?
    expect_eq "$rc" 1 "exit status of --fail-closed under ip netns exec"
    expect_match "$out" 'would vanish with ktproxy' "its message"
    expect_eq "$(printf '%s\n' "$out" | grep -vc 'mounted cgroup2')" 1 "error lines"
}

test_fail_closed_blocks_after_kill_and_recovers_on_restart_and_cleanup() {
    local before out rc
    start_ktproxy --fail-closed || fail "ktproxy did not start"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through ktproxy"
    local port
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$KTP_LOG" | head -1 | cut -d: -f2)
    stop_ktproxy KILL || true
    # The process is gone, but the kernel tears its io_uring down in the
    # background, and the listener lives until then: connects would still be
    # accepted (and reset) for that moment. Wait for the listener to go.
    ktp_wait_port_gone "$KTP_CLI" "$port" || fail "ktproxy's listener on port $port outlived it by 5s"
    before=$(wc -l < "$NGINX_LOG")
    rc=0
    in_app timeout 5 curl -sS --max-time 4 -o /dev/null "http://$KTP_SRV4/" 2>"$KTP_TMP/fc.err" || rc=$?
    expect_eq "$rc" 7 "curl exit status while ktproxy is dead (7: could not connect)"
    expect_eq "$(wc -l < "$NGINX_LOG")" "$before" "requests nginx saw while ktproxy was dead"
    start_ktproxy --fail-closed || fail "ktproxy did not restart"
    expect_file_match "$KTP_LOG" 'took over pinned hooks'
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$KTP_SRV4/")
    expect_eq "$out" 200 "curl after restart"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*end=eof" || fail "the restarted ktproxy did not relay"
    # cleanup while the owner runs: its pins are in use, not leftovers.
    in_cli "$KTPROXY" cleanup 2>/dev/null || fail "ktproxy cleanup (owner alive) failed"
    [ -e /sys/fs/bpf/ktproxy/"ktp-test-${KTP_ID}_app" ] || fail "cleanup unpinned a running instance's hooks"
    local relayed
    relayed=$(grep -c "orig=$KTP_SRV4:80 .*end=eof" "$KTP_LOG")
    expect_eq "$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$KTP_SRV4/")" 200 "curl after a cleanup"
    for _ in $(seq 100); do
        [ "$(grep -c "orig=$KTP_SRV4:80 .*end=eof" "$KTP_LOG")" -gt "$relayed" ] && break
        sleep 0.05
    done
    [ "$(grep -c "orig=$KTP_SRV4:80 .*end=eof" "$KTP_LOG")" -gt "$relayed" ] ||
        fail "after a cleanup the running instance no longer relays"
    stop_ktproxy TERM || true
    in_cli "$KTPROXY" cleanup 2>/dev/null || fail "ktproxy cleanup failed"
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "curl after cleanup"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f2)" "${out##* }" "nginx saw the client's own port (direct)"
    [ ! -e /sys/fs/bpf/ktproxy/"ktp-test-${KTP_ID}_app" ] || fail "pins left after cleanup"
}

run_all_tests "$0"
finish
