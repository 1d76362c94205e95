#!/bin/bash
# End-to-end tests of the dry run (--dry-run, `ktproxy ctl dry-run`, SIGHUP):
# the connect hooks decide but change nothing, so every connection of the
# cgroup reaches its server directly (the server sees the client's own
# address and port, not ktproxy's), and each decision is reported: a log
# line naming the process, the destination, the rule and what would have
# happened, and counters in status --json and the metrics. Switching off and
# on again at run time changes the next connect of an app that keeps running.
# UDP (intercepted by default) is left alone too: not redirected, not blocked.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx
# "peer ADDR PORT": whom the server sees. A connection through ktproxy
# (proxy=direct) comes from the client host too, but from ktproxy's port.
for p in 9000 9001 9100; do
    ktp_bg in_srv socat -t 10 "TCP4-LISTEN:$p,reuseaddr,fork" SYSTEM:'echo peer $SOCAT_PEERADDR $SOCAT_PEERPORT'
    ktp_wait_port "$KTP_SRV" "$p"
done

CTL="$KTP_TMP/ctl.sock"
PIN_DIR="/sys/fs/bpf/ktproxy/ktp-test-${KTP_ID}_app"
unpin_ours() { rm -rf "$PIN_DIR"; }
KTP_EXTRA_CLEANUP+=(unpin_ours)
RULES=(--rule "port=9000 block" --rule "port=9001 direct" --rule "port=9100 proxy=direct" --rule "port=80 proxy=direct")

# A long-lived app in the cgroup: connects to the server host's port on each
# line read from its fifo and prints its own pid once, then per connection
# "port=P local=ADDR:PORT seen=peer ADDR PORT" (or "port=P error=...").
APP_PY='
import os, socket, sys
print("pid", os.getpid(), flush=True)
for line in sys.stdin:
    port = int(line)
    try:
        s = socket.create_connection(("10.201.0.2", port), timeout=5)
        local = "%s:%d" % s.getsockname()
        data = b""
        while not data.endswith(b"\n") and len(data) < 200:
            chunk = s.recv(200)
            if not chunk:
                break
            data += chunk
        s.close()
        print("port=%d local=%s seen=%s" % (port, local, data.decode().strip()), flush=True)
    except OSError as e:
        print("port=%d error=%s" % (port, e.strerror), flush=True)
'

# app_start: the app, reading $KTP_TMP/app.in (held open on fd 7).
app_start() {
    rm -f "$KTP_TMP/app.in" "$KTP_TMP/app.out"
    mkfifo "$KTP_TMP/app.in"
    in_app python3 -c "$APP_PY" < "$KTP_TMP/app.in" > "$KTP_TMP/app.out" 2>&1 &
    APP_JOB=$!
    exec 7> "$KTP_TMP/app.in"
    wait_log "$KTP_TMP/app.out" '^pid ' 5 || fail "the app did not start"
    APP_PID=$(sed -n 's/^pid //p' "$KTP_TMP/app.out")
}
app_stop() {
    exec 7>&-
    wait "$APP_JOB" 2>/dev/null || true
}
# app_connect PORT: one connection of the app; its line in $APP_LINE.
app_connect() {
    local before
    before=$(grep -c '^port=' "$KTP_TMP/app.out" || true)
    echo "$1" >&7
    for _ in $(seq 100); do
        [ "$(grep -c '^port=' "$KTP_TMP/app.out" || true)" -gt "$before" ] && break
        sleep 0.05
    done
    APP_LINE=$(grep '^port=' "$KTP_TMP/app.out" | sed -n "$((before + 1))p")
    [ -n "$APP_LINE" ] || fail "the app did not report its connection to port $1"
}
# The app's connection reached the server directly: the server saw the app's own port.
expect_direct() {
    local local_ seen
    local_=$(conn_field "$APP_LINE" local)
    seen=$(printf '%s\n' "$APP_LINE" | sed -n 's/.* seen=peer \([^ ]*\) \([0-9]*\)$/\1:\2/p')
    expect_eq "$seen" "$local_" "$1: the server saw (the app's own address is $local_)"
}
# It went through ktproxy: the server saw the client host, but not the app's port.
expect_proxied() {
    local local_ seen
    local_=$(conn_field "$APP_LINE" local)
    seen=$(printf '%s\n' "$APP_LINE" | sed -n 's/.* seen=peer \([^ ]*\) \([0-9]*\)$/\1:\2/p')
    expect_match "$seen" "^$KTP_CLI4:" "$1: the server saw"
    expect_ne "$seen" "$local_" "$1: the server saw the app's own port"
}
# start_dry ARGS: start_ktproxy, stopped again whichever way the test ends.
start_dry() {
    start_ktproxy "$@" || return 1
    trap 'stop_ktproxy >/dev/null 2>&1' EXIT
}
status_json() { "$KTPROXY" status --control "$CTL" --json > "$KTP_TMP/status.json" || fail "status failed"; }
sj() { jq -r "$1" "$KTP_TMP/status.json"; }

test_dry_run_reports_and_changes_nothing() {
    start_dry --log-level info --dry-run --control "$CTL" --metrics 127.0.0.1:9465 "${RULES[@]}" ||
        fail "ktproxy did not start"
    expect_file_match "$KTP_LOG" 'ready: .*dry run'
    app_start
    # Redirect (rule 3), block (rule 1), pass (rule 2): each one goes straight out.
    app_connect 9100
    expect_direct "port 9100 (would be redirected)"
    app_connect 9000
    expect_direct "port 9000 (would be blocked)"
    app_connect 9001
    expect_direct "port 9001 (would pass)"
    # curl to nginx: nginx's log has curl's own port.
    local cport
    cport=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{local_port}' "http://$KTP_SRV4/") || fail "curl failed"
    wait_log "$KTP_TMP/nginx/access.log" "^$KTP_CLI4 $cport " 5 ||
        fail "nginx did not see curl's own port $cport: $(tail -1 "$KTP_TMP/nginx/access.log")"
    app_stop
    # The events: pid, comm, destination, rule, action, what would have been.
    wait_log "$KTP_LOG" "dry-run would=redirect dst=$KTP_SRV4:80 " 5 || fail "no event for curl"
    expect_file_match "$KTP_LOG" "dry-run would=redirect dst=$KTP_SRV4:9100 rule=3 action=proxy pid=$APP_PID tid=$APP_PID uid=0 comm=python3 cgroup=[0-9]+ rule_text=\"port=9100 proxy=direct\""
    expect_file_match "$KTP_LOG" "dry-run would=block dst=$KTP_SRV4:9000 rule=1 action=block pid=$APP_PID .*comm=python3 .*rule_text=\"port=9000 block\""
    expect_file_match "$KTP_LOG" "dry-run would=pass dst=$KTP_SRV4:9001 rule=2 action=direct pid=$APP_PID .*comm=python3"
    expect_file_match "$KTP_LOG" "dry-run would=redirect dst=$KTP_SRV4:80 rule=4 action=proxy pid=[0-9]+ .*comm=curl"
    # The cgroup id is the app cgroup's inode.
    expect_file_match "$KTP_LOG" "comm=curl cgroup=$(stat -c %i "$KTP_CG") "
    expect_no_file_match "$KTP_LOG" ' conn client=' "ktproxy relayed a connection"
    # Counters: status --json and the metrics, per action.
    status_json
    expect_eq "$(sj .dry_run)" true "status dry_run"
    expect_eq "$(sj .kernel.dry_run_redirect)" 2 "status dry_run_redirect"
    expect_eq "$(sj .kernel.dry_run_block)" 1 "status dry_run_block"
    expect_eq "$(sj .kernel.dry_run_pass)" 1 "status dry_run_pass"
    expect_eq "$(sj .kernel.redirected)" 0 "status redirected"
    expect_eq "$(sj .kernel.blocked)" 0 "status blocked"
    expect_eq "$(sj .dry_run_events)" 4 "status dry_run_events"
    in_cli curl -sS --max-time 5 "http://127.0.0.1:9465/metrics" > "$KTP_TMP/metrics.txt" || fail "no metrics"
    expect_file_match "$KTP_TMP/metrics.txt" '^ktproxy_dry_run 1$'
    expect_file_match "$KTP_TMP/metrics.txt" '^ktproxy_kernel_events_total\{event="dry_run_redirect"\} 2$'
    expect_file_match "$KTP_TMP/metrics.txt" '^ktproxy_kernel_events_total\{event="dry_run_block"\} 1$'
    expect_file_match "$KTP_TMP/metrics.txt" '^ktproxy_kernel_events_total\{event="dry_run_pass"\} 1$'
    expect_file_match "$KTP_TMP/metrics.txt" '^ktproxy_dry_run_events_total\{logged="yes"\} 4$'
    expect_no_file_match "$KTP_TMP/metrics.txt" 'pid=|comm=' "per-process labels in metrics"
    stop_ktproxy || fail "ktproxy exited $?"
}

test_dry_run_leaves_udp_alone() {
    # UDP is intercepted by default; a dry run must not redirect or block it
    # either: sendto and connect to a port a rule blocks succeed, and one a
    # rule proxies is not sent to the relay.
    start_dry --dry-run --control "$CTL" "${RULES[@]}" || fail "ktproxy did not start"
    local out
    out=$(in_app python3 -c '
import socket
r = []
for port, connected in ((9000, False), (9000, True), (9100, False)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if connected:
            s.connect(("10.201.0.2", port)); s.send(b"x")
        else:
            s.sendto(b"x", ("10.201.0.2", port))
        r.append("ok")
    except OSError as e:
        r.append(e.strerror)
print(" ".join(r))') || fail "the UDP client failed: $out"
    expect_eq "$out" "ok ok ok" "sendto 9000 (block), connect 9000 (block), sendto 9100 (proxy=direct)"
    status_json
    expect_eq "$(sj .kernel.udp_redirected)" 0 "status udp_redirected"
    expect_eq "$(sj .kernel.blocked)" 0 "status blocked"
    stop_ktproxy || fail "ktproxy exited $?"
}

test_ctl_switches_a_running_app_without_restart() {
    start_dry --log-level info --dry-run --control "$CTL" "${RULES[@]}" || fail "ktproxy did not start"
    app_start
    app_connect 9100
    expect_direct "dry run on at start"
    "$KTPROXY" ctl --control "$CTL" dry-run off > "$KTP_TMP/ctl.out" || fail "ctl dry-run off exited $?"
    expect_file_match "$KTP_TMP/ctl.out" '^dry run off$'
    app_connect 9100
    expect_proxied "after ctl dry-run off"
    app_connect 9000
    expect_match "$APP_LINE" 'error=Operation not permitted' "port 9000 after ctl dry-run off"
    "$KTPROXY" ctl --control "$CTL" dry-run on > "$KTP_TMP/ctl.out" || fail "ctl dry-run on exited $?"
    app_connect 9100
    expect_direct "after ctl dry-run on"
    app_connect 9000
    expect_direct "port 9000 after ctl dry-run on"
    app_stop
    expect_file_match "$KTP_LOG" 'dry run off \(ktproxy ctl\)'
    expect_file_match "$KTP_LOG" 'dry run on \(ktproxy ctl\)'
    status_json
    expect_eq "$(sj .dry_run)" true "status dry_run"
    expect_eq "$(sj .kernel.redirected)" 1 "redirected while off"
    expect_eq "$(sj .kernel.blocked)" 1 "blocked while off"
    expect_eq "$(sj .kernel.dry_run_redirect)" 2 "dry_run_redirect while on"
    # Bad usage: one line, exit 2; nothing changed.
    local rc=0
    "$KTPROXY" ctl --control "$CTL" dry-run maybe 2> "$KTP_TMP/ctl.err" || rc=$?
    expect_eq "$rc" 2 "ctl dry-run maybe"
    expect_eq "$(wc -l < "$KTP_TMP/ctl.err")" 1 "error lines"
    rc=0
    "$KTPROXY" ctl --control "$KTP_TMP/nobody.sock" dry-run off 2> "$KTP_TMP/ctl.err" || rc=$?
    expect_eq "$rc" 1 "ctl to a socket nobody listens on"
    expect_file_match "$KTP_TMP/ctl.err" 'nobody.sock'
    stop_ktproxy || fail "ktproxy exited $?"
}

test_sighup_switches_from_the_config_file() {
    printf 'rule = ["port=9000 block", "port=9001 direct", "port=9100 proxy=direct"]\ndry-run = false\n' \
        > "$KTP_TMP/dry.toml"
    start_dry --log-level info --control "$CTL" --config "$KTP_TMP/dry.toml" || fail "ktproxy did not start"
    app_start
    app_connect 9100
    expect_proxied "dry-run = false at start"
    sed -i 's/^dry-run = false/dry-run = true/' "$KTP_TMP/dry.toml"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reloaded: .*dry run on' 5 || fail "no reload with dry run on"
    app_connect 9100
    expect_direct "after SIGHUP with dry-run = true"
    sed -i 's/^dry-run = true/dry-run = false/' "$KTP_TMP/dry.toml"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reloaded: .*dry run off' 5 || fail "no reload with dry run off"
    app_connect 9100
    expect_proxied "after SIGHUP with dry-run = false"
    app_stop
    status_json
    expect_eq "$(sj .dry_run)" false "status dry_run"
    expect_eq "$(sj .kernel.dry_run_redirect)" 1 "dry_run_redirect"
    stop_ktproxy || fail "ktproxy exited $?"
}

test_dry_run_refuses_fail_closed() {
    # Refused at start: a dry run lets connections out, --fail-closed exists to stop that.
    local rc=0
    in_cli "$KTPROXY" --cgroup "$KTP_CG" --dry-run --fail-closed 2> "$KTP_TMP/err" || rc=$?
    expect_eq "$rc" 2 "exit status"
    expect_file_match "$KTP_TMP/err" '--dry-run: not with --fail-closed'
    # And at run time.
    start_dry --fail-closed --control "$CTL" || fail "ktproxy did not start"
    rc=0
    "$KTPROXY" ctl --control "$CTL" dry-run on 2> "$KTP_TMP/err" || rc=$?
    expect_eq "$rc" 1 "ctl dry-run on with --fail-closed"
    expect_file_match "$KTP_TMP/err" 'refused: this instance runs with --fail-closed'
    status_json
    expect_eq "$(sj .dry_run)" false "status dry_run"
    stop_ktproxy || fail "ktproxy exited $?"
    # Its hooks stay pinned (fail-closed) on this suite's cgroup: only they go.
    unpin_ours
}

test_sighup_cannot_dry_run_a_fail_closed_instance() {
    # The file said fail-closed at start; edited to a dry run without it, a
    # SIGHUP must not switch the pinned hooks, which would go on letting
    # connections out directly if ktproxy died.
    printf 'fail-closed = true\nrule = ["port=9000 block"]\n' > "$KTP_TMP/fc.toml"
    start_dry --log-level info --control "$CTL" --config "$KTP_TMP/fc.toml" || fail "ktproxy did not start"
    printf 'dry-run = true\nrule = ["port=9000 block"]\n' > "$KTP_TMP/fc.toml"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reload refused|reloaded:' 5 || fail "no reload line"
    expect_file_match "$KTP_LOG" 'reload refused, keeping the rules in force: .*--fail-closed'
    status_json
    expect_eq "$(sj .dry_run)" false "status dry_run"
    app_start
    app_connect 9000
    expect_match "$APP_LINE" 'error=Operation not permitted' "port 9000 after the refused reload"
    app_stop
    stop_ktproxy || fail "ktproxy exited $?"
    unpin_ours
}

test_dry_run_log_is_rate_limited() {
    start_dry --log-level info --dry-run --control "$CTL" "${RULES[@]}" || fail "ktproxy did not start"
    # 1000 connects (refused at once: nothing listens on 9009) within a
    # second or so: 100 lines, then a summary of the rest.
    in_app python3 -c '
import socket
for _ in range(1000):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("10.201.0.2", 9009))
    except OSError:
        pass
    s.close()
' || fail "the connects failed"
    wait_log "$KTP_LOG" 'dry-run: [0-9]+ events not logged in the last second' 5 || fail "no rate-limit summary"
    status_json
    expect_eq "$(sj .kernel.dry_run_redirect)" 1000 "dry_run_redirect"
    local logged unlogged
    logged=$(grep -c 'dry-run would=redirect dst=10.201.0.2:9009 rule=default' "$KTP_LOG")
    unlogged=$(sj .dry_run_unlogged)
    [ "$logged" -lt 1000 ] || fail "all 1000 events were logged"
    expect_eq "$((logged + unlogged + $(sj .kernel.dry_run_events_lost)))" 1000 "logged + unlogged + lost"
    stop_ktproxy || fail "ktproxy exited $?"
}

run_all_tests "$0"
finish
