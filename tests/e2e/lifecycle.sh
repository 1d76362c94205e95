#!/bin/bash
# End-to-end tests of an instance's lifecycle: its cgroup removed and created
# again (systemctl restart), one owner per cgroup and unambiguous pin names,
# a --fail-closed restart whose maps no longer fit, a port another daemon
# shares through SO_REUSEPORT, listen addresses nothing can connect to, and
# what status and the conn line report.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx
CG2="$(ktp_cgroup2_mount)"
PINS=/sys/fs/bpf/ktproxy
PIN_APP="$PINS/ktp-test-${KTP_ID}_app"
# kill_left_instances: every ktproxy this suite started that still runs (a
# failed test leaves its own) and its client loops, then their pins. Each test runs it on exit,
# so that a failure does not drag the next tests down with it.
kill_left_instances() {
    local rc=$? f killed=0
    set +e
    for f in "$KTP_TMP"/ktproxy.*.log.pid; do
        [ -e "$f" ] || continue
        [ -s "${f%.pid}.rc" ] && continue
        kill -9 "$(cat "$f")" 2>/dev/null && killed=1
    done
    for f in "$KTP_TMP"/loops.pid; do
        [ -e "$f" ] && xargs -r kill < "$f" 2>/dev/null
        rm -f "$f"
    done
    [ "$killed" = 1 ] && sleep 0.3
    [ -d "$KTP_CG" ] || mkdir -p "$KTP_CG"
    # Only this suite's instance: another suite's --fail-closed instance
    # may be between a kill and its restart right now.
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" >/dev/null 2>&1
    return "$rc"
}
KTP_EXTRA_CLEANUP+=("kill_left_instances")

# in_cg CGROUP CMD...: CMD in that cgroup, on the client host.
in_cg() {
    nsenter --net="/run/netns/$KTP_CLI" sh -c 'cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"' \
        sh "$1" "${@:2}"
}

# curl_via_ktproxy CGROUP LOG: a request from the cgroup, which LOG's
# ktproxy must have relayed (its conn line names curl's port).
curl_via_ktproxy() {
    local out lport
    out=$(in_cg "$1" curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status from $1"
    lport="${out##* }"
    wait_log "$2" "conn client=[^ ]+:$lport orig=$KTP_SRV4:80 .*end=eof" ||
        fail "no conn line for curl's port $lport from $1: not intercepted"
}

# recreate_cgroup: what systemd does to a service's cgroup on restart.
recreate_cgroup() {
    rmdir "$KTP_CG" || fail "rmdir $KTP_CG"
    mkdir "$KTP_CG" || fail "mkdir $KTP_CG"
}

reattach_case() {
    start_ktproxy --control "$KTP_TMP/ctl.sock" "$@" || fail "ktproxy did not start"
    curl_via_ktproxy "$KTP_CG" "$KTP_LOG"
    recreate_cgroup
    wait_log "$KTP_LOG" "re-attached the hooks to cgroup $KTP_CG" ||
        fail "ktproxy did not notice that its cgroup was created again"
    expect_eq "$(grep -c 'was removed: its hooks went with it' "$KTP_LOG")" 1 "removal lines"
    curl_via_ktproxy "$KTP_CG" "$KTP_LOG"
    local st
    st=$("$KTPROXY" status --control "$KTP_TMP/ctl.sock")
    expect_match "$st" "hooks re-attached 1 times" "status"
    "$KTPROXY" status --control "$KTP_TMP/ctl.sock" --json | jq -e '.reattached == 1' >/dev/null ||
        fail "status --json: no reattached=1"
}

test_cgroup_created_again_is_intercepted_again() {
    trap kill_left_instances EXIT
    reattach_case
    stop_ktproxy || fail "ktproxy exit status $?"
}

test_cgroup_created_again_is_intercepted_again_fail_closed() {
    trap kill_left_instances EXIT
    reattach_case --fail-closed
    local port
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$KTP_LOG" | head -1 | cut -d: -f2)
    # The pins moved to the new cgroup: with ktproxy killed, its connects fail.
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$port" || fail "the listener outlived ktproxy"
    local before rc=0
    before=$(wc -l < "$NGINX_LOG")
    in_app timeout 5 curl -sS --max-time 4 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null || rc=$?
    expect_eq "$rc" 7 "curl exit status from the new cgroup while ktproxy is dead"
    expect_eq "$(wc -l < "$NGINX_LOG")" "$before" "requests nginx saw while ktproxy was dead"
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

test_cleanup_of_one_cgroup_leaves_another_instances_fail_closed_hooks() {
    trap kill_left_instances EXIT
    # A --fail-closed instance between its kill and its restart: cleaning up
    # after another instance (`cleanup --cgroup` of its cgroup) must leave
    # these hooks, or this cgroup's connects would go out direct.
    local rc=0
    start_ktproxy --fail-closed || fail "ktproxy did not start"
    stop_ktproxy KILL || true
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG-other" 2>/dev/null || fail "cleanup --cgroup of another cgroup"
    [ -e "$PIN_APP/link_ktp_connect4" ] || fail "cleanup of another cgroup removed this instance's pins"
    in_app timeout 5 curl -sS --max-time 4 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null || rc=$?
    expect_eq "$rc" 7 "curl exit status while ktproxy is dead (fail-closed)"
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup --cgroup of this cgroup"
    [ ! -e "$PIN_APP" ] || fail "pins left after cleanup --cgroup of their cgroup"
    rc=0
    in_app timeout 5 curl -sS --max-time 4 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null || rc=$?
    expect_eq "$rc" 0 "curl exit status after the cleanup (direct again)"
}

test_cgroup_created_again_while_ktproxy_was_dead_gets_hooks_on_restart() {
    trap kill_left_instances EXIT
    # Pins of a --fail-closed ktproxy killed before the cgroup was re-created
    # hold the old cgroup: a restart must attach to the new one, not take
    # over links that no longer intercept anything.
    start_ktproxy --fail-closed || fail "ktproxy did not start"
    stop_ktproxy KILL || true
    recreate_cgroup
    start_ktproxy --fail-closed || fail "ktproxy did not restart"
    expect_file_match "$KTP_LOG" "pinned cgroup/connect4 was on cgroup id [0-9]+, not on $KTP_CG"
    curl_via_ktproxy "$KTP_CG" "$KTP_LOG"
    stop_ktproxy || true
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

test_cgroup_removed_for_good_ends_ktproxy_with_an_error() {
    trap kill_left_instances EXIT
    start_ktproxy || fail "ktproxy did not start"
    rmdir "$KTP_CG" || fail "rmdir"
    local rc=0
    for _ in $(seq 450); do [ -s "$KTP_LOG.rc" ] && break; sleep 0.1; done
    [ -s "$KTP_LOG.rc" ] || { mkdir -p "$KTP_CG"; fail "ktproxy still runs 45s after its cgroup went"; }
    rc=$(cat "$KTP_LOG.rc")
    KTP_PID=""
    mkdir -p "$KTP_CG"
    expect_eq "$rc" 1 "exit status"
    expect_file_match "$KTP_LOG" "error: cgroup $KTP_CG was removed and not created again within"
}

# second_start ARGS...: a ktproxy on the same cgroup that must fail at once.
second_start() {
    local rc=0
    in_cli timeout 10 "$KTPROXY" --cgroup "$KTP_CG" "$@" >/dev/null 2>"$KTP_TMP/second.err" || rc=$?
    expect_eq "$rc" 1 "exit status of the second instance"
    expect_eq "$(wc -l < "$KTP_TMP/second.err")" 1 "its error lines"
    expect_file_match "$KTP_TMP/second.err" "already served by ktproxy pid $KTP_PID "
}

test_second_instance_with_its_own_control_socket_is_refused() {
    trap kill_left_instances EXIT
    start_ktproxy --fail-closed || fail "ktproxy did not start"
    second_start --fail-closed --control "$KTP_TMP/other.sock"
    # The first one still has its hooks: its conn lines go on.
    curl_via_ktproxy "$KTP_CG" "$KTP_LOG"
    stop_ktproxy || true
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

test_failed_second_start_does_not_let_cleanup_unpin_the_owner() {
    trap kill_left_instances EXIT
    start_ktproxy --fail-closed --control "$KTP_TMP/ctl.sock" || fail "ktproxy did not start"
    # Would fail late (control socket in use); must fail before any pin.
    second_start --fail-closed --control "$KTP_TMP/ctl.sock"
    in_cli "$KTPROXY" cleanup 2>"$KTP_TMP/cleanup.err" || fail "cleanup"
    expect_file_match "$KTP_TMP/cleanup.err" "belongs to running ktproxy pid $KTP_PID"
    [ -e "$PIN_APP/link_ktp_connect4" ] || fail "cleanup unpinned the running instance"
    local port
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$KTP_LOG" | head -1 | cut -d: -f2)
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$port" || fail "the listener outlived ktproxy"
    local rc=0
    in_app timeout 5 curl -sS --max-time 4 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null || rc=$?
    expect_eq "$rc" 7 "curl exit status after the owner died (fail-closed)"
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

test_cgroups_x_slash_y_and_x_underscore_y_get_their_own_pins() {
    trap kill_left_instances EXIT
    local a="$KTP_CG_PARENT/x/y" b="$KTP_CG_PARENT/x_y"
    mkdir -p "$a" "$b"
    KTP_EXTRA_CLEANUP+=("rmdir $a $KTP_CG_PARENT/x $b")
    KTP_CG_ARG="$a" start_ktproxy --fail-closed --control "$KTP_TMP/a.sock" || fail "ktproxy on x/y did not start"
    local pid_a="$KTP_PID" log_a="$KTP_LOG"
    KTP_CG_ARG="$b" start_ktproxy --fail-closed --control "$KTP_TMP/b.sock" || fail "ktproxy on x_y did not start"
    local pid_b="$KTP_PID" log_b="$KTP_LOG"
    expect_no_file_match "$log_b" "took over" "the x_y instance's log"
    [ -d "$PINS/ktp-test-${KTP_ID}_x_y" ] || fail "no pin dir for x/y"
    [ -d "$PINS/ktp-test-${KTP_ID}_x%5Fy" ] || fail "no pin dir for x_y"
    curl_via_ktproxy "$a" "$log_a"
    curl_via_ktproxy "$b" "$log_b"
    KTP_PID="$pid_b" KTP_LOG="$log_b" stop_ktproxy || true
    KTP_PID="$pid_a" KTP_LOG="$log_a" stop_ktproxy || true
    in_cli "$KTPROXY" cleanup --cgroup "$a" 2>/dev/null && in_cli "$KTPROXY" cleanup --cgroup "$b" 2>/dev/null || fail "cleanup"
    rmdir "$a" "$KTP_CG_PARENT/x" "$b"
}

test_fail_closed_on_a_systemd_like_cgroup_name_with_dots() {
    trap kill_left_instances EXIT
    # bpffs refuses names with a dot: "app.service" could not be pinned.
    local cg="$KTP_CG_PARENT/app.service"
    mkdir -p "$cg"
    KTP_EXTRA_CLEANUP+=("rmdir $cg")
    KTP_CG_ARG="$cg" start_ktproxy --fail-closed || fail "ktproxy --fail-closed on app.service did not start"
    [ -d "$PINS/ktp-test-${KTP_ID}_app%2Eservice" ] || fail "no pin dir for app.service"
    curl_via_ktproxy "$cg" "$KTP_LOG"
    local port rc=0
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$KTP_LOG" | head -1 | cut -d: -f2)
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$port" || fail "the listener outlived ktproxy"
    in_cg "$cg" timeout 5 curl -sS --max-time 4 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null || rc=$?
    expect_eq "$rc" 7 "curl exit status while ktproxy is dead"
    in_cli "$KTPROXY" cleanup --cgroup "$cg" 2>/dev/null || fail "cleanup"
    [ ! -e "$PINS/ktp-test-${KTP_ID}_app%2Eservice" ] || fail "pins left after cleanup"
    rmdir "$cg"
}

test_fail_closed_restart_with_other_max_conns_never_goes_direct() {
    trap kill_left_instances EXIT
    start_ktproxy --fail-closed --max-conns 2048 || fail "ktproxy did not start"
    local log1="$KTP_LOG" before
    before=$(wc -l < "$NGINX_LOG")
    # Requests from the cgroup all along the restart (bounded: 300 x 0.05s+),
    # from source ports 30000-30999: below the ephemeral range that
    # ktproxy's own sockets get theirs from (32768-60999), and kept by a
    # redirected connect, so a request that reached nginx from one of them
    # went there directly.
    in_app bash -c "for i in \$(seq 300); do curl -s --max-time 2 --local-port 30000-30999 -o /dev/null http://$KTP_SRV4/; sleep 0.05; done" &
    local loop=$!
    echo "$loop" >> "$KTP_TMP/loops.pid"
    sleep 1
    local port
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log1" | head -1 | cut -d: -f2)
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$port" || true
    start_ktproxy --fail-closed --max-conns 4096 || fail "ktproxy did not restart with --max-conns 4096"
    expect_file_match "$KTP_LOG" 'took over pinned hooks'
    expect_file_match "$KTP_LOG" "pinned map .*map_ktp_handoff does not fit this instance \\(2048 entries instead of 4096\\)"
    sleep 1
    kill "$loop" 2>/dev/null; wait "$loop" 2>/dev/null
    curl_via_ktproxy "$KTP_CG" "$KTP_LOG"
    stop_ktproxy || true
    # Every request nginx saw came from one of ktproxy's sockets, none
    # straight from curl's ports. (A via= port in the logs would not do: a
    # connection cut by the kill -9 reached nginx but was never logged.)
    local p direct=0 seen=0
    for p in $(tail -n +"$((before + 1))" "$NGINX_LOG" | cut -d' ' -f2); do
        seen=$((seen + 1))
        [ "$p" -ge 30000 ] && [ "$p" -le 30999 ] && direct=$((direct + 1))
    done
    [ "$seen" -gt 2 ] || fail "only $seen requests reached nginx"
    expect_eq "$direct" 0 "requests that reached nginx without ktproxy (of $seen)"
    in_cli "$KTPROXY" cleanup --cgroup "$KTP_CG" 2>/dev/null || fail "cleanup"
}

test_port_shared_through_so_reuseport_is_refused() {
    trap kill_left_instances EXIT
    ktp_bg in_cli python3 -c '
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 15123)); s.listen(16); time.sleep(60)'
    local other=$!
    ktp_wait_port "$KTP_CLI" 15123 || fail "the python listener did not start"
    local rc=0
    in_cli timeout 10 "$KTPROXY" --cgroup "$KTP_CG" --port 15123 --workers 2 >/dev/null 2>"$KTP_TMP/reuse.err" || rc=$?
    kill "$other" 2>/dev/null
    expect_eq "$rc" 1 "exit status"
    expect_eq "$(wc -l < "$KTP_TMP/reuse.err")" 1 "error lines"
    expect_file_match "$KTP_TMP/reuse.err" "^ktproxy: error: 127\\.0\\.0\\.1:15123: another socket listens there too \\(SO_REUSEPORT, pid $other\\)"
}

test_listen_addresses_nothing_connects_to_are_refused() {
    trap kill_left_instances EXIT
    local a rc
    for a in "--listen4 0.0.0.0" "--listen4 224.0.0.1" "--listen4 255.255.255.255" "--listen6 ::" "--listen6 ff02::1"; do
        rc=0
        # shellcheck disable=SC2086
        in_cli timeout 10 "$KTPROXY" --cgroup "$KTP_CG" $a >/dev/null 2>"$KTP_TMP/addr.err" || rc=$?
        expect_eq "$rc" 2 "exit status of $a"
        expect_eq "$(wc -l < "$KTP_TMP/addr.err")" 1 "error lines of $a"
        expect_file_match "$KTP_TMP/addr.err" "^ktproxy: error: --listen[46]: .* is (the unspecified address|multicast|broadcast)"
    done
}

test_status_names_the_listeners_once() {
    trap kill_left_instances EXIT
    start_ktproxy --control "$KTP_TMP/ctl.sock" || fail "ktproxy did not start"
    local st
    st=$("$KTPROXY" status --control "$KTP_TMP/ctl.sock" | head -1)
    expect_match "$st" "^ktproxy pid $KTP_PID cgroup $KTP_CG listening 127\\.0\\.0\\.1:[0-9]+ \\[::1\\]:[0-9]+ up " "status line"
    stop_ktproxy || true
}

test_connection_reset_before_accept_logs_its_client() {
    trap kill_left_instances EXIT
    start_ktproxy --workers 1 || fail "ktproxy did not start"
    kill -STOP "$KTP_PID"
    local lport
    lport=$(in_app timeout 5 python3 -c "
import socket, struct
s = socket.create_connection(('$KTP_SRV4', 80), timeout=3)
print(s.getsockname()[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
s.close()")
    kill -CONT "$KTP_PID"
    [ -n "$lport" ] || fail "the client did not connect"
    wait_log "$KTP_LOG" "conn client=" || fail "no conn line"
    expect_file_match "$KTP_LOG" "conn client=127\\.0\\.0\\.1:$lport "
    stop_ktproxy || true
}

run_all_tests "$0"
finish
