#!/bin/bash
# End-to-end tests of containers: processes of the intercepted cgroup that
# live in their own network namespace, made the way Docker makes them (a
# netns behind a Linux bridge with NAT, a cgroup of their own). ktproxy
# opens a listener inside each such namespace; connects there are redirected
# to it, and the upstream connection leaves from the container's namespace
# (or ktproxy's with --egress host). A container's UDP and DNS go through
# ktproxy too: a UDP relay socket in its namespace, the DNS forwarder, direct
# flows leaving from the container (dnsmasq, dante and an echo server on the
# server host).
#
#   ktproxy's host = $KTP_CLI: bridge kb$ID 172.31.0.1/24, MASQUERADE toward
#   the server host ($KTP_SRV, nginx and an echo server).
#   container X = netns ktp${ID}kX, eth0 172.31.0.N on the bridge, cgroup
#   $KTP_CG/X (intercepted) or $KTP_CG_PARENT/X (not), an init process
#   (sleep) as runc's, and a server on its own 127.0.0.1:8080.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx
start_echo 9000
TOOLS="$(cd "$(dirname "$0")" && pwd)/udp_tools.py"
ktp_bg in_srv /usr/bin/python3 "$TOOLS" echo "$KTP_SRV4" 7000 "$KTP_SRV4" 7003 "$KTP_SRV6" 7000
# The resolver the containers ask (it logs each query and whom from), and
# dante (SOCKS5 with UDP ASSOCIATE) for proxied names and datagrams.
command -v dnsmasq >/dev/null || ktp_die "dnsmasq not installed (dnsmasq-base; scripts/setup installs it)"
DNSMASQ_LOG="$KTP_TMP/dnsmasq.log"
: > "$DNSMASQ_LOG"
ktp_bg in_srv dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address="$KTP_SRV4" --port=53 --user=root --log-queries=extra --log-facility="$DNSMASQ_LOG" \
    --pid-file="$KTP_TMP/dnsmasq.pid" --host-record="web.test,$KTP_SRV4" --host-record="secret.test,$KTP_SRV4" \
    --host-record="blocked.test,$KTP_SRV4" --host-record="late.test,$KTP_SRV4" --host-record="hidden.test,$KTP_SRV4"
DANTE_DIR="$KTP_TMP/dante"
ktp_dante_setup "$DANTE_DIR" "$KTP_SRV4" 1081
# dante is given the name (ATYP 3) of a connection whose process asked for
# it: it resolves it from its own hosts file, asking no resolver.
printf '127.0.0.1 localhost\n%s secret.test\n' "$KTP_SRV4" > "$KTP_TMP/hosts.dante"
ktp_dante_run "$DANTE_DIR" "$KTP_TMP/hosts.dante"
ktp_wait_port "$KTP_SRV" 1081
for _ in $(seq 50); do grep -q "started" "$DNSMASQ_LOG" && break; sleep 0.1; done
DANTE="dante=socks5://ktpuser:s3cret@$KTP_SRV4:1081"
# What a container's processes that resolve by name see (a mount namespace
# of their own binds these over /etc): the server host's dnsmasq.
printf 'nameserver %s\noptions attempts:1 timeout:5\n' "$KTP_SRV4" > "$KTP_TMP/resolv.ctr.conf"
printf '127.0.0.1 localhost\n' > "$KTP_TMP/hosts.ctr"
BR="kb${KTP_ID}"
CTRS=()  # names of the containers made, for cleanup

(cd "$(dirname "$0")/goclient" && HOME="$KTP_TMP/go" GOCACHE="$KTP_TMP/go/cache" GO111MODULE=off CGO_ENABLED=0 \
    timeout 300 go build -o "$KTP_TMP/goclient" main.go) || ktp_die "building the Go client failed"

# The host side of the containers' network, inside the test's namespaces only.
ip -n "$KTP_CLI" link add "$BR" type bridge
ip -n "$KTP_CLI" addr add 172.31.0.1/24 dev "$BR"
ip -n "$KTP_CLI" link set "$BR" up
in_cli sysctl -qw net.ipv4.ip_forward=1
in_cli iptables -t nat -A POSTROUTING -s 172.31.0.0/24 ! -o "$BR" -j MASQUERADE ||
    ktp_die "iptables MASQUERADE in $KTP_CLI failed"

ctr_ns() { echo "ktp${KTP_ID}k$1"; }
ctr_cg() { if [ "$2" = in ]; then echo "$KTP_CG/$1"; else echo "$KTP_CG_PARENT/$1"; fi; }

# ctr_start NAME N in|out [lo]: a container with address 172.31.0.N (or only
# a loopback with "lo"), its cgroup inside the intercepted one or beside it,
# its init and its local server. Prints nothing; its init's pid is in
# $KTP_TMP/NAME.init.
ctr_start() {
    local name=$1 n=$2 where=$3 net=${4:-bridge} ns cg
    ns=$(ctr_ns "$name")
    cg=$(ctr_cg "$name" "$where")
    CTRS+=("$name:$where")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    if [ "$net" = bridge ]; then
        ip -n "$KTP_CLI" link add "kc${KTP_ID}$name" type veth peer name eth0 netns "$ns"
        ip -n "$KTP_CLI" link set "kc${KTP_ID}$name" master "$BR" up
        ip -n "$ns" addr add "172.31.0.$n/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via 172.31.0.1
    fi
    mkdir -p "$cg"
    date +%s%N > "$KTP_TMP/$name.t0"
    # As runc's init: in its namespace first, then moved into its cgroup.
    nsenter --net="/run/netns/$ns" sh -c 'echo $$ > "$1/cgroup.procs" && exec sleep 600' sh "$cg" &
    echo $! > "$KTP_TMP/$name.init"
    KTP_PIDS+=("$!")
    disown $!
    # Its own server on its own loopback: answers with the peer it sees.
    [ -z "${CTR_NO_SERVER:-}" ] || return 0
    nsenter --net="/run/netns/$ns" sh -c 'echo $$ > "$1/cgroup.procs" && exec socat -T5 \
        TCP4-LISTEN:8080,bind=0.0.0.0,reuseaddr,fork SYSTEM:"echo peer=\$SOCAT_PEERADDR; cat >/dev/null"' sh "$cg" &
    KTP_PIDS+=("$!")
    disown $!
    ktp_wait_port "$ns" 8080
}

# ctr_stop NAME: every process of the container killed, its netns deleted.
ctr_stop() {
    local name=$1 where cg ns
    where=$(printf '%s\n' "${CTRS[@]}" | sed -n "s/^$name://p" | tail -1)
    cg=$(ctr_cg "$name" "$where")
    ns=$(ctr_ns "$name")
    if [ -d "$cg" ]; then
        echo 1 > "$cg/cgroup.kill" || true
        for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.05; done
    fi
    ip -n "$KTP_CLI" link del "kc${KTP_ID}$name" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
# Whatever a test left (its CTRS lived in its subshell): every container
# cgroup and namespace of this run.
cleanup_ctrs() {
    local cg ns
    for cg in "$KTP_CG"/*/ "$KTP_CG_PARENT"/*/; do
        cg=${cg%/}
        [ -d "$cg" ] && [ "$cg" != "$KTP_CG" ] && [ "$cg" != "$KTP_CG_PROXY" ] || continue
        echo 1 > "$cg/cgroup.kill"
        for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.05; done
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^ktp${KTP_ID}k"); do
        ip netns del "$ns"
    done
}
KTP_EXTRA_CLEANUP+=(cleanup_ctrs)

# in_ctr NAME CMD...: CMD inside the container (its cgroup and netns).
in_ctr() {
    local name=$1 where
    shift
    where=$(printf '%s\n' "${CTRS[@]}" | sed -n "s/^$name://p" | tail -1)
    # Namespace first, then the cgroup (as `docker exec` does): a process of
    # the cgroup is never seen in the namespace it came from.
    nsenter --net="/run/netns/$(ctr_ns "$name")" sh -c 'cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"' \
        sh "$(ctr_cg "$name" "$where")" "$@"
}

# Entries of this ktproxy's per-namespace listener map.
netns_map_entries() {
    # The map ids of ktproxy's fds (fdinfo), then the one with that name
    # (the kernel keeps 15 characters of it).
    local id
    id=$(sed -n 's/^map_id:\s*//p' "/proc/$KTP_PID"/fdinfo/* 2>/dev/null | sort -un | while read -r m; do
        bpftool -j map show id "$m" | jq -r 'select(.name | startswith("ktp_netns_list")) | .id'
    done | head -1)
    [ -n "$id" ] || { echo "?"; return; }
    bpftool -j map dump id "$id" | jq length
}

# ctr_and_ktproxy NAME N LINE: container NAME (address .N) in the cgroup,
# ktproxy started, and its log line announcing the container's namespace
# ("...: listening on LINE") waited for; both stopped on exit.
ctr_and_ktproxy() {
    trap "stop_ktproxy; ctr_stop $1" EXIT
    ctr_start "$1" "$2" in
    start_ktproxy --log-level info || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*\): listening on $3" ||
        { cat "$KTP_LOG" >&2; fail "no line announcing container $1's namespace (listening on $3)"; }
}

test_container_in_the_cgroup_is_proxied_in_its_own_namespace() {
    ctr_and_ktproxy a 2 "127.0.0.1:[0-9]+"
    local port
    port=$(sed -nE 's/.*container namespace [0-9]+ \(cgroup [^)]*\): listening on 127.0.0.1:([0-9]+).*/\1/p' "$KTP_LOG" | head -1)
    nsenter --net="/run/netns/$(ctr_ns a)" ss -Hltn "sport = :$port" | grep -q LISTEN ||
        fail "the listener 127.0.0.1:$port is not inside the container's namespace"
    local out
    out=$(in_ctr a curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl from the container failed"
    expect_eq "$out" "hello from the server host" "curl through ktproxy"
    wait_log "$KTP_LOG" "conn client=127.0.0.1:[0-9]+ orig=$KTP_SRV4:80 .* end=eof pid=[0-9]+ comm=curl" ||
        { tail -5 "$KTP_LOG" >&2; fail "ktproxy did not relay the container's curl"; }
    out=$(in_ctr a "$KTP_TMP/goclient" "http://$KTP_SRV4/" 2>&1) || fail "Go client from the container failed: $out"
    expect_match "$out" "^200 " "Go client through ktproxy"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .* comm=goclient" ||
        { tail -5 "$KTP_LOG" >&2; fail "ktproxy did not relay the container's Go client"; }
    # Its own loopback is its own: reached directly, never relayed.
    out=$(in_ctr a socat -T3 - TCP:127.0.0.1:8080 </dev/null)
    expect_match "$out" "peer=127.0.0.1" "the container's own 127.0.0.1 server"
    expect_no_file_match "$KTP_LOG" "orig=127.0.0.1:8080" "ktproxy log"
    # Egress from the container's namespace: a neighbour on the bridge sees
    # the container's own address, as without ktproxy.
    ctr_start n 9 out
    out=$(in_ctr a socat -T3 - TCP:172.31.0.9:8080 </dev/null)
    expect_match "$out" "peer=172.31.0.2" "source address seen by the neighbour (egress container)"
    wait_log "$KTP_LOG" "orig=172.31.0.9:8080 " || fail "the connect to the neighbour was not relayed"
    ctr_stop n
}

# veth_capture NAME FILE: tcpdump of port 53 and dante's port on container
# NAME's veth (the bridge side) into FILE, started and given time to
# listen; its pid in $CAP_PID.
veth_capture() {
    nsenter --net="/run/netns/$KTP_CLI" tcpdump -i "kc${KTP_ID}$1" -n -U --immediate-mode -w "$2" \
        "port 53 or port 1081" 2>"$2.err" &
    CAP_PID=$!
    KTP_PIDS+=("$CAP_PID")
    for _ in $(seq 40); do [ -s "$2" ] && break; sleep 0.05; done
    sleep 0.3
}
# capture_count FILE [FILTER]: the capture stopped, its packets (port 53, or
# FILTER) counted.
capture_count() {
    sleep 0.3
    kill "$CAP_PID" 2>/dev/null
    wait "$CAP_PID" 2>/dev/null
    tcpdump -r "$1" -n "${2:-port 53}" 2>/dev/null | wc -l
}

test_container_dns_goes_through_the_forwarder_and_leaves_from_the_container() {
    # A direct name: dig inside the container asks dnsmasq; ktproxy's
    # forwarder sees the query (logged), the query leaves from the
    # container's own namespace (its veth sees it) and the answer comes from
    # the resolver's address. status shows the namespace's UDP relay.
    trap "stop_ktproxy; ctr_stop u" EXIT
    ctr_start u 4 in
    start_ktproxy --log-level debug || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/u\): listening on .* UDP relay on 127.0.0.1:[0-9]+" ||
        { cat "$KTP_LOG" >&2; fail "no UDP relay announced in container u"; }
    local cap="$KTP_TMP/u.pcap" out n
    veth_capture u "$cap"
    out=$(in_ctr u dig +time=3 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "web\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig's answer"
    expect_match "$out" "SERVER: $KTP_SRV4#53" "dig's server"
    ! grep -q "unexpected source" <<<"$out" || fail "dig: a reply from an unexpected source: $out"
    wait_log "$KTP_LOG" "dns [^ ]+\[[0-9]+\] web\.test type 1 to $KTP_SRV4:53: direct" ||
        { tail -5 "$KTP_LOG" >&2; fail "ktproxy's forwarder did not see the container's query"; }
    expect_file_match "$DNSMASQ_LOG" "query\[A\] web.test from $KTP_CLI4" "dnsmasq log"
    n=$(capture_count "$cap")
    [ "$n" -ge 2 ] || cat "$cap.err" >&2
    [ "$n" -ge 2 ] || fail "the direct query did not leave from the container's namespace ($n port-53 packets on its veth)"
    local cookie t
    cookie=$(sed -nE 's/.*container namespace ([0-9]+) \(cgroup [^)]*\/u\): listening.*/\1/p' "$KTP_LOG" | head -1)
    t=$("$KTPROXY" status --control "/run/ktproxy/ktp-test-${KTP_ID}_app.sock") || fail "status failed"
    expect_match "$t" "container netns $cookie cgroup .*/app/u listening 127.0.0.1:[0-9]+ udp relay 127.0.0.1:[0-9]+" \
        "the container's UDP relay in status"
    t=$("$KTPROXY" status --control "/run/ktproxy/ktp-test-${KTP_ID}_app.sock" --json) || fail "status --json failed"
    expect_match "$(jq -r --arg c "$cookie" '.netns_listeners[] | select(.netns == ($c | tonumber)) | .udp' <<<"$t" | sort -u)" \
        "^127\.0\.0\.1:[0-9]+$" "the container's UDP relay in status --json"
    # The relay socket is inside the container's namespace.
    local port
    port=$(sed -nE 's/.*\/u\): listening .* UDP relay on 127.0.0.1:([0-9]+).*/\1/p' "$KTP_LOG" | head -1)
    nsenter --net="/run/netns/$(ctr_ns u)" ss -Huan "sport = :$port" | grep -q . ||
        fail "no UDP relay socket on port $port inside the container's namespace"
}

test_container_dns_proxied_name_never_leaves_the_container_and_blocked_is_refused() {
    # A name routed to dante: asked of dnsmasq through dante (dnsmasq sees
    # dante's side), no port-53 packet on the container's veth; the answer
    # is remembered: the container's curl to that name goes through dante
    # by the domain rule. A blocked name is refused, dnsmasq never asked.
    trap "stop_ktproxy; ctr_stop v" EXIT
    ctr_start v 5 in
    start_ktproxy --log-level debug --upstream "$DANTE" --rule 'domain=secret.test proxy=dante' \
        --rule 'domain=blocked.test block' || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/v\): listening on .* UDP relay on" || fail "no UDP relay in container v"
    local cap="$KTP_TMP/v.pcap" out
    veth_capture v "$cap"
    out=$(in_ctr v dig +time=5 +tries=1 @"$KTP_SRV4" secret.test A 2>&1) || fail "dig failed: $out"
    expect_match "$out" "secret\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig's answer"
    out=$(in_ctr v dig +time=3 +tries=1 @"$KTP_SRV4" blocked.test A 2>&1)
    expect_match "$out" "status: REFUSED" "dig of a blocked name"
    expect_eq "$(capture_count "$cap")" 0 "port-53 packets on the container's veth"
    # The query reached dante from the container (egress container), as
    # its connections do.
    [ "$(capture_count "$cap" "tcp port 1081")" -gt 0 ] ||
        fail "the proxied query did not reach dante from the container's namespace"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] secret.test from $KTP_SRV4" "dnsmasq log (query via dante)"
    expect_no_file_match "$DNSMASQ_LOG" "secret.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
    expect_no_file_match "$DNSMASQ_LOG" "blocked.test" "dnsmasq log (a blocked name asked)"
    # Name memory: the address curl resolved (itself, through the
    # forwarder) carries the name; the domain rule sends it to dante.
    out=$(in_ctr v unshare -m sh -c "mount --bind '$KTP_TMP/resolv.ctr.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.ctr' /etc/hosts && exec curl -sS --max-time 5 http://secret.test/" 2>&1) ||
        { grep -E "secret|conn |warn|error" "$KTP_LOG" >&2; fail "curl by name from the container failed: $out"; }
    expect_eq "$out" "hello from the server host" "curl by name"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*route=dante .*domain=secret.test" ||
        { grep "orig=$KTP_SRV4:80" "$KTP_LOG" >&2; fail "the container's connection to secret.test did not go through dante"; }
}

test_container_ipv6_udp_connected_and_unconnected() {
    # IPv6 inside a container: the relay socket on its [::1], flows named
    # by the app's port in that namespace (a connected socket's filed
    # through the container's own socket table); the bridge gets an IPv6
    # subnet with NAT66 toward the server host, inside the test's namespaces.
    trap "stop_ktproxy; ctr_stop x" EXIT
    ctr_start x 11 in
    local ns out
    ns=$(ctr_ns x)
    ip -n "$KTP_CLI" addr add fd31::1/64 dev "$BR" nodad 2>/dev/null
    in_cli sysctl -qw net.ipv6.conf.all.forwarding=1
    in_cli ip6tables -t nat -C POSTROUTING -s fd31::/64 ! -o "$BR" -j MASQUERADE 2>/dev/null ||
        in_cli ip6tables -t nat -A POSTROUTING -s fd31::/64 ! -o "$BR" -j MASQUERADE || fail "ip6tables MASQUERADE"
    ip -n "$ns" addr add fd31::11/64 dev eth0 nodad
    ip -n "$ns" -6 route add default via fd31::1
    out=$(in_ctr x /usr/bin/python3 "$TOOLS" client "$KTP_SRV6" 7000 3 unconnected) ||
        fail "the container does not reach the server over IPv6 without ktproxy: $out"
    start_ktproxy --log-level info || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/x\): listening on .* UDP relay on 127.0.0.1:[0-9]+ and \[::1\]:[0-9]+" ||
        { grep "container namespace" "$KTP_LOG" >&2; fail "no IPv6 UDP relay in container x"; }
    out=$(in_ctr x /usr/bin/python3 "$TOOLS" client "$KTP_SRV6" 7000 1000 unconnected) || fail "unconnected: $out"
    expect_match "$out" "ok=1000 lost=0 bad=0 badsrc=0" "IPv6 unconnected echo from the container"
    out=$(in_ctr x /usr/bin/python3 "$TOOLS" client "$KTP_SRV6" 7000 1000 connected) || fail "connected: $out"
    expect_match "$out" "ok=1000 lost=0 bad=0 badsrc=0 peer=$KTP_SRV6:7000" "IPv6 connected echo from the container"
    [ "$(grep -c "udp python3\[[0-9]*\] .* -> \[$KTP_SRV6\]:7000 via direct: 1000 datagrams out, 1000 in" "$KTP_LOG")" = 2 ] ||
        wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> \[$KTP_SRV6\]:7000 via direct: 1000 datagrams out, 1000 in" 10 ||
        fail "ktproxy did not relay the container's IPv6 datagrams"
}

test_container_dns_over_tcp_goes_through_the_forwarder() {
    # dig +tcp from a container: the forwarder reads the query (direct: the
    # exchange leaves from the container's veth; proxied: through dante, no
    # port-53 packet on the veth, dnsmasq asked from dante's side).
    trap "stop_ktproxy; ctr_stop t" EXIT
    ctr_start t 13 in
    start_ktproxy --log-level debug --upstream "$DANTE" --rule 'domain=hidden.test proxy=dante' ||
        fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/t\): listening on .* UDP relay on" || fail "no UDP relay in container t"
    local cap="$KTP_TMP/t.pcap" out n
    veth_capture t "$cap"
    out=$(in_ctr t dig +tcp +time=3 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || fail "dig +tcp: $out"
    expect_match "$out" "web\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig +tcp's answer"
    wait_log "$KTP_LOG" "dns [^ ]+\[[0-9]+\] web\.test type 1 to $KTP_SRV4:53: direct" ||
        fail "ktproxy's forwarder did not read the container's query over TCP"
    n=$(capture_count "$cap")
    [ "$n" -gt 0 ] || fail "the direct exchange over TCP did not leave from the container's namespace"
    veth_capture t "$cap"
    out=$(in_ctr t dig +tcp +time=5 +tries=1 @"$KTP_SRV4" hidden.test A 2>&1) || fail "dig +tcp of a proxied name: $out"
    expect_match "$out" "hidden\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig +tcp's answer"
    expect_eq "$(capture_count "$cap")" 0 "port-53 packets on the container's veth (proxied name over TCP)"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] hidden.test from $KTP_SRV4" "dnsmasq log (query via dante)"
    expect_no_file_match "$DNSMASQ_LOG" "hidden.test from $KTP_CLI4" "dnsmasq log (a direct query leaked)"
}

test_container_fake_mode_name_reaches_the_upstream_by_name() {
    # --dns-mode fake: the container's query for a proxied name is answered
    # with a fake address (dnsmasq never asked), and its curl to that name
    # goes through dante, which is given the name.
    trap "stop_ktproxy; ctr_stop k" EXIT
    ctr_start k 12 in
    start_ktproxy --log-level debug --dns-mode fake --upstream "$DANTE" --rule 'domain=secret.test proxy=dante' ||
        fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/k\): listening on .* UDP relay on" || fail "no UDP relay in container k"
    local before out
    before=$(grep -c "secret.test" "$DNSMASQ_LOG")
    out=$(in_ctr k dig +short +time=3 +tries=1 @"$KTP_SRV4" secret.test A 2>&1) || fail "dig: $out"
    expect_match "$out" "^198\.1[89]\." "the fake answer"
    out=$(in_ctr k unshare -m sh -c "mount --bind '$KTP_TMP/resolv.ctr.conf' /etc/resolv.conf &&
        mount --bind '$KTP_TMP/hosts.ctr' /etc/hosts && exec curl -sS --max-time 5 http://secret.test/" 2>&1) ||
        fail "curl by a fake address from the container: $out"
    expect_eq "$out" "hello from the server host" "curl by name (fake mode)"
    wait_log "$KTP_LOG" "orig=198\.1[89]\.[0-9.]+:80 .*route=dante .*domain=secret.test" ||
        fail "the container's connection to the fake address did not go through dante by name"
    expect_eq "$(grep -c "secret.test" "$DNSMASQ_LOG")" "$before" "queries for secret.test that reached dnsmasq"
}

test_container_loopback_resolver_goes_through_the_forwarder() {
    # Docker's embedded resolver: 127.0.0.11 in the container's namespace,
    # served by dockerd (outside the container's cgroup), which asks the
    # host's servers. A dnsmasq stands in for it. A name routed direct is
    # handed to it from inside the container's namespace; a proxied name
    # goes through dante to --dns-resolver and never reaches it.
    CTRDNS_PID=""
    trap 'stop_ktproxy; [ -z "$CTRDNS_PID" ] || kill "$CTRDNS_PID" 2>/dev/null; ctr_stop r' EXIT
    ctr_start r 10 in
    local ns cdns="$KTP_TMP/ctrdns.log" out
    ns=$(ctr_ns r)
    ip -n "$ns" addr add 127.0.0.11/8 dev lo
    : > "$cdns"
    ktp_bg nsenter --net="/run/netns/$ns" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address=127.0.0.11 --port=53 --user=root --server="$KTP_SRV4" --log-queries \
        --log-facility="$cdns" --pid-file="$KTP_TMP/ctrdns.pid"
    # This test's own background process: the suite's cleanup never sees
    # pids a test's subshell started.
    CTRDNS_PID=${KTP_PIDS[-1]}
    for _ in $(seq 50); do grep -q "started" "$cdns" && break; sleep 0.1; done
    start_ktproxy --log-level debug --upstream "$DANTE" --rule 'domain=hidden.test proxy=dante' \
        --dns-resolver "$KTP_SRV4" || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/r\): listening on .* UDP relay on" || fail "no UDP relay in container r"
    out=$(in_ctr r dig +time=3 +tries=1 @127.0.0.11 web.test A 2>&1) || fail "dig of the loopback resolver: $out"
    expect_match "$out" "web\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig's answer"
    ! grep -q "unexpected source" <<<"$out" || fail "dig: a reply from an unexpected source: $out"
    wait_log "$KTP_LOG" "dns [^ ]+\[[0-9]+\] web\.test type 1 to 127.0.0.11:53: direct" ||
        fail "ktproxy's forwarder did not see the query to the container's loopback resolver"
    expect_file_match "$cdns" "query\[A\] web.test from 127\." "the container's resolver's log"
    out=$(in_ctr r dig +time=5 +tries=1 @127.0.0.11 hidden.test A 2>&1) || fail "dig of a proxied name: $out"
    expect_match "$out" "hidden\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig's answer"
    expect_file_match "$DNSMASQ_LOG" "query\[A\] hidden.test from $KTP_SRV4" "dnsmasq log (query via dante)"
    expect_no_file_match "$cdns" "hidden.test" "the container's resolver's log (a proxied name leaked to it)"
}

test_container_udp_echo_direct_and_through_dante() {
    # Datagrams from the container: direct (from its namespace: the server
    # sees the bridge's NAT, the client host), and through dante's UDP
    # ASSOCIATE (the server sees dante's address); checksums, none lost.
    trap "stop_ktproxy; ctr_stop w" EXIT
    ctr_start w 6 in
    start_ktproxy --log-level info --upstream "$DANTE" --rule 'port=7003 proxy=dante' || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/w\): listening on .* UDP relay on" || fail "no UDP relay in container w"
    local out before
    before=$(ktp_counter udp_redirected)
    out=$(in_ctr w /usr/bin/python3 "$TOOLS" client "$KTP_SRV4" 7000 2000 connected) || fail "direct echo: $out"
    expect_match "$out" "ok=2000 lost=0 bad=0 badsrc=0 peer=$KTP_SRV4:7000" "direct echo from the container"
    local cap="$KTP_TMP/w.pcap"
    veth_capture w "$cap"
    out=$(in_ctr w /usr/bin/python3 "$TOOLS" client "$KTP_SRV4" 7003 2000 unconnected) || fail "echo through dante: $out"
    # The association (its control connection) left from the container.
    [ "$(capture_count "$cap" "tcp port 1081")" -gt 0 ] ||
        fail "the UDP association did not reach dante from the container's namespace"
    expect_match "$out" "ok=2000 lost=0 bad=0 badsrc=0" "echo through dante from the container"
    [ "$(ktp_counter udp_redirected)" -gt "$before" ] || fail "the container's datagrams were not redirected"
    wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> $KTP_SRV4:7003 via proxy=dante: 2000 datagrams out, 2000 in" 30 ||
        fail "no closing log line of the flow through dante"
    wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> $KTP_SRV4:7000 via direct: 2000 datagrams out, 2000 in" 30 ||
        fail "no closing log line of the direct flow"
    # What the echo server saw, one datagram each way.
    out=$(in_ctr w /usr/bin/python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'hi', ('$KTP_SRV4', 7003)); print(s.recvfrom(200)[0].decode())") || fail "one datagram through dante: $out"
    expect_match "$out" "^hi\|from=$KTP_SRV4:[0-9]+$" "what the server saw through dante"
}

test_container_outside_the_cgroup_is_not_proxied() {
    trap 'stop_ktproxy; ctr_stop b' EXIT
    ctr_start b 3 out
    start_ktproxy --log-level info || fail "ktproxy did not start"
    local out
    out=$(in_ctr b curl -sS --max-time 5 "http://$KTP_SRV4:80/") || fail "curl from the other container failed"
    expect_eq "$out" "hello from the server host" "direct curl"
    sleep 0.3
    expect_no_file_match "$KTP_LOG" "orig=$KTP_SRV4:80" "ktproxy log"
    expect_no_file_match "$KTP_LOG" "container namespace" "ktproxy log"
}

test_container_started_after_ktproxy_is_proxied_from_its_first_connect() {
    trap 'stop_ktproxy; ctr_stop c; ctr_stop d' EXIT
    # No container at start; the relay drops root (the helper makes the
    # later container's sockets).
    start_ktproxy --log-level info || fail "ktproxy did not start"
    local t0 t1 init
    CTR_NO_SERVER=1 ctr_start c 4 in
    t0=$(cat "$KTP_TMP/c.t0")
    init=$(cat "$KTP_TMP/c.init")
    for _ in $(seq 1000); do
        grep -q "container namespace [0-9]* (cgroup [^)]*): listening" "$KTP_LOG" && break
        sleep 0.005
    done
    t1=$(date +%s%N)
    grep -q "container namespace [0-9]* (cgroup [^)]*): listening" "$KTP_LOG" ||
        { cat "$KTP_LOG" >&2; fail "no listener for the container started after ktproxy"; }
    ktp_log "container c: listener seen in the log $(( (t1 - t0) / 1000000 )) ms after its init started (pid $init)"
    local out
    out=$(in_ctr c curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl from the new container failed"
    expect_eq "$out" "hello from the server host" "curl"
    # The conn line is written once ktproxy has closed both sides, which
    # can be just after curl is done.
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=curl" || fail "the curl was not relayed"
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" 1 "relayed curls"
    ctr_start_no_init d 5
    t0=$(date +%s%N)
    first_connect_never_direct d 2
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/d\): listening" 5 || fail "no listener for container d"
    t1=$(date +%s%N)
    ktp_log "container d: first connect to listener $(( (t1 - t0) / 1000000 )) ms"
}

# ctr_start_no_init NAME N: a container's namespace on the bridge and an
# empty cgroup (in the intercepted one), no process yet.
ctr_start_no_init() {
    local name=$1 n=$2
    ip netns add "$(ctr_ns "$name")"; ip -n "$(ctr_ns "$name")" link set lo up
    CTRS+=("$name:in")
    ip -n "$KTP_CLI" link add "kc${KTP_ID}$name" type veth peer name eth0 netns "$(ctr_ns "$name")"
    ip -n "$KTP_CLI" link set "kc${KTP_ID}$name" master "$BR" up
    ip -n "$(ctr_ns "$name")" addr add "172.31.0.$n/24" dev eth0
    ip -n "$(ctr_ns "$name")" link set eth0 up
    ip -n "$(ctr_ns "$name")" route add default via 172.31.0.1
    mkdir -p "$KTP_CG/$name"
}

# first_connect_never_direct NAME TOTAL: the container's very first process
# joins its cgroup and connects at once, microseconds later (before ktproxy
# can have met its namespace); then curl tries until a request gets
# through. The first connect must be refused or relayed, never passed
# (issue 14: "never a leak"); TOTAL: curls relayed in the log by then.
first_connect_never_direct() {
    local name=$1 total=$2 first
    first=$(nsenter --net="/run/netns/$(ctr_ns "$name")" python3 -c "
import os, socket, sys
open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()))
s = socket.socket()
s.settimeout(5)
try:
    s.connect(('$KTP_SRV4', 80))
except ConnectionRefusedError:
    print('refused'); sys.exit(0)
s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
print('connected', s.recv(4096).decode(errors='replace').splitlines()[0])" "$KTP_CG/$name") || fail "first connect of $name"
    ktp_log "container $name: first process's connect: $first"
    in_ctr "$name" sh -c 'for i in $(seq 100); do curl -sS --max-time 5 "$0" 2>/dev/null && exit 0; sleep 0.02; done; exit 1' \
        "http://$KTP_SRV4/" >/dev/null || fail "container $name never got through"
    for _ in $(seq 40); do
        [ "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" -ge "$total" ] && break
        sleep 0.05
    done
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" "$total" "relayed curls"
    case "$first" in
        refused) ;;
        connected*) wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=python3" 2 ||
            fail "container $name's first connect went direct (not in ktproxy's log)" ;;
        *) fail "first connect of $name: $first" ;;
    esac
}

# first_datagram_never_direct NAME: the container's very first process joins
# its cgroup and sends a DNS query at once (before ktproxy can have met its
# namespace): it must be refused or relayed (the forwarder logs it), never
# passed; then dig from it gets through ktproxy.
first_datagram_never_direct() {
    local name=$1 first before
    before=$(grep -c "query\[A\] late.test" "$DNSMASQ_LOG")
    first=$(nsenter --net="/run/netns/$(ctr_ns "$name")" python3 -c "
import os, socket, struct, sys
open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()))
q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + b'\x04late\x04test\x00' + struct.pack('>HH', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
try:
    s.sendto(q, ('$KTP_SRV4', 53))
except ConnectionRefusedError:
    print('refused'); sys.exit(0)
try:
    print('answered', os.getpid(), s.recvfrom(512)[1][0])
except socket.timeout:
    print('timeout')" "$KTP_CG/$name") || fail "first datagram of $name"
    ktp_log "container $name: first process's datagram: $first"
    case "$first" in
        refused) ;;
        answered*) wait_log "$KTP_LOG" "dns python3\[$(cut -d' ' -f2 <<<"$first")\] late.test type 1" 3 ||
            fail "container $name's first datagram went direct (not in ktproxy's log)" ;;
        timeout) expect_eq "$(grep -c "query\[A\] late.test" "$DNSMASQ_LOG")" "$before" "queries that reached dnsmasq" ;;
        *) fail "first datagram of $name: $first" ;;
    esac
    in_ctr "$name" sh -c 'for i in $(seq 50); do dig +time=2 +tries=1 +short @"$0" late.test A | grep -q . && exit 0;
        sleep 0.05; done; exit 1' "$KTP_SRV4" || fail "container $name's dig never got an answer"
    wait_log "$KTP_LOG" "dns [^ ]+\[[0-9]+\] late.test type 1 to $KTP_SRV4:53: direct" 3 ||
        fail "container $name's dig was not seen by the forwarder"
}

test_first_datagram_of_a_new_container_is_relayed_or_refused_never_passed() {
    trap 'stop_ktproxy; ctr_stop d' EXIT
    start_ktproxy --log-level debug || fail "ktproxy did not start"
    ctr_start_no_init d 5
    first_datagram_never_direct d
}

test_first_datagram_of_a_new_container_with_fail_closed() {
    trap 'stop_ktproxy; rm -rf /sys/fs/bpf/ktproxy/"ktp-test-${KTP_ID}"_*; ctr_stop d' EXIT
    start_ktproxy --log-level debug --fail-closed || fail "ktproxy did not start"
    ctr_start_no_init d 5
    first_datagram_never_direct d
}

test_first_connect_of_a_new_container_is_refused_not_passed_with_fail_closed() {
    # The pins it leaves (its hooks stay attached after it stops) are
    # removed as `ktproxy cleanup` would, but only this run's.
    trap 'stop_ktproxy; rm -rf /sys/fs/bpf/ktproxy/"ktp-test-${KTP_ID}"_*; ctr_stop d' EXIT
    start_ktproxy --log-level info --fail-closed || fail "ktproxy did not start"
    ctr_start_no_init d 5
    first_connect_never_direct d 1
}

test_container_root_with_dockers_capabilities_cannot_opt_out_by_mark() {
    # Docker's default capability set gives a container's root CAP_NET_RAW
    # in the container's namespace (owned by the initial user namespace),
    # which is enough to set SO_MARK. Putting ktproxy's --mark on a socket
    # must not take it past ktproxy: it is relayed, and a block rule blocks it.
    trap 'stop_ktproxy; ctr_stop k' EXIT
    ctr_start k 14 in
    start_ktproxy --log-level info --rule "cidr=$KTP_SRV4 port=9003 block" || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/k\): listening" || fail "no listener for container k"
    local out caps=chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,net_raw,sys_chroot,mknod,audit_write,setfcap
    out=$(in_ctr k setpriv --bounding-set "-all,+${caps//,/,+}" /usr/bin/python3 - "$KTP_SRV4" <<'PY'
import errno, socket, sys
host = sys.argv[1]
cap_eff = int([l for l in open("/proc/self/status") if l.startswith("CapEff:")][0].split()[1], 16)
assert cap_eff & (1 << 13) and not cap_eff & (1 << 12), "want CAP_NET_RAW without CAP_NET_ADMIN: %x" % cap_eff
res = []
for port in (80, 9003):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x6b74)  # ktproxy's default --mark
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        res.append("%d:%s" % (port, s.recv(12).decode()))
    except OSError as e:
        res.append("%d:%s" % (port, errno.errorcode.get(e.errno, str(e.errno))))
print(" ".join(res))
PY
    ) || fail "the container's marked client failed: $out"
    expect_eq "$out" "80:HTTP/1.1 200 9003:EPERM" "marked connects from the container's root (80 proxied, 9003 blocked)"
    wait_log "$KTP_LOG" "conn client=127.0.0.1:[0-9]+ orig=$KTP_SRV4:80 .*comm=python3" ||
        fail "the marked connect was not relayed by ktproxy"
    [ "$(ktp_counter foreign_mark)" -ge 2 ] || fail "foreign_mark did not count the container's marked connects"
}

test_dead_destination_of_a_container_leaves_the_hosts_connects_alone() {
    # The dead-destination cache (--dead-cache) is per network namespace: a
    # destination ktproxy could not reach from a container's namespace (its
    # own routes: unreachable here) fails that container's next connects at
    # once, and the host's connects to it are still relayed.
    trap 'stop_ktproxy; ctr_stop x' EXIT
    ctr_start x 15 in
    ip -n "$(ctr_ns x)" route add unreachable "$KTP_SRV4/32" || fail "unreachable route in container x"
    start_ktproxy --log-level info --dead-cache 30 || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/x\): listening" || fail "no listener for container x"
    local echo_py out
    echo_py='
import errno, socket, sys
try:
    s = socket.create_connection((sys.argv[1], 9000), timeout=5)
    s.sendall(b"e"); s.settimeout(5)
    print("echo" if s.recv(1) == b"e" else "closed")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))'
    # First: to ktproxy's listener, then reset (ktproxy met EHOSTUNREACH).
    in_ctr x /usr/bin/python3 -c "$echo_py" "$KTP_SRV4" >/dev/null
    wait_log "$KTP_LOG" "conn client=127.0.0.1:[0-9]+ orig=$KTP_SRV4:9000 " || fail "ktproxy did not log container x's connect"
    out=$(in_ctr x /usr/bin/python3 -c "$echo_py" "$KTP_SRV4")
    expect_eq "$out" EHOSTUNREACH "container x's next connect (the dead cache, its namespace)"
    out=$(in_app /usr/bin/python3 -c "$echo_py" "$KTP_SRV4")
    expect_eq "$out" echo "the host app's connect to the same destination"
    wait_log "$KTP_LOG" "conn client=$KTP_CLI4:[0-9]+ orig=$KTP_SRV4:9000 |conn client=127.0.0.1:[0-9]+ orig=$KTP_SRV4:9000 .*end=eof" ||
        fail "the host app's connect was not relayed"
}

test_dropped_relay_serves_containers_met_at_start_and_later() {
    # The relay drops root whether or not containers are there: their
    # listeners and sockets come from the helper, the relay never enters a
    # namespace (setns is refused to it by seccomp).
    trap 'stop_ktproxy; ctr_stop g; ctr_stop h' EXIT
    ctr_start h 8 in
    KTPROXY_PRIV_SELFTEST=1 start_ktproxy --log-level info || fail "ktproxy did not start"
    expect_no_file_match "$KTP_LOG" "keeps root" "ktproxy log"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/h\): listening" || fail "no listener for container h"
    local uid out
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$KTP_PID/status")
    [ -n "$uid" ] && [ "$uid" != 0 ] || fail "the relay serving a container runs as uid '$uid'"
    wait_log "$KTP_LOG" "privilege self-test:" || fail "no self-test line"
    expect_file_match "$KTP_LOG" "setns_net=EPERM" "the relay's setns"
    out=$(in_ctr h curl -sS --max-time 5 "http://$KTP_SRV4:80/") || fail "curl from container h failed"
    expect_eq "$out" "hello from the server host" "curl from h"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=curl" || fail "container h's connect was not relayed"
    ctr_start g 7 in
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/g\): listening" || fail "no listener for container g"
    out=$(in_ctr g curl -sS --max-time 5 "http://$KTP_SRV4:80/") || fail "curl from container g failed"
    expect_eq "$out" "hello from the server host" "curl from g"
    for _ in $(seq 40); do
        [ "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" = 2 ] && break
        sleep 0.05
    done
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" 2 "relayed curls (h, then g started later)"
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$KTP_PID/status")
    [ "$uid" != 0 ] || fail "the relay runs as root"
}

test_root_relay_serves_a_container_itself() {
    # --proxy-user root: no helper; the relay makes the namespace's sockets
    # (the same broker, in process).
    trap 'stop_ktproxy; ctr_stop a' EXIT
    ctr_start a 2 in
    start_ktproxy --log-level info --proxy-user root || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/a\): listening" || fail "no listener for container a"
    local out
    out=$(in_ctr a curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl from container a failed"
    expect_eq "$out" "hello from the server host" "curl through a root relay"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=curl" || fail "the root relay did not relay container a's curl"
    # Its UDP relay socket and flows' sockets too.
    out=$(in_ctr a /usr/bin/python3 "$TOOLS" client "$KTP_SRV4" 7000 200 unconnected) || fail "UDP echo: $out"
    expect_match "$out" "ok=200 lost=0 bad=0 badsrc=0" "UDP echo through a root relay"
    wait_log "$KTP_LOG" "udp python3\[[0-9]+\] .* -> $KTP_SRV4:7000 via direct: 200 datagrams out, 200 in" 10 ||
        fail "the root relay did not relay container a's datagrams"
    expect_eq "$(awk '/^Uid:/ {print $2}' "/proc/$KTP_PID/status")" 0 "the root relay's uid"
}

test_helper_refuses_a_namespace_outside_the_cgroup() {
    # A relay asking the helper for a socket in a namespace its scan of the
    # cgroup did not find (here: container n's, outside the cgroup) is
    # refused; container a's, inside, is served.
    trap 'stop_ktproxy; ctr_stop a; ctr_stop n' EXIT
    ctr_start a 2 in
    ctr_start n 9 out
    local cookie mine
    cookie_of() {
        nsenter --net="/run/netns/$(ctr_ns "$1")" python3 -c \
            'import socket; print(int.from_bytes(socket.socket().getsockopt(socket.SOL_SOCKET, 71, 8), "little"))'
    }
    cookie=$(cookie_of n)
    mine=$(cookie_of a)
    [ -n "$cookie" ] && [ -n "$mine" ] || fail "no cookies for namespaces n and a"
    KTPROXY_PRIV_SELFTEST_NETNS=$cookie,$mine start_ktproxy --log-level info || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "netns self-test: a socket in namespace $mine" || fail "no netns self-test lines"
    grep "netns self-test:" "$KTP_LOG" | sed 's/^/    /'
    expect_file_match "$KTP_LOG" "netns self-test: a socket in namespace $cookie: .*not one of the intercepted cgroup's \(refused\)" "the helper's answer for n"
    expect_file_match "$KTP_LOG" "netns self-test: a socket in namespace $mine: ALLOWED" "the helper's answer for a"
    # Ports are the helper's to pick: a listener on one the relay names
    # (a container service's) is refused, IPv4 and IPv6, TCP and UDP.
    expect_file_match "$KTP_LOG" "netns self-test: port 8081 in namespace $mine: a listener on port 8081 .*the helper picks the port \(refused\)" "a chosen IPv4 port"
    expect_file_match "$KTP_LOG" "netns self-test: port 8081 in namespace $mine: an IPv6 listener on port 8081 .*not its IPv4 listener's \(refused\)" "a chosen IPv6 port"
    expect_no_file_match "$KTP_LOG" "netns self-test: port 8081 .*ALLOWED" "a listener on a chosen port"
    # With --egress host nothing leaves from a container: no TCP socket
    # there for the relay.
    stop_ktproxy
    KTPROXY_PRIV_SELFTEST_NETNS=$mine start_ktproxy --log-level info --egress host || fail "ktproxy --egress host did not start"
    wait_log "$KTP_LOG" "netns self-test: a socket in namespace $mine" || fail "no netns self-test line (--egress host)"
    expect_file_match "$KTP_LOG" "netns self-test: a socket in namespace $mine: .*with --egress host nothing leaves from a container \(refused\)" "a TCP socket in a container under --egress host"
}

test_status_shows_a_container_connection_and_listener_namespace() {
    trap 'stop_ktproxy; ctr_stop a' EXIT
    ctr_start a 2 in
    start_ktproxy --log-level info || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/a\): listening" || fail "no listener for container a"
    local cookie ctl="/run/ktproxy/ktp-test-${KTP_ID}_app.sock"
    cookie=$(sed -nE 's/.*container namespace ([0-9]+) \(cgroup [^)]*\/a\): listening.*/\1/p' "$KTP_LOG" | head -1)
    # A connection held open from the container.
    in_ctr a python3 -c "
import socket, time
s = socket.create_connection(('$KTP_SRV4', 9000), timeout=3); s.sendall(b'x'); s.recv(1); time.sleep(3)" &
    local held=$!
    local j=""
    for _ in $(seq 40); do
        j=$("$KTPROXY" status --control "$ctl" --json) || fail "status --json failed"
        [ "$(jq '.connections | length' <<<"$j")" -ge 1 ] && break
        sleep 0.05
    done
    expect_eq "$(jq -r '.connections[0].netns' <<<"$j")" "$cookie" "a connection's netns in status --json"
    expect_match "$(jq -r '.connections[0].container' <<<"$j")" "/app/a$" "a connection's container cgroup"
    expect_eq "$(jq -r --arg c "$cookie" '[.netns_listeners[] | select(.netns == ($c | tonumber))] | length' <<<"$j")" 2 \
        "container a's listeners (127.0.0.1 and ::1) in status --json"
    local t
    t=$("$KTPROXY" status --control "$ctl") || fail "status failed"
    expect_match "$t" "$KTP_SRV4:9000 .* $cookie .*/app/a" "the connection's line in status"
    expect_match "$t" "container netns $cookie cgroup .*/app/a listening 127.0.0.1:" "the listener's line in status"
    wait "$held"
}

test_half_closed_check_releases_a_container_connection() {
    # As hostile.sh's half_closed_case, from a container: the app's socket
    # is in the container's namespace, asked through a sock_diag socket the
    # helper made there.
    trap 'stop_ktproxy; ctr_stop a' EXIT
    ktp_bg in_srv python3 -c "
import socket, time
s = socket.socket(); s.bind(('$KTP_SRV4', 9006)); s.listen(0); time.sleep(60)"
    ktp_wait_port "$KTP_SRV" 9006
    ctr_start a 2 in
    start_ktproxy --log-level info || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*/a\): listening" || fail "no listener for container a"
    in_ctr a python3 -c "
import socket, time
s = socket.create_connection(('$KTP_SRV4', 9006), timeout=3); time.sleep(0.2); s.close()" || fail "client"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9006 .* end=dead .*app closed its socket" 8 ||
        { tail -3 "$KTP_LOG" >&2; fail "the container's half-closed relay was not released"; }
}

test_stopped_containers_leave_no_listener_fd_or_map_entry() {
    trap 'stop_ktproxy; ctr_stop e' EXIT
    local cycles=${KTP_CTR_CYCLES:-20} i fds0=0 fds1 ents
    [ "$cycles" -ge 3 ] || cycles=3
    start_ktproxy --log-level debug --workers 2 || fail "ktproxy did not start"
    for i in $(seq "$cycles"); do
        ctr_start e 6 in
        for _ in $(seq 100); do
            [ "$(grep -c "container namespace [0-9]* (cgroup [^)]*): listening" "$KTP_LOG")" -ge "$i" ] && break
            sleep 0.05
        done
        [ "$(grep -c "container namespace [0-9]* (cgroup [^)]*): listening" "$KTP_LOG")" -ge "$i" ] ||
            fail "cycle $i: no listener"
        in_ctr e curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "cycle $i: curl failed"
        in_ctr e dig +time=3 +tries=1 +short @"$KTP_SRV4" web.test A | grep -q "$KTP_SRV4" || fail "cycle $i: dig failed"
        ctr_stop e
        CTRS=("${CTRS[@]/e:in}")
        for _ in $(seq 60); do
            [ "$(grep -c "container namespace [0-9]* gone" "$KTP_LOG")" -ge "$i" ] && break
            sleep 0.05
        done
        [ "$(grep -c "container namespace [0-9]* gone" "$KTP_LOG")" -ge "$i" ] ||
            { tail -5 "$KTP_LOG" >&2; fail "cycle $i: the stopped container's listener was not released"; }
        # After two cycles (one per worker, round robin): the workers' pooled pipes and their handles
        # on ktproxy's own namespace (for --egress container) exist by then.
        if [ "$i" = 2 ]; then
            sleep 1.5
            fds0=$(ls "/proc/$KTP_PID/fd" | wc -l)
        fi
    done
    ents=$(netns_map_entries)
    expect_eq "$ents" 0 "ktp_netns_listeners entries after $cycles start/stop cycles"
    expect_eq "$(grep -c "dns [^ ]*\[[0-9]*\] web.test type 1 to $KTP_SRV4:53: direct" "$KTP_LOG")" "$cycles" \
        "the containers' queries the forwarder saw"
    for _ in $(seq 40); do [ "$(ktp_counter udp_flows)" = 0 ] && break; sleep 0.1; done
    expect_eq "$(ktp_counter udp_flows)" 0 "UDP flows (ktp_udp_flows entries) after $cycles start/stop cycles"
    # The closed listeners leave the workers at their next sweep.
    for _ in $(seq 100); do
        fds1=$(ls "/proc/$KTP_PID/fd" | wc -l)
        [ "$fds1" -le "$fds0" ] && break
        sleep 0.1
    done
    [ "$fds1" -le "$fds0" ] || {
        ls -l "/proc/$KTP_PID/fd" | awk '{print $NF}' | sed 's/[0-9]*]$//' | sort | uniq -c >&2
        fail "ktproxy holds $fds1 fds after $cycles cycles, $fds0 before"
    }
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" "$cycles" "relayed curls"
}

test_egress_host_lets_a_loopback_only_container_out_through_ktproxy_alone() {
    trap 'stop_ktproxy; ctr_stop f' EXIT
    ctr_start f 7 in lo
    in_ctr f curl -sS --max-time 3 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null &&
        fail "a loopback-only container reached the server without ktproxy"
    start_ktproxy --log-level info --egress host --rule 'port=9000 block' || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*\): listening on .* egress host" ||
        { cat "$KTP_LOG" >&2; fail "no listener in the loopback-only container"; }
    local out
    out=$(in_ctr f curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl through ktproxy (egress host) failed"
    expect_eq "$out" "hello from the server host" "curl (egress host)"
    wait_log "$NGINX_LOG" "^$KTP_CLI4 " || fail "nginx did not see ktproxy's host address: $(tail -1 "$NGINX_LOG")"
    out=$(echo hi | in_ctr f socat -T3 - "TCP:$KTP_SRV4:9000" 2>&1) && fail "a blocked port was reachable: $out"
    expect_match "$out" "Operation not permitted" "connect to a blocked port"
}

test_egress_host_loopback_only_container_resolves_through_ktproxy() {
    trap 'stop_ktproxy; ctr_stop h' EXIT
    ctr_start h 8 in lo
    in_ctr h dig +time=1 +tries=1 @"$KTP_SRV4" web.test A >/dev/null 2>&1 &&
        fail "a loopback-only container reached the resolver without ktproxy"
    start_ktproxy --log-level debug --egress host || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "\(cgroup [^)]*/h\): listening on .* egress host; UDP relay on" ||
        { cat "$KTP_LOG" >&2; fail "no UDP relay in the loopback-only container"; }
    local out
    out=$(in_ctr h dig +time=3 +tries=1 @"$KTP_SRV4" web.test A 2>&1) || fail "dig through ktproxy (egress host): $out"
    expect_match "$out" "web\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$KTP_SRV4" "dig's answer"
    wait_log "$KTP_LOG" "dns [^ ]+\[[0-9]+\] web\.test type 1 to $KTP_SRV4:53: direct" ||
        fail "ktproxy's forwarder did not see the query"
    out=$(in_ctr h /usr/bin/python3 "$TOOLS" client "$KTP_SRV4" 7000 200 unconnected) || fail "echo (egress host): $out"
    expect_match "$out" "ok=200 lost=0 bad=0 badsrc=0" "UDP echo (egress host)"
}

test_cgroup_match_intercepts_matching_cgroups_existing_and_future_only() {
    trap 'stop_ktproxy; ctr_stop ma; ctr_stop mb; ctr_stop g' EXIT
    ctr_start ma 11 in
    ctr_start g 12 in
    # --cgroup (the harness's) is the tree; only m* below it is intercepted.
    start_ktproxy --log-level info --cgroup-match "ktp-test-$KTP_ID/app/m*" || fail "ktproxy did not start"
    local out
    out=$(in_ctr ma curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl from ma failed"
    expect_eq "$out" "hello from the server host" "curl from ma"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=curl" || fail "ma (matching, existing) was not relayed"
    out=$(in_ctr g curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl from g failed"
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" 1 "relayed curls after g (not matching)"
    expect_no_file_match "$KTP_LOG" "app/g" "ktproxy log"
    ctr_start mb 13 in
    wait_log "$KTP_LOG" "cgroup-match: intercepting .*/app/mb" || fail "mb (matching, new) not followed"
    out=$(in_ctr mb curl -sS --max-time 5 "http://$KTP_SRV4/") || fail "curl from mb failed"
    for _ in $(seq 40); do
        [ "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" = 2 ] && break
        sleep 0.05
    done
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=curl" "$KTP_LOG")" 2 "relayed curls after mb (matching, new)"
}

# Real Docker (Debian's docker.io), its daemon inside ktproxy's host
# namespace ($KTP_CLI: its bridge and iptables stay there), its state in
# $KTP_TMP, its containers under the test's cgroup, an image imported from
# a busybox-static rootfs the test makes (no registry).
DOCKER_SOCK="$KTP_TMP/dk/d.sock"
docker_t() { docker -H "unix://$DOCKER_SOCK" "$@"; }
stop_dockerd() {
    [ -e "$KTP_TMP/dk" ] || return 0
    { docker_t ps -aq 2>/dev/null || true; } | xargs -r docker -H "unix://$DOCKER_SOCK" rm -f >/dev/null 2>&1 || true
    [ ! -s "$KTP_TMP/dk/d.pid" ] || kill "$(cat "$KTP_TMP/dk/d.pid")" 2>/dev/null || true
    for _ in $(seq 100); do [ -e "$KTP_TMP/dk/d.pid" ] || break; sleep 0.1; done
    local d
    for d in /sys/fs/cgroup/*/"ktp-test-$KTP_ID-docker"; do [ ! -d "$d" ] || rmdir "$d" || true; done
    # dockerd bind-mounts its data root onto itself.
    { grep -o " $KTP_TMP/dk[^ ]*" /proc/mounts || true; } | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
KTP_EXTRA_CLEANUP+=(stop_dockerd)

# Starts dockerd; prints why not and returns 1 when it cannot run here.
start_dockerd() {
    command -v dockerd >/dev/null || { echo "dockerd is not installed (scripts/setup installs docker.io)"; return 1; }
    command -v busybox >/dev/null || { echo "busybox is not installed (busybox-static)"; return 1; }
    mkdir -p "$KTP_TMP/dk"
    in_cli dockerd --data-root "$KTP_TMP/dk/data" --exec-root "$KTP_TMP/dk/x" --pidfile "$KTP_TMP/dk/d.pid" \
        -H "unix://$DOCKER_SOCK" --storage-driver vfs --bip 172.30.0.1/24 \
        --cgroup-parent "/ktp-test-$KTP_ID-docker" >"$KTP_TMP/dk/log" 2>&1 &
    disown $!
    for _ in $(seq 150); do docker_t info >/dev/null 2>&1 && break; sleep 0.1; done
    if ! docker_t info >/dev/null 2>&1; then
        echo "dockerd did not start: $(grep -iE 'level=(error|fatal)|failed' "$KTP_TMP/dk/log" | tail -1)"
        return 1
    fi
    local r="$KTP_TMP/dk/rootfs"
    mkdir -p "$r/bin" "$r/tmp"
    cp "$(command -v busybox)" "$r/bin/busybox"
    for a in sh sleep wget cat echo nslookup; do ln -sf busybox "$r/bin/$a"; done
    tar -C "$r" -c . | docker_t import - "ktp-test-$KTP_ID:busybox" >/dev/null ||
        { echo "docker import failed"; return 1; }
}

test_real_docker_container_is_proxied_by_its_cgroup_and_another_is_not() {
    trap 'stop_ktproxy; stop_dockerd' EXIT
    local why
    if ! why=$(start_dockerd); then
        echo "    SKIP real Docker: $why" >&2
        return 0
    fi
    local img="ktp-test-$KTP_ID:busybox" a b cg out
    a=$(docker_t run -d "$img" sleep 600) || fail "docker run failed"
    b=$(docker_t run -d "$img" sleep 600) || fail "docker run (second) failed"
    cg="$(ktp_cgroup2_mount)/ktp-test-$KTP_ID-docker/$a"
    [ -d "$cg" ] || fail "the container's cgroup2 directory $cg is not there"
    KTP_CG_ARG="$cg" start_ktproxy --log-level info || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "container namespace [0-9]+ \(cgroup [^)]*\): listening" ||
        fail "no listener in the Docker container's namespace"
    out=$(docker_t exec "$a" wget -qO- "http://$KTP_SRV4/") || fail "wget in container a failed"
    expect_eq "$out" "hello from the server host" "wget in the proxied Docker container"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*comm=wget" || fail "ktproxy did not relay container a's wget"
    # Served by a relay that dropped root (the helper made its sockets).
    local uid
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$KTP_PID/status")
    [ -n "$uid" ] && [ "$uid" != 0 ] || fail "the relay serving a Docker container runs as uid '$uid'"
    # Its DNS too: busybox nslookup asks dnsmasq through ktproxy's forwarder.
    out=$(docker_t exec "$a" nslookup -type=a web.test "$KTP_SRV4" 2>&1) || fail "nslookup in container a failed: $out"
    expect_match "$out" "Address:? *(1: )?$KTP_SRV4$" "nslookup's answer in the proxied Docker container"
    wait_log "$KTP_LOG" "udp nslookup\[[0-9]+\] .* -> $KTP_SRV4:53 via direct" ||
        fail "ktproxy did not relay container a's DNS query"
    out=$(docker_t exec "$b" wget -qO- "http://$KTP_SRV4/") || fail "wget in container b failed"
    expect_eq "$out" "hello from the server host" "wget in the other Docker container"
    sleep 0.3
    expect_eq "$(grep -c "orig=$KTP_SRV4:80 .*comm=wget" "$KTP_LOG")" 1 "relayed wgets (b goes direct)"
    stop_ktproxy
}

run_all_tests "$0"
finish
