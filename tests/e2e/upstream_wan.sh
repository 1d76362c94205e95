#!/bin/bash
# Upstreams at WAN distance (issue 15): warm upstream sessions, optimistic
# data and upstream groups, against real proxies from Debian (microsocks,
# dante with user/password, tinyproxy). Behaviour only, never timings: the
# pool and optimistic data show on the plain two-host topology; the WAN link
# (tools/ktp-delay, scripts/lib/wan.sh) is for scripts/bench.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx

# dante with user/password; port 9105 is refused by its rules, so a CONNECT
# there fails at the proxy while a server does listen on it.
start_dante() {
    local d="$KTP_TMP/dante"
    mkdir -p "$d"
    chmod 755 "$KTP_TMP" "$d"
    ktp_dante_setup "$d" "$KTP_SRV4" 1080 "socks block {
    from: 0.0.0.0/0 to: 0.0.0.0/0 port = 9105
    log: connect error
}"
    ktp_dante_run "$d"
    ktp_wait_port "$KTP_SRV" 1080
    DANTE_LOG="$d/danted.log"
}

start_microsocks() {  # start_microsocks PORT
    ktp_bg in_srv sh -c "exec microsocks -i $KTP_SRV4 -p $1 >> '$KTP_TMP/microsocks.$1.log' 2>&1"
    MICRO_PID[$1]=$!
    ktp_wait_port "$KTP_SRV" "$1"
}
declare -A MICRO_PID

start_tinyproxy() {
    local d="$KTP_TMP/tinyproxy"
    ktp_tinyproxy_setup "$d" "$KTP_SRV4" 8888 10.201.0.0/24 8083
    ktp_bg in_srv tinyproxy -d -c "$d/tinyproxy.conf"
    ktp_wait_port "$KTP_SRV" 8888
    TINYPROXY_LOG="$d/tinyproxy.log"
}

start_dante
start_microsocks 1081
start_microsocks 1082
start_microsocks 1083
start_microsocks 1084
start_microsocks 1085
start_tinyproxy
sed -i "s|listen $KTP_SRV4:80 backlog=4096;|listen $KTP_SRV4:80 backlog=4096; listen $KTP_SRV4:8081; listen $KTP_SRV4:8082; listen $KTP_SRV4:8083; listen $KTP_SRV4:8084; listen $KTP_SRV4:8085; listen $KTP_SRV4:8086; listen $KTP_SRV4:8087;|" \
    "$KTP_TMP/nginx/nginx.conf"
in_srv nginx -c "$KTP_TMP/nginx/nginx.conf" -s reload
ktp_wait_port "$KTP_SRV" 8086
# Whatever reaches port 9105 is written down: a refused CONNECT must leave it empty.
: > "$KTP_TMP/9105.bytes"
ktp_bg in_srv socat -u TCP-LISTEN:9105,bind=$KTP_SRV4,reuseaddr,fork "OPEN:$KTP_TMP/9105.bytes,append"
ktp_wait_port "$KTP_SRV" 9105

# A far host (tools/ktp-delay, 800 ms RTT) with two microsocks and a port
# that swallows SYNs, for the failover tests: a round trip that long makes
# the moment between a member's death and its first refused connect wide
# enough to see which member a connection picks in it.
. "$(dirname "$0")/../../scripts/lib/wan.sh"
ktp_wan_up 800
start_wan_microsocks() {  # start_wan_microsocks PORT
    ktp_wan_bg sh -c "exec microsocks -i $KTP_WAN4 -p $1 >> '$KTP_TMP/wan-microsocks.$1.log' 2>&1"
    WAN_MICRO_PID[$1]=$!
    ktp_wait_port "$KTP_WAN" "$1"
}
declare -A WAN_MICRO_PID
start_wan_microsocks 1180
start_wan_microsocks 1181
start_wan_microsocks 1183
start_wan_microsocks 1184
in_wan iptables -A INPUT -p tcp --dport 1182 -j DROP
mkdir -p "$KTP_TMP/far"
echo far > "$KTP_TMP/far/index.html"
for p in 8090 8091 8092; do
    ktp_wan_bg python3 -m http.server "$p" --bind "$KTP_WAN_DST4" --directory "$KTP_TMP/far" 2>/dev/null
    ktp_wait_port "$KTP_WAN" $p
done

# One worker, so that the pools' sizes are the counts seen at the upstreams.
# The connect timeout is long, so that a connection left to it fails its
# client's curl (--max-time 20) by far: a group must not need it.
start_ktproxy --workers 1 --control "$KTP_TMP/ctl.sock" --connect-timeout 30 \
    --upstream "w1=socks5://$KTP_WAN4:1180?pool=2" --upstream "w2=socks5://$KTP_WAN4:1181?pool=2" \
    --upstream-group "wg=w1,w2" --rule "port=8090 proxy=wg" \
    --upstream "bh=socks5://$KTP_WAN4:1182?pool=0" --upstream "w3=socks5://$KTP_WAN4:1181?pool=2" \
    --upstream-group "bg=bh,w3" --rule "port=8091 proxy=bg" \
    --upstream "d1=socks5://$KTP_WAN4:1183?pool=1" --upstream "d2=socks5://$KTP_WAN4:1184?pool=1" \
    --upstream-group "dg=d1,d2" --rule "port=8092 proxy=dg" \
    --upstream "m3=socks5://$KTP_SRV4:1083?pool=1" --upstream "m4=socks5://$KTP_SRV4:1084?pool=1" \
    --upstream-group "grp=m3,m4" --rule "port=80 proxy=grp" \
    --upstream "gone=socks5://$KTP_SRV4:1099?pool=0" --upstream "m5=socks5://$KTP_SRV4:1084?pool=0" \
    --upstream-group "g2=gone,m5" --rule "port=8086 proxy=g2" \
    --upstream "dante=socks5://ktpuser:s3cret@$KTP_SRV4:1080?pool=2&optimistic=on" \
    --upstream "micro=socks5://$KTP_SRV4:1081?pool=2&pool-age=3" \
    --upstream "tiny=http://ktpuser:s3cret@$KTP_SRV4:8888?pool=2" \
    --upstream "cold=socks5://ktpuser:s3cret@$KTP_SRV4:1080?pool=0&optimistic=on" \
    --upstream "m2=socks5://$KTP_SRV4:1082?pool=2" \
    --rule "port=8081 proxy=dante" --rule "port=9105 proxy=dante" --rule "port=8082 proxy=micro" \
    --rule "port=9106 proxy=micro" --rule "port=8083 proxy=tiny" --rule "port=8084 proxy=cold" \
    --rule "port=8085 proxy=m2" \
    --upstream "mopt=socks5://$KTP_SRV4:1085?pool=1&optimistic=on" --rule "port=8087 proxy=mopt" \
    || ktp_die "ktproxy did not start"

# Established connections from the client host to an upstream's port.
session_ports() {  # session_ports PORT: sorted local ports
    in_cli ss -Htn state established "dport = :$1" | awk '{ print $3 }' | sed 's/.*://' | sort -n
}
wait_sessions() {  # wait_sessions PORT COUNT: until COUNT are open (at most 5 s)
    for _ in $(seq 100); do
        [ "$(session_ports "$1" | wc -l)" -eq "$2" ] && return 0
        sleep 0.05
    done
    fail "expected $2 sessions to port $1, have $(session_ports "$1" | wc -l)"
}

# get PORT: one HTTP request from the app cgroup; prints "STATUS LOCALPORT".
get() {
    in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4:$1/"
}
conn_line() {  # conn_line LOCALPORT: ktproxy's log line of that connection
    wait_log "$KTP_LOG" "client=[^ ]+:$1 " || fail "no conn line for client port $1"
    grep -E "client=[^ ]+:$1 " "$KTP_LOG" | tail -1
}

test_warm_pool_microsocks_hands_out_each_session_once() {
    wait_sessions 1081 2
    local before vias=() i out line
    before=$(session_ports 1081 | tr '\n' ' ')
    for i in 1 2 3 4 5; do
        out=$(get 8082)
        expect_eq "${out%% *}" 200 "HTTP status via microsocks (request $i)"
        line=$(conn_line "${out##* }")
        expect_match "$line" "route=micro .*end=eof" "conn line $i"
        vias+=("$(conn_field "$line" via)")
        [ "$i" -eq 1 ] && expect_match "$line" "session=warm" "the first request's session (the pool was full)"
        wait_sessions 1081 2  # refilled in the background
    done
    expect_match " $before" " ${vias[0]##*:} " "the first request used a session opened before it"
    # Single use: five requests, five different upstream sockets.
    expect_eq "$(printf '%s\n' "${vias[@]}" | sort -u | wc -l)" 5 "distinct upstream sessions"
}

test_warm_pool_dante_greets_once_per_session() {
    wait_sessions 1080 2
    local accepts0 connects0 i out
    accepts0=$(grep -c 'tcp/accept' "$DANTE_LOG")
    connects0=$(grep -c 'username%ktpuser@.*tcp/connect\|tcp/connect.*username%ktpuser' "$DANTE_LOG")
    for i in 1 2 3 4; do
        out=$(get 8081)
        expect_eq "${out%% *}" 200 "HTTP status via dante (request $i)"
        expect_match "$(conn_line "${out##* }")" "route=dante .*session=warm" "conn line $i"
        wait_sessions 1080 2
    done
    # Each request: one CONNECT as ktpuser on a session that greeted and
    # authenticated once; the four replacements greeted but wait, unused.
    wait_log "$DANTE_LOG" "x" 1
    expect_eq "$(( $(grep -c 'tcp/accept' "$DANTE_LOG") - accepts0 ))" 4 "TCP sessions dante accepted"
    expect_eq "$(( $(grep -c 'username%ktpuser@.*tcp/connect\|tcp/connect.*username%ktpuser' "$DANTE_LOG") - connects0 ))" 4 \
        "CONNECTs dante passed"
}

test_warm_pool_tinyproxy_http_connect() {
    wait_sessions 8888 2
    local out line
    out=$(get 8083)
    expect_eq "${out%% *}" 200 "HTTP status via tinyproxy"
    line=$(conn_line "${out##* }")
    expect_match "$line" "route=tiny .*session=warm" "conn line"
    # HTTP CONNECT proxies get no optimistic data unless asked for.
    [[ "$line" != *early=* ]] || fail "optimistic data sent to an HTTP proxy by default: $line"
    wait_log "$TINYPROXY_LOG" "CONNECT.*$KTP_SRV4:8083" || fail "tinyproxy's log does not show the CONNECT"
}

test_sessions_killed_by_the_upstream_are_never_handed_out() {
    wait_sessions 1082 2
    # microsocks restarted: every idle session dies at the far end.
    kill "${MICRO_PID[1082]}"
    ktp_wait_port_gone "$KTP_SRV" 1082
    start_microsocks 1082
    local i out
    for i in $(seq 8); do
        out=$(get 8085)
        expect_eq "${out%% *}" 200 "HTTP status via the restarted microsocks (request $i)"
    done
    # And the pool is warm again with sessions of the new process.
    wait_sessions 1082 2
    out=$(get 8085)
    expect_eq "${out%% *}" 200 "HTTP status once refilled"
    expect_match "$(conn_line "${out##* }")" "session=warm" "a request after the refill"
    ! grep -E "route=m2 .*end=(upstream|reset|error|timeout)" "$KTP_LOG" || fail "a client saw a failure"
}

test_idle_sessions_close_at_max_age() {
    wait_sessions 1081 2
    local first second
    first=$(session_ports 1081 | tr '\n' ' ')
    sleep 4  # pool-age=3
    wait_sessions 1081 2
    second=$(session_ports 1081 | tr '\n' ' ')
    local p
    for p in $first; do
        [[ " $second " != *" $p "* ]] || fail "session :$p outlived pool-age (before: $first, after: $second)"
    done
}

test_optimistic_request_arrives_intact_through_dante_warm_and_cold() {
    local port out line i
    for port in 8081 8084; do
        # Warm: the request waited for (5 ms at most), and sent with the
        # CONNECT; on a loaded machine curl may write later, so a few tries
        # until one went early. Cold: sent with it if it had arrived by then
        # (on loopback it may not have).
        for i in 1 2 3 4 5; do
            out=$(in_app curl -sS --max-time 5 -w ' %{http_code} %{local_port}' "http://$KTP_SRV4:$port/index.html?opt=$port")
            expect_match "$out" "^hello from the server host" "body via port $port"
            line=$(conn_line "${out##* }")
            expect_match "$line" "end=eof" "end via port $port"
            [ "$port" = 8084 ] || [[ "$line" == *early=[1-9]* ]] && break
            sleep 0.3  # the warm pool refills
        done
        [ "$port" = 8084 ] || expect_match "$line" "early=[1-9]" "optimistic data via port $port"
    done
    # microsocks (optimistic off by default: it drops what follows the
    # request) gets the request after its reply.
    out=$(in_app curl -sS --max-time 5 -w ' %{http_code} %{local_port}' "http://$KTP_SRV4:8082/index.html")
    expect_match "$out" "^hello from the server host" "body via microsocks"
    [[ "$(conn_line "${out##* }")" != *early=* ]] || fail "optimistic data sent to microsocks"
}

test_microsocks_drops_optimistic_data_so_it_is_off_by_default() {
    # Why optimistic=off is the default for socks5 (docs/usage.md): microsocks
    # 1.0 reads the bytes behind the CONNECT request along with it and drops
    # them; the destination never gets the request and the app waits.
    # ktproxy waits 5 ms at most for the app's first bytes: on a loaded
    # machine curl may be later, and its request then follows the reply
    # (which microsocks relays). A few tries until one went early.
    local i out rc line
    for i in 1 2 3 4 5 6; do
        wait_sessions 1085 1
        out=$(in_app curl -sS --max-time 3 -o /dev/null -w '%{local_port}' "http://$KTP_SRV4:8087/index.html" 2>/dev/null)
        rc=$?
        line=$(conn_line "$out")
        [[ "$line" == *early=* ]] && break
        expect_eq "$rc" 0 "curl through microsocks, its request sent after the reply (try $i)"
    done
    expect_match "$line" "route=mopt .*early=[1-9]" "a request that went with the CONNECT"
    expect_eq "$rc" 28 "curl through microsocks with its request behind the CONNECT (28: timed out waiting for the answer)"
}

test_refused_connect_bytes_reach_no_server() {
    local rc i out line
    # Until one request went with the CONNECT (a curl later than ktproxy's
    # 5 ms wait sends it after the refusal: not at all).
    for i in 1 2 3 4 5 6; do
        out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{local_port}' "http://$KTP_SRV4:9105/secret-request" 2>/dev/null)
        rc=$?
        expect_ne "$rc" 0 "curl through a refused CONNECT (try $i)"
        line=$(conn_line "$out")
        expect_match "$line" "orig=$KTP_SRV4:9105 .*end=upstream" "the refused CONNECT's line (try $i)"
        [[ "$line" == *early=* ]] && break
    done
    expect_match "$line" "early=[1-9]" "the request went with the CONNECT"
    wait_log "$DANTE_LOG" "block.*9105" 2 || fail "dante did not log the block"
    sleep 0.5
    expect_eq "$(stat -c %s "$KTP_TMP/9105.bytes")" 0 "bytes that reached the server on 9105"
    # microsocks: nothing listens on 9106, so the CONNECT fails there too.
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4:9106/" 2>/dev/null && fail "curl to 9106 succeeded"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9106 .*end=upstream" || fail "no end=upstream line for 9106"
}

ktp_status() { "$KTPROXY" status --control "$KTP_TMP/ctl.sock"; }

test_group_fails_over_to_the_next_member_and_back() {
    local out i lines
    out=$(get 80)
    expect_eq "${out%% *}" 200 "HTTP status through the group"
    wait_log "$KTP_TMP/microsocks.1083.log" "connected to" || fail "the first member did not carry it"
    expect_match "$(ktp_status)" "upstream m3 \(group grp\): up" "status before"
    # The first member dies: its idle session sees EOF, its refill is
    # refused (a health probe), and it is skipped.
    kill "${MICRO_PID[1083]}"
    ktp_wait_port_gone "$KTP_SRV" 1083
    for i in $(seq 10); do
        out=$(get 80)
        expect_eq "${out%% *}" 200 "HTTP status with the first member dead (request $i)"
    done
    expect_match "$(ktp_status)" "upstream m3 \(group grp\): down failures=[1-9]" "status with m3 dead"
    expect_match "$(ktp_status)" "upstream m4 \(group grp\): up" "status of m4"
    lines=$(grep -c "connected to" "$KTP_TMP/microsocks.1084.log")
    [ "$lines" -ge 10 ] || fail "the second member carried $lines of 10"
    ! grep -E "orig=$KTP_SRV4:80 .*route=grp .*end=(upstream|reset|refused|timeout|error)" "$KTP_LOG" \
        || fail "a client saw a failure"
    "$KTPROXY" status --control "$KTP_TMP/ctl.sock" --json | jq -e '.upstreams[] | select(.name == "m3") | .state == "down"' \
        >/dev/null || fail "status --json does not show m3 down"
    # Back: a probe (the pool's refill) finds it, and it carries again.
    start_microsocks 1083
    for i in $(seq 100); do
        ktp_status | grep -q "upstream m3 (group grp): up" && break
        sleep 0.2
    done
    expect_match "$(ktp_status)" "upstream m3 \(group grp\): up" "status once m3 is back"
    lines=$(grep -c "connected to" "$KTP_TMP/microsocks.1083.log")
    out=$(get 80)
    expect_eq "${out%% *}" 200 "HTTP status with m3 back"
    wait_log "$KTP_TMP/microsocks.1083.log" "connected to" || true
    [ "$(grep -c "connected to" "$KTP_TMP/microsocks.1083.log")" -gt "$lines" ] || fail "m3 does not carry again"
}

test_group_retries_once_on_the_next_member_when_setup_fails() {
    # A group whose first member refuses every TCP connect (nothing
    # listens): each connection is set up again on the second, once.
    group_request get 8086 g2 1 gone down
}

# far PORT: one request to the far host through ktproxy; prints "STATUS LOCALPORT".
far() {
    in_app curl -sS --max-time 20 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_WAN_DST4:$1/"
}
served() { grep -c "connected to" "$KTP_TMP/wan-microsocks.$1.log"; }
# group_request FETCH PORT GROUP RETRIED MEMBER STATE: one request through a
# group (FETCH is get or far) succeeds, its conn line names the group, the
# group's retry count is RETRIED and MEMBER's state STATE.
group_request() {
    local out
    out=$("$1" "$2")
    expect_eq "${out%% *}" 200 "HTTP status through $3"
    expect_match "$(conn_line "${out##* }")" "route=$3 .*end=eof" "conn line"
    expect_match "$(ktp_status)" "group $3: retried=$4" "retries counted"
    expect_match "$(ktp_status)" "upstream $5 \\(group $3\\): $6" "state of $5"
}

test_group_skips_a_killed_member_before_its_first_refusal() {
    # Both members warm; the first dies. Its idle sessions see the far end
    # close half a round trip later; its refill is refused a whole round trip
    # after that. A connection made in between must go to w2 at once, not
    # try w1 first (a refused connect, then w2: one more round trip, and
    # more when w2's warm sessions are used up).
    wait_sessions 1180 2
    wait_sessions 1181 4  # w2's and w3's pools
    local out i w2_before line
    out=$(far 8090)
    expect_eq "${out%% *}" 200 "HTTP status through wg with both members up"
    wait_log "$KTP_TMP/wan-microsocks.1180.log" "connected to" || fail "w1 did not carry the first request"
    # Both of w1's sessions ready (one is the refill after that request):
    # one dying mid-greeting would mark w1 down by itself.
    wait_sessions 1180 2
    sleep 2
    w2_before=$(served 1181)
    kill "${WAN_MICRO_PID[1180]}"
    for _ in $(seq 100); do
        [ "$(session_ports 1180 | wc -l)" -eq 0 ] && break
        sleep 0.05
    done
    expect_eq "$(session_ports 1180 | wc -l)" 0 "w1's idle sessions closed"
    for i in 1 2 3; do
        out=$(far 8090)
        expect_eq "${out%% *}" 200 "HTTP status with w1 dead (request $i)"
        line=$(conn_line "${out##* }")
        expect_match "$line" "route=wg .*end=eof" "conn line $i"
    done
    expect_eq "$(( $(served 1181) - w2_before ))" 3 "requests w2 carried"
    expect_match "$(ktp_status)" "group wg: retried=0" "connections that tried the dead member first"
    expect_match "$(ktp_status)" "upstream w1 \(group wg\): down" "status of w1"
    ! grep -E "route=wg .*end=(upstream|reset|refused|timeout|error)" "$KTP_LOG" || fail "a client saw a failure"
}

test_group_bounds_the_connect_to_a_member_that_swallows_syns() {
    # bh never answers a SYN; --connect-timeout is 30 s. The connection goes
    # to w3 after a bound of about two of bh's connect times (1 s before any
    # was seen), well before curl gives up.
    local out
    group_request far 8091 bg 1 bh down
    out=$(far 8091)
    expect_eq "${out%% *}" 200 "HTTP status through bg, bh skipped"
    expect_match "$(ktp_status)" "group bg: retried=1" "no retry once bh is down"
}

test_group_moves_a_waiting_connection_off_a_member_gone_dark() {
    # d1's host stops answering anything (its warm session included) once
    # the pool is warm. A connection takes that session and waits for a
    # CONNECT reply that never comes; the pool's refill (bounded connect)
    # finds d1 dead, and the waiting connection goes to d2 then, not at the
    # 30 s handshake timeout.
    wait_sessions 1183 1
    wait_sessions 1184 1
    sleep 2  # greetings done
    in_wan iptables -A INPUT -p tcp --dport 1183 -j DROP
    group_request far 8092 dg 1 d1 down
    expect_eq "$(served 1183)" 0 "requests d1 carried"
    expect_eq "$(served 1184)" 1 "requests d2 carried"
}

test_ktp_delay_link_carries_traffic_and_stops_on_sigterm() {
    # The bench's WAN link (scripts/lib/wan.sh, up since the start, 800 ms):
    # a far host reachable only through ktp-delay; SIGTERM ends it with its counts, and the far host's
    # address is unreachable once it is gone (no other path exists).
    ktp_wan_bg socat TCP-LISTEN:7000,bind=$KTP_WAN_DST4,reuseaddr,fork EXEC:cat
    ktp_wait_port "$KTP_WAN" 7000
    expect_eq "$(printf 'over the link' | in_cli timeout 8 socat -t 2 - TCP:$KTP_WAN_DST4:7000)" "over the link" "echo"
    kill -TERM "$KTP_WAN_DELAY_PID"
    # Started by the suite, not by this test's subshell: no wait(1) for it.
    wait_log "$KTP_TMP/ktp-delay.log" "stopped;" || fail "ktp-delay did not stop on SIGTERM"
    expect_file_match "$KTP_TMP/ktp-delay.log" "stopped; A->B [1-9][0-9]* forwarded 0 dropped" "ktp-delay's last line"
    ! in_cli timeout 3 socat -T 1 /dev/null TCP:$KTP_WAN_DST4:7000,connect-timeout=1 2>/dev/null || fail "reachable without the link"
    ktp_wan_down
}

run_all_tests "$0"
finish
