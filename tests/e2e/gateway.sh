#!/bin/bash
# End-to-end tests of gateway mode: forwarded traffic, client -> router
# (ktproxy --gateway-iface) -> server, IPv4 and IPv6, and what ktproxy leaves
# on the host after it exits.
#
#   client  10.203.1.2  fd00:203:1::2 --- rtr0 [router 10.203.1.1 / 10.203.2.1] rtr1 --- server 10.203.2.2 fd00:203:2::2
#
# The client routes only the server's subnet via the router; nothing else is
# reachable from anywhere.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

KTP_RTR="ktp${KTP_ID}r"
KTP_CLI4=10.203.1.2
KTP_SRV4=10.203.2.2
KTP_CLI6=fd00:203:1::2
KTP_SRV6=fd00:203:2::2
RTR_IN=rtr0
RTR_IN4=10.203.1.1
RTR_OUT4=10.203.2.1
RTR_OUT6=fd00:203:2::1

gw_topo_up() {
    trap ktp_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    KTP_TMP="$(mktemp -d /tmp/ktp-test.XXXXXX)"
    chmod 755 "$KTP_TMP"
    KTP_EXTRA_CLEANUP+=("ip netns pids $KTP_RTR | xargs -r kill -9; ip netns del $KTP_RTR")
    ip netns add "$KTP_CLI"
    ip netns add "$KTP_SRV"
    ip netns add "$KTP_RTR"
    ip link add "kv${KTP_ID}c" type veth peer name "kv${KTP_ID}a"
    ip link add "kv${KTP_ID}s" type veth peer name "kv${KTP_ID}b"
    ip link set "kv${KTP_ID}c" netns "$KTP_CLI"
    ip link set "kv${KTP_ID}s" netns "$KTP_SRV"
    ip link set "kv${KTP_ID}a" netns "$KTP_RTR" name "$RTR_IN"
    ip link set "kv${KTP_ID}b" netns "$KTP_RTR" name rtr1
    ip -n "$KTP_CLI" addr add "$KTP_CLI4/24" dev "kv${KTP_ID}c"
    ip -n "$KTP_CLI" addr add "$KTP_CLI6/64" dev "kv${KTP_ID}c" nodad
    ip -n "$KTP_SRV" addr add "$KTP_SRV4/24" dev "kv${KTP_ID}s"
    ip -n "$KTP_SRV" addr add "$KTP_SRV6/64" dev "kv${KTP_ID}s" nodad
    ip -n "$KTP_RTR" addr add "$RTR_IN4/24" dev "$RTR_IN"
    ip -n "$KTP_RTR" addr add fd00:203:1::1/64 dev "$RTR_IN" nodad
    ip -n "$KTP_RTR" addr add "$RTR_OUT4/24" dev rtr1
    ip -n "$KTP_RTR" addr add "$RTR_OUT6/64" dev rtr1 nodad
    local ns
    for ns in "$KTP_CLI" "$KTP_SRV" "$KTP_RTR"; do ip -n "$ns" link set lo up; done
    ip -n "$KTP_CLI" link set "kv${KTP_ID}c" up
    ip -n "$KTP_SRV" link set "kv${KTP_ID}s" up
    ip -n "$KTP_RTR" link set "$RTR_IN" up
    ip -n "$KTP_RTR" link set rtr1 up
    ip -n "$KTP_CLI" route add 10.203.2.0/24 via "$RTR_IN4"
    ip -n "$KTP_CLI" -6 route add fd00:203:2::/64 via fd00:203:1::1
    ip -n "$KTP_SRV" route add 10.203.1.0/24 via "$RTR_OUT4"
    ip -n "$KTP_SRV" -6 route add fd00:203:1::/64 via "$RTR_OUT6"
    ip netns exec "$KTP_RTR" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}
in_rtr() { nsenter --net="/run/netns/$KTP_RTR" "$@"; }

# Like start_ktproxy (scripts/lib/netns.sh), on the router and without a
# cgroup: the wrapper records the exit status for stop_ktproxy.
start_gateway() {
    KTP_LOG="$KTP_TMP/ktproxy.$(date +%s%N).log"
    : > "$KTP_LOG"
    (
        trap - EXIT INT TERM
        nsenter --net="/run/netns/$KTP_RTR" "$KTPROXY" --gateway-iface "$RTR_IN" --control "$KTP_TMP/gw.sock" "$@" \
            2>"$KTP_LOG" &
        echo $! > "$KTP_LOG.pid"
        wait $!
        echo $? > "$KTP_LOG.rc"
    ) 2>/dev/null &
    KTP_PIDS+=("$!")
    local i
    for i in $(seq 100); do [ -s "$KTP_LOG.pid" ] && break; sleep 0.01; done
    KTP_PID="$(cat "$KTP_LOG.pid" 2>/dev/null)"
    wait_log "$KTP_LOG" 'ready:' 10 || { cat "$KTP_LOG" >&2; return 1; }
}

# What ktproxy adds to the router: our filter, the clsact qdisc, the fwmark
# rule and the local route table. Prints what is there (empty: clean).
our_state() {
    in_rtr tc filter show dev "$RTR_IN" ingress 2>/dev/null | grep -o 'ktp_gateway' | head -1
    in_rtr tc qdisc show dev "$RTR_IN" | grep -o clsact
    in_rtr ip -4 rule | grep -o '0x6b75'
    in_rtr ip -6 rule | grep -o '0x6b75'
    in_rtr ip -4 route show table 27509 2>/dev/null
    in_rtr ip -6 route show table 27509 2>/dev/null
}

forwarding_works_directly() {
    local out lport
    out=$(in_cli curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "curl forwarded without ktproxy"
    lport="${out##* }"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1-2)" "$KTP_CLI4 $lport" "nginx saw the client itself"
}

gw_topo_up
start_nginx
ktp_bg in_srv socat -u "TCP-LISTEN:9001,reuseaddr,fork" SYSTEM:"sha256sum > $KTP_TMP/upload.sha"
ktp_wait_port "$KTP_SRV" 9001
ktp_bg in_srv microsocks -i "$KTP_SRV4" -p 1081
ktp_wait_port "$KTP_SRV" 1081
sed -i "s|listen $KTP_SRV4:80 backlog=4096;|listen $KTP_SRV4:80 backlog=4096; listen $KTP_SRV4:8080; listen $KTP_SRV4:8081;|" \
    "$KTP_TMP/nginx/nginx.conf"
in_srv nginx -c "$KTP_TMP/nginx/nginx.conf" -s reload
ktp_wait_port "$KTP_SRV" 8081

test_forwarding_works_before_ktproxy() {
    forwarding_works_directly
}

test_gateway_curl_ipv4_and_ipv6_through_ktproxy() {
    local out lport
    # No cgroup, so no UDP relay (UDP is on by default for cgroups): the
    # ready line says forwarded UDP is not proxied rather than nothing.
    expect_file_match "$KTP_LOG" "ready: .*gateway on .*UDP not intercepted \(no --cgroup: the gateway proxies forwarded TCP only\)" \
        "the ready line"
    out=$(in_cli curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "curl over IPv4"
    lport="${out##* }"
    wait_log "$KTP_LOG" "conn client=$KTP_CLI4:$lport orig=$KTP_SRV4:80 .*end=eof pid=- comm=- uid=-" ||
        fail "no conn line naming the real client $KTP_CLI4:$lport (and no process: pid=- comm=- uid=-)"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$RTR_OUT4" "nginx saw the router (ktproxy) as the client"
    out=$(in_cli curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://[$KTP_SRV6]/")
    expect_eq "${out%% *}" 200 "curl over IPv6"
    lport="${out##* }"
    wait_log "$KTP_LOG" "conn client=\\[$KTP_CLI6\\]:$lport orig=\\[$KTP_SRV6\\]:80 .*end=eof" ||
        fail "no IPv6 conn line naming the real client"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$RTR_OUT6" "nginx saw the router over IPv6"
}

test_gateway_one_gib_upload_arrives_intact() {
    in_cli bash -c "head -c 1073741824 /dev/urandom | tee >(sha256sum > '$KTP_TMP/sent.sha') \
        | timeout 120 socat -u -b 262144 - TCP:$KTP_SRV4:9001"
    local i
    for i in $(seq 100); do [ -s "$KTP_TMP/upload.sha" ] && break; sleep 0.1; done
    expect_eq "$(cut -d' ' -f1 "$KTP_TMP/upload.sha")" "$(cut -d' ' -f1 "$KTP_TMP/sent.sha")" "sha256 at the server"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9001 .*c2s=1073741824 " || fail "ktproxy did not relay the 1 GiB"
}

test_gateway_direct_rule_is_forwarded_without_ktproxy() {
    local out lport
    out=$(in_cli curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4:8080/")
    expect_eq "${out%% *}" 200 "curl to the direct port"
    lport="${out##* }"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1-2)" "$KTP_CLI4 $lport" "nginx saw the client itself"
    sleep 0.2
    expect_no_file_match "$KTP_LOG" "client=$KTP_CLI4:$lport " "ktproxy log"
}

test_gateway_socks5_upstream_for_forwarded_traffic() {
    local out
    out=$(in_cli curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$KTP_SRV4:8081/")
    expect_eq "$out" 200 "curl via the SOCKS5 route"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:8081 .*route=micro .*end=eof" || fail "no conn line via micro"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$KTP_SRV4" "nginx saw microsocks (on the server host)"
}

test_gateway_leaves_the_hosts_own_and_other_interfaces_traffic_alone() {
    local n
    n=$(grep -c 'conn client' "$KTP_LOG")
    # The router's own connection.
    in_rtr curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "router's own curl"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$RTR_OUT4" "nginx saw the router's own curl"
    # A connection that arrives on the other interface (server -> client).
    ktp_bg in_cli socat TCP-LISTEN:7000,reuseaddr OPEN:/dev/null,creat
    ktp_wait_port "$KTP_CLI" 7000
    echo hi | in_srv timeout 5 socat -u - "TCP:$KTP_CLI4:7000" || fail "server -> client connection"
    sleep 0.3
    expect_eq "$(grep -c 'conn client' "$KTP_LOG")" "$n" "conn lines for traffic ktproxy must not touch"
}

test_gateway_sigterm_removes_everything_and_forwarding_works() {
    [ -n "$(our_state)" ] || fail "no gateway state while running (the test would prove nothing)"
    local rc=0
    stop_ktproxy TERM || rc=$?
    expect_eq "$rc" 0 "exit status"
    expect_eq "$(our_state)" "" "qdisc/filter/rule/route left after SIGTERM"
    forwarding_works_directly
}

test_gateway_kill_9_leftovers_removed_by_restart() {
    start_gateway || fail "ktproxy did not start"
    stop_ktproxy KILL || true
    [ -n "$(our_state)" ] || fail "kill -9 left nothing behind (the test would prove nothing)"
    start_gateway || fail "ktproxy did not restart"
    expect_file_match "$KTP_LOG" 'removed [0-9]+ leftovers'
    in_cli curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through the restarted gateway"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:80 .*end=eof" || fail "restarted gateway did not relay"
    stop_ktproxy TERM || true
    expect_eq "$(our_state)" "" "state left after the restarted gateway stopped"
}

test_gateway_kill_9_leftovers_removed_by_cleanup() {
    start_gateway || fail "ktproxy did not start"
    stop_ktproxy KILL || true
    [ -n "$(our_state)" ] || fail "kill -9 left nothing behind (the test would prove nothing)"
    in_rtr "$KTPROXY" cleanup 2>/dev/null || fail "ktproxy cleanup failed"
    expect_eq "$(our_state)" "" "state left after cleanup"
    forwarding_works_directly
}

# The gateway's state must be visible to every test, so it starts here, in
# the suite's shell (each test runs in a subshell).
run_test test_forwarding_works_before_ktproxy
start_gateway \
    --upstream "micro=socks5://$KTP_SRV4:1081" \
    --rule "cidr=$KTP_SRV4 port=8080 direct" \
    --rule "port=8081 proxy=micro" || ktp_die "ktproxy did not start"
for t in $(grep -o '^test_gateway_[a-z0-9_]*' "$0"); do
    [ -n "${KTP_ONLY:-}" ] && [[ "$t" != *"$KTP_ONLY"* ]] && continue
    run_test "$t"
done
finish
