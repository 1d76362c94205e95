#!/bin/bash
# End-to-end tests of "who opened it": the process, thread group and user
# that made each redirected connection, as the connect hooks record them, in
# the per-connection log line and in `ktproxy status` while it is open.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

PY=/usr/bin/python3  # Debian's: nobody can run it
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)

# as_nobody PIDFILE CMD...: CMD as nobody in the app cgroup, writing its pid
# first (sh, setpriv and CMD exec each other: one process throughout).
as_nobody() {
    in_app sh -c 'echo $$ > "$0"; exec "$@"' "$1" "${NOBODY[@]}" "${@:2}"
}

ktp_topo_up
start_nginx
start_echo 9000

test_curl_as_nobody_is_logged_with_its_pid_comm_uid() {
    trap stop_ktproxy EXIT
    start_ktproxy --log-level info || fail "ktproxy did not start"
    as_nobody "$KTP_TMP/curl.pid" curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl failed"
    local pid
    pid=$(cat "$KTP_TMP/curl.pid")
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .* pid=$pid comm=curl uid=65534( |\$)" ||
        { grep "orig=$KTP_SRV4:80" "$KTP_LOG" >&2; fail "no conn line with pid=$pid comm=curl uid=65534"; }
    stop_ktproxy
}

test_held_connection_shows_its_process_in_status_and_json_log() {
    trap stop_ktproxy EXIT
    start_ktproxy --log-level info --log-format json --control "$KTP_TMP/ctl.sock" || fail "ktproxy did not start"
    # Held open for 3s: the input ends then, and the echo server closes.
    (printf hi; sleep 3) | as_nobody "$KTP_TMP/socat.pid" socat -t 5 - "TCP:$KTP_SRV4:9000" >/dev/null &
    local pid=$! js="" i
    for i in $(seq 40); do
        js=$("$KTPROXY" status --control "$KTP_TMP/ctl.sock" --json)
        printf '%s' "$js" | jq -e '.connections | length == 1' >/dev/null && break
        sleep 0.1
    done
    local socat_pid
    socat_pid=$(cat "$KTP_TMP/socat.pid")
    printf '%s' "$js" | jq -e --argjson p "$socat_pid" \
        '.connections[0] | .pid == $p and .comm == "socat" and .uid == 65534' >/dev/null ||
        fail "status --json: expected pid=$socat_pid comm=socat uid=65534: $js"
    local text
    text=$("$KTPROXY" status --control "$KTP_TMP/ctl.sock")
    expect_match "$text" "$KTP_SRV4:9000 .* $socat_pid socat +65534 " "status text"
    wait "$pid" || true
    wait_log "$KTP_LOG" "\"orig\":\"$KTP_SRV4:9000\".*\"pid\":$socat_pid,\"comm\":\"socat\",\"uid\":65534" ||
        { tail -3 "$KTP_LOG" >&2; fail "no JSON conn line with pid $socat_pid"; }
    stop_ktproxy
}

test_a_thread_of_a_multithreaded_program_reports_the_process_pid() {
    trap stop_ktproxy EXIT
    start_ktproxy --log-level info || fail "ktproxy did not start"
    local out pid tid
    out=$(in_app "$PY" - "$KTP_SRV4" <<'PY'
import os, socket, sys, threading
def work():
    s = socket.create_connection((sys.argv[1], 9000), timeout=5)
    s.sendall(b"x")
    s.recv(1)
    s.close()
    print(os.getpid(), threading.get_native_id())
t = threading.Thread(target=work)
t.start()
t.join()
PY
) || fail "python client failed"
    read -r pid tid <<<"$out"
    expect_ne "$tid" "$pid" "thread id (the connect must come from a thread, not the main one)"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9000 .* pid=$pid comm=[^ ]+ uid=0( |\$)" ||
        { grep "orig=$KTP_SRV4:9000" "$KTP_LOG" >&2; fail "no conn line with the process's pid $pid"; }
    stop_ktproxy
}

test_status_watch_shows_rates_and_process_of_a_busy_connection() {
    trap stop_ktproxy EXIT
    local ctl="$KTP_TMP/ctl.sock"
    start_ktproxy --log-level info --control "$ctl" || fail "ktproxy did not start"
    # A byte every 0.1s for 8s: a connection with a steady rate both ways,
    # open for both views below.
    (for _ in $(seq 80); do printf x; sleep 0.1; done) |
        as_nobody "$KTP_TMP/busy.pid" socat -t 5 - "TCP:$KTP_SRV4:9000" >/dev/null &
    local held=$! pid
    wait_log "$KTP_TMP/busy.pid" '[0-9]' || fail "socat did not start"
    pid=$(cat "$KTP_TMP/busy.pid")
    # Not a terminal: plain lines, one per connection and second (bounded by timeout).
    timeout 3 "$KTPROXY" status --watch --control "$ctl" > "$KTP_TMP/watch.txt" 2>&1
    expect_file_match "$KTP_TMP/watch.txt" \
        "^[0-9:]{8} client=127\.0\.0\.1:[0-9]+ orig=$KTP_SRV4:9000 route=direct c2s_bps=[1-9][0-9]* s2c_bps=[1-9][0-9]* pid=$pid comm=socat uid=65534\$" \
        "status --watch (plain)"
    # A terminal: a screen with a header, refreshed (script(1) gives it a pty).
    timeout 3 script -qec "$KTPROXY status --watch --control $ctl" /dev/null > "$KTP_TMP/watch.tty" 2>&1
    expect_file_match "$KTP_TMP/watch.tty" "CLIENT +DESTINATION +ROUTE +C2S B/S +S2C B/S +PID COMM UID" \
        "status --watch (terminal)"
    expect_file_match "$KTP_TMP/watch.tty" "$KTP_SRV4:9000 +direct +[0-9]+ +[0-9]+ +$pid socat 65534" \
        "status --watch (terminal) connection row"
    # Bad combination: one line, non-zero.
    local err rc=0
    err=$("$KTPROXY" status --watch --json --control "$ctl" 2>&1) || rc=$?
    expect_ne "$rc" 0 "exit status of --watch --json"
    expect_eq "$(printf '%s\n' "$err" | wc -l)" 1 "error lines of --watch --json"
    wait "$held" || true
    stop_ktproxy
}

run_all_tests "$0"
finish
