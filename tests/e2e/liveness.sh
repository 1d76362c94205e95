#!/bin/bash
# End-to-end liveness of the relay: connections that stall must not freeze
# the others, a connection still moving bytes is not idle, and a destination
# that dies silently is noticed and passed on to the app as a reset. Every
# test starts its own ktproxy with the flags it needs.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_echo 9100
CLI_RMEM=$(in_cli sysctl -n net.ipv4.tcp_rmem)
CLI_WMEM=$(in_cli sysctl -n net.ipv4.tcp_wmem)

# Every test starts from a clean slate: no ktproxy left by a test that
# failed half-way (tests run in subshells, so only the pid files say which),
# the client host's socket buffer sizes as they were.
fresh_start() {
    local f p
    for f in "$KTP_TMP"/ktproxy.*.log.pid; do
        [ -e "$f" ] || continue
        p=$(cat "$f")
        [ -s "${f%.pid}.rc" ] && continue
        kill "$p" 2>/dev/null
        for _ in $(seq 200); do [ -s "${f%.pid}.rc" ] && break; sleep 0.05; done
    done
    in_cli sysctl -qw net.ipv4.tcp_rmem="$CLI_RMEM" net.ipv4.tcp_wmem="$CLI_WMEM"
}

# How ktproxy's connections ended, counted, for failure messages.
conn_ends() { grep -o 'end=[a-z]*\( reason="[^"]*"\)\?' "$KTP_LOG" | sort | uniq -c | tr '\n' ';'; }

# One line exchanged with the echo server through ktproxy; prints "ok" and the
# seconds it took, or the error. At most $1 seconds.
echo_once() {
    in_app timeout "$1" python3 -c '
import socket, sys, time
t = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], 9100), timeout=float(sys.argv[2]))
    s.sendall(b"ping\n")
    got = b""
    while len(got) < 5:
        d = s.recv(5 - len(got))
        if not d:
            break
        got += d
    print("ok" if got == b"ping\n" else "got %r" % got, "%.2f" % (time.monotonic() - t))
except Exception as e:
    print("error", e)
' "$KTP_SRV4" "$1" 2>&1 || echo "no reply within $1s"
}

test_non_reading_connections_beyond_the_pool_do_not_freeze_the_others() {
    # 40 connections to a server that sends without end, from a client that
    # never reads, through a ktproxy with 16 buffers (pipes) and one worker:
    # each of them stalls with a chunk its client does not take. An echo
    # exchange made then must still complete (it waited forever while the
    # stalled directions held every buffer). A liveness check: the bound is
    # generous, the exchange takes milliseconds.
    fresh_start
    ktp_bg in_srv socat -U "TCP-LISTEN:9400,reuseaddr,fork,backlog=128" OPEN:/dev/zero 2>/dev/null
    ktp_wait_port "$KTP_SRV" 9400
    # Small socket buffers on the client host: the stalls come after a few
    # KiB each instead of megabytes.
    local mode out
    in_cli sysctl -qw net.ipv4.tcp_rmem="4096 16384 65536" net.ipv4.tcp_wmem="4096 16384 65536"
    for mode in splice buffers; do
        KTP_E2E_ARGS="" start_ktproxy --relay "$mode" --buffers 16 --workers 1 \
            || fail "ktproxy --relay $mode did not start"
        rm -f "$KTP_TMP/stalled.out"
        in_app timeout 60 python3 -c '
import socket, sys, time
conns = [socket.create_connection((sys.argv[1], 9400), timeout=10) for _ in range(40)]
time.sleep(1.5)  # every one of them stalls meanwhile
print("held", len(conns), flush=True)
time.sleep(50)
' "$KTP_SRV4" > "$KTP_TMP/stalled.out" 2>&1 &
        local holder=$!
        for _ in $(seq 200); do
            grep -q '^held' "$KTP_TMP/stalled.out" && break
            kill -0 "$holder" 2>/dev/null || break
            sleep 0.1
        done
        grep -q '^held 40' "$KTP_TMP/stalled.out" || fail "--relay $mode: 40 stalled connections never opened: $(cat "$KTP_TMP/stalled.out")"
        out=$(echo_once 5)
        echo "    --relay $mode: echo with 40 stalled connections: $out" >&2
        kill "$holder" 2>/dev/null
        wait "$holder" 2>/dev/null
        expect_match "$out" '^ok ' "--relay $mode: echo exchange while 40 connections (more than --buffers 16) are stalled"
        stop_ktproxy >&2 || fail "--relay $mode: ktproxy exit status $?"
    done
    fresh_start
}

test_a_slow_steady_reader_is_not_idle_and_a_silent_connection_is() {
    # --idle-timeout 2; the reader takes 1 KiB every 0.25 s from a small
    # receive buffer, so 24 KiB take 6 s (three times the timeout) with
    # bytes moving all along, mostly out of ktproxy's socket buffer with no
    # relay operation completing. It must get every byte, and the connection
    # end with EOF. A connection that then sits silent is still cut.
    local f="$KTP_TMP/slow.bin" want got
    fresh_start
    head -c 24576 /dev/urandom > "$f"
    want=$(sha256sum < "$f" | cut -d' ' -f1)
    ktp_bg in_srv socat -u "OPEN:$f" "TCP-LISTEN:9500,reuseaddr,fork"
    ktp_wait_port "$KTP_SRV" 9500
    KTP_E2E_ARGS="" start_ktproxy --idle-timeout 2 || fail "ktproxy did not start"
    got=$(in_app timeout 60 python3 -c '
import hashlib, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
s.connect((sys.argv[1], 9500))
h = hashlib.sha256()
while True:
    time.sleep(0.25)
    try:
        d = s.recv(1024)
    except OSError as e:
        print("error", e)
        sys.exit(1)
    if not d:
        break
    h.update(d)
print(h.hexdigest())
' "$KTP_SRV4" 2>&1)
    expect_eq "$got" "$want" "sha256 of 24 KiB read slowly through --idle-timeout 2 (ends: $(conn_ends))"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9500 .*end=eof" 5 || fail "the slow reader's connection did not end with eof: $(conn_ends)"
    # Silent after one exchange: cut as idle.
    in_app timeout 20 python3 -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9100))
s.sendall(b"hi\n")
s.recv(3)
s.settimeout(15)
try:
    s.recv(1)
except OSError:
    pass
' "$KTP_SRV4" >/dev/null 2>&1
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9100 .*end=idle" 5 || fail "a silent connection was not cut as idle: $(conn_ends)"
    stop_ktproxy >&2 || fail "ktproxy exit status $?"
}

test_a_dead_destination_is_passed_on_to_the_app_as_a_reset() {
    # Two relayed connections, then the server host stops answering (a
    # blackhole route for the client host: nothing comes back, no ICMP).
    # One stays quiet: ktproxy's keepalive probes go unanswered. The other
    # sends a line: ktproxy's copy of it goes unacknowledged (the user
    # timeout). With short settings both upstream sockets fail, and the app
    # gets a reset on each instead of waiting forever; the conn lines say
    # why.
    fresh_start
    KTP_E2E_ARGS="" start_ktproxy --keepalive 1,1,2 --user-timeout 3 || fail "ktproxy did not start"
    rm -f "$KTP_TMP/dark"
    in_app timeout 40 python3 -c '
import os, socket, sys, threading, time
conns = []
for _ in range(2):
    s = socket.create_connection((sys.argv[1], 9100))
    s.sendall(b"hi\n")
    s.recv(3)
    conns.append(s)
print("up", flush=True)
for _ in range(100):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.1)
conns[1].sendall(b"into the dark\n")
res = [None, None]
def wait(i):
    s = conns[i]
    s.settimeout(30)
    t = time.monotonic()
    try:
        d = s.recv(1)
        res[i] = "eof" if not d else "data"
    except ConnectionResetError:
        res[i] = "reset %.1f" % (time.monotonic() - t)
    except socket.timeout:
        res[i] = "hang"
    except OSError as e:
        res[i] = "error %s" % e
ts = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
[t.start() for t in ts]
[t.join() for t in ts]
print("quiet:", res[0], "sending:", res[1], flush=True)
' "$KTP_SRV4" "$KTP_TMP/dark" > "$KTP_TMP/dead.out" 2>&1 &
    local app=$!
    for _ in $(seq 100); do
        grep -q '^up' "$KTP_TMP/dead.out" && break
        sleep 0.1
    done
    grep -q '^up' "$KTP_TMP/dead.out" || fail "no relayed connection: $(cat "$KTP_TMP/dead.out")"
    in_srv ip route add blackhole "$KTP_CLI4/32" || fail "blackhole route on the server host"
    touch "$KTP_TMP/dark"
    wait "$app"
    in_srv ip route del blackhole "$KTP_CLI4/32" || fail "removing the blackhole route"
    local out
    out=$(tail -1 "$KTP_TMP/dead.out")
    echo "    the app after the server host went dark: $out" >&2
    expect_match "$out" '^quiet: reset [0-9.]+ sending: reset [0-9.]+$' \
        "what the app saw once its destination stopped answering"
    for _ in $(seq 50); do
        [ "$(grep -c "orig=$KTP_SRV4:9100 .*end=dead .*reason=\"destination stopped answering" "$KTP_LOG")" -ge 2 ] && break
        sleep 0.1
    done
    [ "$(grep -c "orig=$KTP_SRV4:9100 .*end=dead .*reason=\"destination stopped answering" "$KTP_LOG")" -eq 2 ] \
        || fail "not two conn lines with end=dead: $(conn_ends)"
    stop_ktproxy >&2 || fail "ktproxy exit status $?"
}

test_a_refused_address_fails_the_next_connects_so_apps_fall_back() {
    # A name with two addresses: the first refuses (nothing listens on that
    # port there), the second serves. Direct, curl falls back to the second.
    # Through ktproxy the first connect succeeds (to ktproxy) and is then
    # reset: curl gives up, unless the reset comes before it checks the
    # connect (a race; printed, not asserted). ktproxy remembers the refusal in the connect
    # hooks' negative cache, so from then on, for --dead-cache seconds, the
    # app's connect to that address fails with ECONNREFUSED as it would
    # directly, and curl moves on to the next address.
    fresh_start
    local dead=10.201.0.3 out i
    in_srv ip addr add "$dead/24" dev "kv${KTP_ID}s" || fail "second address on the server host"
    ktp_bg in_srv python3 -m http.server --bind "$KTP_SRV4" 8081 >/dev/null 2>&1
    ktp_wait_port "$KTP_SRV" 8081
    KTP_E2E_ARGS="" start_ktproxy --dead-cache 30 || fail "ktproxy did not start"
    out=$(in_app curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{remote_ip}' \
        --resolve "svc.test:8081:$dead,$KTP_SRV4" "http://svc.test:8081/" 2>&1)
    echo "    first curl, before ktproxy knew the address was dead: $out" >&2
    wait_log "$KTP_LOG" "orig=$dead:8081 .*end=refused" 5 || fail "ktproxy did not log the refusal: $(conn_ends)"
    out=$(in_app python3 -c '
import socket, sys
try:
    socket.create_connection((sys.argv[1], 8081), timeout=5)
    print("connected")
except OSError as e:
    print(type(e).__name__)
' "$dead")
    expect_eq "$out" ConnectionRefusedError "a connect to the refused address, made after the refusal"
    out=$(in_app curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{remote_ip}' \
        --resolve "svc.test:8081:$dead,$KTP_SRV4" "http://svc.test:8081/" 2>&1)
    expect_eq "$out" "200 $KTP_SRV4" "curl with a dead first address, after ktproxy met it"
    # Go's net.Dial the same way: the name from /etc/hosts (bound over in a
    # mount namespace of its own), two addresses, the dead one first.
    printf '%s svc.test\n%s svc.test\n' "$dead" "$KTP_SRV4" > "$KTP_TMP/hosts"
    mkdir -p "$KTP_TMP/go"
    (cd "$(dirname "$0")/goclient" && HOME="$KTP_TMP/go" GOCACHE="$KTP_TMP/go/cache" GO111MODULE=off CGO_ENABLED=0 \
        timeout 300 go build -o "$KTP_TMP/goclient" main.go) || fail "building the Go client failed"
    out=$(in_app unshare -m sh -c 'mount --bind "$1" /etc/hosts && exec "$2" http://svc.test:8081/' \
        sh "$KTP_TMP/hosts" "$KTP_TMP/goclient" 2>&1)
    expect_match "$out" "^200 [0-9]+ $KTP_SRV4:8081\$" "the Go client with a dead first address, after ktproxy met it"
    stop_ktproxy >&2 || fail "ktproxy exit status $?"
    in_srv ip addr del "$dead/24" dev "kv${KTP_ID}s"
}

test_bad_liveness_flags_give_one_line_and_nonzero_exit() {
    local args want rc
    while IFS='|' read -r want args; do
        rc=0
        # shellcheck disable=SC2086
        in_cli timeout 10 "$KTPROXY" --cgroup "$KTP_CG" $args >/dev/null 2>"$KTP_TMP/err" || rc=$?
        [ "$rc" -ne 0 ] || fail "'$args' exited 0"
        [ "$rc" -ne 124 ] || fail "'$args' hung"
        expect_eq "$(wc -l < "$KTP_TMP/err")" 1 "stderr lines of '$args'"
        expect_file_match "$KTP_TMP/err" "^ktproxy: .*$want"
    done <<'EOF2'
INTVL without CNT|--keepalive 30,10
not IDLE|--keepalive fast
out of range|--keepalive 0,10,3
out of range|--keepalive 30,10,500
more than three|--keepalive 1,2,3,4
user-timeout|--user-timeout -1
dead-cache|--dead-cache never
EOF2
}

run_all_tests "$0"
finish
