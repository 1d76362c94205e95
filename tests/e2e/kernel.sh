#!/bin/bash
# End-to-end tests of the kernel hooks' edge cases: a connection's original
# destination outliving the app's socket (fire-and-forget senders), --max-conns
# as a real guarantee, a squatter on a dead --fail-closed listener, sockets
# bound to a device, IPv6 link-local destinations, and a fixed source port.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

# Debian's python3: a squatter runs as nobody, who cannot reach a python
# installed under /root.
PY=/usr/bin/python3
KTP_LOAD="${KTP_LOAD:-$KTP_BUILD/tools/ktp-load}"
[ -x "$KTP_LOAD" ] || ktp_die "$KTP_LOAD not built"

ktp_topo_up
start_nginx
start_echo 9000
ktp_bg in_srv "$KTP_LOAD" echo --listen "$KTP_SRV4:9100" --timeout 600
ktp_wait_port "$KTP_SRV" 9100
# A sink: every connection's bytes are appended to one file.
SINK="$KTP_TMP/sink.txt"
: > "$SINK"
ktp_bg in_srv socat -u "TCP-LISTEN:9200,reuseaddr,fork,backlog=4096" "OPEN:$SINK,creat,append"
ktp_bg in_srv "$PY" "$(cd "$(dirname "$0")" && pwd)/udp_tools.py" echo "$KTP_SRV4" 7000
ktp_wait_port "$KTP_SRV" 9200
IF_CLI="kv${KTP_ID}c"
IF_SRV="kv${KTP_ID}s"

# senders N PREFIX: N times connect(), send("PREFIX-i\n"), close() to the
# sink, as fire-and-forget clients (syslog or graphite over TCP) do.
senders() {
    in_app "$PY" - "$KTP_SRV4" "$1" "$2" <<'PY'
import socket, sys
host, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    s = socket.create_connection((host, 9200), timeout=10)
    s.sendall(f"{prefix}-{i}\n".encode())
    s.close()
PY
}

# sink_count PREFIX N: waits (at most 20s) until N lines of PREFIX arrived,
# prints how many did.
sink_count() {
    local got=0
    for _ in $(seq 200); do
        got=$(grep -c "^$1-[0-9]*\$" "$SINK" || true)
        [ "$got" -ge "$2" ] && break
        sleep 0.1
    done
    echo "$got"
}

test_fire_and_forget_sends_survive_a_stopped_ktproxy() {
    local got
    # The app connects, sends and closes while ktproxy cannot accept: the
    # app's socket is gone long before ktproxy asks for the destination.
    kill -STOP "$KTP_PID"
    senders 20 STOP || { kill -CONT "$KTP_PID"; fail "a sender failed while ktproxy was stopped"; }
    sleep 1
    kill -CONT "$KTP_PID"
    got=$(sink_count STOP 20)
    expect_eq "$got" 20 "lines that reached the server after SIGCONT (log: $(grep -c 'no original destination' "$KTP_LOG") without a destination)"
}

test_fire_and_forget_sends_in_parallel_all_arrive() {
    local got pids=() p
    for p in 1 2 3 4; do
        senders 500 "PAR$p" &
        pids+=("$!")
    done
    for p in "${pids[@]}"; do wait "$p" || fail "a sender failed"; done
    for p in 1 2 3 4; do
        got=$(sink_count "PAR$p" 500)
        expect_eq "$got" 500 "lines of sender $p that reached the server"
    done
    expect_eq "$(ktp_counter orig_dst_missed)" 0 "SO_ORIGINAL_DST questions without an answer"
    for _ in $(seq 40); do
        [ "$(ktp_counter live_tuples)" = 0 ] && break
        sleep 0.25
    done
    expect_eq "$(ktp_counter live_tuples)" 0 "entries left in the hand-off map"
}

# bound_udp HOST PORT DEV: one datagram from a socket bound to DEV; prints
# the echo, or the errno's name.
bound_udp() {
    in_app timeout 10 "$PY" - "$@" <<'PY'
import errno, socket, sys
host, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
s.settimeout(5)
try:
    s.sendto(b"bound-udp", (host, port))
    print(s.recvfrom(200)[0].decode().split("|")[0])
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PY
}

# bound_tcp HOST DEV: a TCP echo over IPv4 (HOST) and IPv6 (fd00:201::2) on
# port 9000 from sockets bound to DEV; per family the reply, or the errno
# name of a connect that failed.
bound_tcp() {
    in_app timeout 10 "$PY" - "$@" <<'PY'
import errno, socket, sys
host, dev = sys.argv[1], sys.argv[2]
for fam, addr in ((socket.AF_INET, host), (socket.AF_INET6, "fd00:201::2")):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    s.settimeout(5)
    try:
        s.connect((addr, 9000))
        s.sendall(b"bound\n")
        print(s.recv(64).decode().strip(), end=" ")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)), end=" ")
PY
}

# Without --fail-closed (fail-open), a device-bound socket whose destination
# the rules proxy goes out directly (ktproxy's loopback listener is not
# reachable through the device), counted skipped_bound: TCP and UDP.
test_device_bound_sockets_connect_directly() {
    local out before
    before=$(ktp_counter skipped_bound)
    expect_eq "$(bound_udp "$KTP_SRV4" 7000 "$IF_CLI")" "bound-udp" "UDP echo on a device-bound socket"
    out=$(bound_tcp "$KTP_SRV4" "$IF_CLI") || fail "a device-bound client failed: $out"
    expect_eq "$out" "bound bound " "echo replies over IPv4 and IPv6 on device-bound sockets"
    # curl's --interface if!NAME is SO_BINDTODEVICE, as VRF-aware apps do.
    out=$(in_app timeout 10 curl -sS --max-time 5 --interface "if!$IF_CLI" -o /dev/null -w '%{http_code}' \
        "http://[$KTP_SRV6]/") || fail "curl --interface if!$IF_CLI failed"
    expect_eq "$out" 200 "curl bound to $IF_CLI"
    [ "$(ktp_counter skipped_bound)" -ge $((before + 4)) ] || fail "skipped_bound did not count the bound connects"
    expect_eq "$(ktp_counter refused_bound)" 0 "refused_bound without --fail-closed"
}

test_ipv6_link_local_destination_keeps_its_scope() {
    local ll out
    # Link-local addresses go through DAD; wait until the server's is usable.
    for _ in $(seq 100); do
        ll=$(ip -n "$KTP_SRV" -6 -o addr show dev "$IF_SRV" scope link -tentative | awk '{print $4}' | cut -d/ -f1)
        [ -n "$ll" ] && ip -n "$KTP_CLI" -6 -o addr show dev "$IF_CLI" scope link -tentative | grep -q fe80 && break
        sleep 0.1
    done
    [ -n "$ll" ] || fail "no link-local address on $IF_SRV"
    out=$(in_app timeout 10 "$PY" - "$ll%$IF_CLI" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], 9000), timeout=5)
s.sendall(b"scoped\n")
print(s.recv(64).decode().strip(), s.getpeername()[0])
PY
    ) || fail "the link-local client failed: $out"
    expect_eq "${out%\%*}" "scoped $ll" "echo and peer over a link-local address"
}

# An AF_INET6 socket speaking IPv4 (a v4-mapped destination) is sent to the
# IPv4 listener; the listener check must look that one up.
test_v4_mapped_destination_on_an_ipv6_socket_goes_through_ktproxy() {
    local out
    out=$(in_app timeout 10 "$PY" - "::ffff:$KTP_SRV4" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(5)
s.connect((sys.argv[1], 9000))
s.sendall(b"mapped\n")
print(s.recv(64).decode().strip(), "%s:%d" % s.getpeername()[:2])
PY
    ) || fail "the client failed: $out"
    expect_eq "$out" "mapped ::ffff:$KTP_SRV4:9000" "echo and peer"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9000 .*c2s=7 s2c=7" || fail "ktproxy did not relay the v4-mapped connection"
}

# Two sockets bound to one source port: the second's redirected connect
# collides with the first's 4-tuple to the listener (a documented limit), and
# its later `direct` connect must not report the failed one's peer.
test_fixed_source_port_first_connect_works_and_no_stale_peer() {
    local out
    out=$(in_app timeout 20 "$PY" - "$KTP_CLI4" "$KTP_SRV4" <<'PY'
import errno, socket, sys
me, srv = sys.argv[1], sys.argv[2]
def bound():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((me, 47001))
    s.settimeout(5)
    return s
a = bound()
a.connect((srv, 9000))
a.sendall(b"first\n")
res = [a.recv(64).decode().strip(), str(a.getpeername()[1])]
b = bound()
try:
    b.connect((srv, 9100))
    res.append("second-connected")
except OSError as e:
    res.append(errno.errorcode.get(e.errno, str(e.errno)))
    b.connect((srv, 80))
    b.sendall(b"GET / HTTP/1.0\r\n\r\n")
    res.append(b.recv(12).decode())
    res.append("%s:%d" % b.getpeername())
print(" ".join(res))
PY
    ) || fail "the client failed: $out"
    expect_eq "$out" "first 9000 EADDRNOTAVAIL HTTP/1.1 200 $KTP_SRV4:80" "fixed source port"
}

# Connections held up to just below --max-conns: every app socket keeps its
# peer (getpeername) and every one relays.
test_max_conns_is_a_guarantee_for_held_connections() {
    local out
    stop_suite_ktproxy
    KTP_E2E_ARGS="" start_ktproxy --max-conns 1024 --workers 1 || fail "ktproxy --max-conns 1024 did not start"
    # Two processes on two CPUs, one with few connections: an LRU map keeps
    # free entries per CPU, and evicted live ones long before it was full.
    out=$(in_app timeout 120 "$PY" - "$KTP_SRV4" 1000 <<'PY'
import os, resource, socket, sys
host, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
cpus = sorted(os.sched_getaffinity(0))
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
res_r, res_w = os.pipe()
pid = os.fork()
child = pid == 0
os.sched_setaffinity(0, {cpus[-1] if child else cpus[0]})
mine = n // 10 if child else n - n // 10
socks = [socket.create_connection((host, 9100), timeout=20) for _ in range(mine)]
if child:
    os.write(ready_w, b"r")
    os.read(go_r, 1)
else:
    os.read(ready_r, 1)  # all n are open now
    os.write(go_w, b"g")
wrong = sum(1 for s in socks if s.getpeername() != (host, 9100))
ok = 0
for i, s in enumerate(socks):
    msg = f"conn-{i}\n".encode()
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = s.recv(64)
            if not b:
                break
            got += b
        ok += got == msg
    except OSError:
        pass
if child:
    os.write(res_w, f"{wrong} {ok}".encode())
    os._exit(0)
cw, co = map(int, os.read(res_r, 64).split())
os.waitpid(pid, 0)
print(f"wrong_peer={wrong + cw} echoed={ok + co}")
PY
    ) || fail "the client failed: $out"
    expect_eq "$out" "wrong_peer=0 echoed=1000" "1000 connections held with --max-conns 1024"
    expect_eq "$(ktp_counter map_full)" 0 "map_full"
    stop_ktproxy TERM || true
}

stop_suite_ktproxy() {
    if [ -n "$KTP_PID" ] && [ ! -e "$KTP_LOG.rc" ]; then
        stop_ktproxy TERM || true
    fi
}

# Pins of this suite's fail-closed instances (its cgroup's name is in them;
# not another suite's, whose id may start with the same digits), removed
# without `ktproxy cleanup`, which would also take those of other suites'
# instances killed on purpose at this moment.
remove_my_pins() {
    local d
    for d in /sys/fs/bpf/ktproxy/*"ktp-test-${KTP_ID}"[!0-9]*; do
        [ -e "$d" ] && rm -rf "$d"
    done
    rm -f /run/ktproxy/*"ktp-test-${KTP_ID}"[!0-9]*.pin-owner
}
KTP_EXTRA_CLEANUP+=(remove_my_pins)

test_fail_closed_port_squatter_gets_no_connection() {
    local port=15077 rc squat
    stop_suite_ktproxy
    KTP_E2E_ARGS="" start_ktproxy --fail-closed --port "$port" || fail "ktproxy --fail-closed did not start"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through ktproxy"
    stop_ktproxy KILL || true
    ktp_wait_port_gone "$KTP_CLI" "$port" || fail "ktproxy's listener on port $port outlived it"
    # nobody takes the dead listener's port (no privilege needed above 1024).
    squat="$KTP_TMP/squatter.out"
    : > "$squat"
    chmod 666 "$squat"
    cat > "$KTP_TMP/squat.py" <<'PY'
import socket, sys
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
s.settimeout(30)
with open(out, "a") as f:
    try:
        while True:
            c, _ = s.accept()
            f.write("accepted " + repr(c.recv(200)) + "\n")
            f.flush()
    except socket.timeout:
        pass
PY
    ktp_bg in_cli setpriv --reuid=nobody --regid=nogroup --clear-groups "$PY" "$KTP_TMP/squat.py" "$port" "$squat"
    local squatter="${KTP_PIDS[-1]}"
    ktp_wait_port "$KTP_CLI" "$port" || fail "the squatter did not listen"
    rc=0
    in_app timeout 5 curl -sS --max-time 3 -o /dev/null -H 'Authorization: Bearer secret' "http://$KTP_SRV4/" \
        2>"$KTP_TMP/squat.err" || rc=$?
    expect_eq "$rc" 7 "curl exit status with a squatter on the port (7: could not connect; $(cat "$KTP_TMP/squat.err"))"
    kill "$squatter" 2>/dev/null
    expect_eq "$(cat "$squat")" "" "what the squatter accepted"
    ktp_wait_port_gone "$KTP_CLI" "$port" || fail "the squatter's port did not close"
    # The restarted instance shares the pinned counters: the refusal counted.
    KTP_E2E_ARGS="" start_ktproxy --fail-closed --port "$port" || fail "ktproxy did not restart"
    [ "$(ktp_counter no_listener)" -ge 1 ] || fail "no_listener did not count the refused connect"
    expect_eq "$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$KTP_SRV4/")" 200 "curl after restart"
    stop_ktproxy TERM || true
    remove_my_pins
}

# With --fail-closed, a device-bound socket whose destination the rules
# proxy is refused (EPERM), TCP v4 and v6 and UDP, and counted
# refused_bound: passing it would leak what the user asked to keep behind
# the proxy. A direct rule still lets it out.
test_device_bound_sockets_are_refused_with_fail_closed() {
    local out before
    stop_suite_ktproxy
    KTP_E2E_ARGS="" start_ktproxy --fail-closed --rule "cidr=$KTP_SRV4 port=80 direct" ||
        fail "ktproxy --fail-closed did not start"
    before=$(ktp_counter refused_bound)
    out=$(bound_tcp "$KTP_SRV4" "$IF_CLI") || fail "the device-bound client failed: $out"
    expect_eq "$out" "EPERM EPERM " "connects of device-bound sockets to a proxied destination, IPv4 and IPv6"
    expect_eq "$(bound_udp "$KTP_SRV4" 7000 "$IF_CLI")" "EPERM" "a device-bound socket's datagram to a proxied destination"
    # A direct rule is unchanged: the bound socket goes out to it.
    out=$(in_app timeout 10 curl -sS --max-time 5 --interface "if!$IF_CLI" -o /dev/null -w '%{http_code}' \
        "http://$KTP_SRV4/") || fail "curl --interface if!$IF_CLI to a direct destination failed"
    expect_eq "$out" 200 "curl bound to $IF_CLI, direct rule"
    expect_eq "$(( $(ktp_counter refused_bound) - before ))" 3 "refused_bound"
    # Unbound sockets are relayed as ever.
    expect_eq "$(bound_udp "$KTP_SRV4" 7000 "")" "bound-udp" "UDP echo on an unbound socket"
    stop_ktproxy TERM || true
    remove_my_pins
}

start_ktproxy --rule "cidr=$KTP_SRV4 port=80 direct" || ktp_die "ktproxy did not start"
run_all_tests "$0"
finish
