#!/bin/bash
# End-to-end tests of routing and upstreams: rules decided in the kernel
# (direct, block) and in ktproxy (domains from SNI / Host), through real
# upstream proxies from Debian (dante with user/password, microsocks,
# tinyproxy for HTTP CONNECT), and upstreams that fail.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
make_certs a.test b.test
start_nginx
start_echo 9000

# The upstreams live on the server host, so a connection that came through
# one reaches nginx from 10.201.0.2, and a direct one from 10.201.0.1.
start_dante() {
    local d="$KTP_TMP/dante"
    mkdir -p "$d"
    chmod 755 "$KTP_TMP" "$d"
    # dante checks user/password against the system's passwd/shadow and
    # resolves names with /etc/hosts: give it its own copies in a private
    # mount namespace, so the host's files are never touched.
    ktp_dante_setup "$d" "$KTP_SRV4" 1080
    printf '127.0.0.1 localhost\n%s a.test b.test c.test\n' "$KTP_SRV4" > "$d/hosts"
    ktp_dante_run "$d" "$d/hosts"
    ktp_wait_port "$KTP_SRV" 1080
    DANTE_LOG="$d/danted.log"
}

start_microsocks() {
    # Its own /etc/hosts, as for dante: it resolves the names it is sent.
    ktp_bg unshare -m sh -c "mount --bind '$KTP_TMP/dante/hosts' /etc/hosts &&
        exec nsenter --net=/run/netns/$KTP_SRV microsocks -i $KTP_SRV4 -p 1081 > '$KTP_TMP/microsocks.log' 2>&1"
    ktp_wait_port "$KTP_SRV" 1081
    MICROSOCKS_LOG="$KTP_TMP/microsocks.log"
}

start_tinyproxy() {
    local d="$KTP_TMP/tinyproxy"
    ktp_tinyproxy_setup "$d" "$KTP_SRV4" 8888 10.201.0.0/24 "80 443 8083 9000"
    ktp_bg unshare -m sh -c "mount --bind '$KTP_TMP/dante/hosts' /etc/hosts &&
        exec nsenter --net=/run/netns/$KTP_SRV tinyproxy -d -c '$d/tinyproxy.conf'"
    ktp_wait_port "$KTP_SRV" 8888
    TINYPROXY_LOG="$d/tinyproxy.log"
}

start_dante
start_microsocks
start_tinyproxy
# Answers any SOCKS5 greeting with garbage.
ktp_bg in_srv socat TCP-LISTEN:1098,bind=$KTP_SRV4,reuseaddr,fork SYSTEM:'echo HTTP/1.0 400 not-socks; sleep 1'
ktp_wait_port "$KTP_SRV" 1098
# A server-speaks-first protocol: a banner, then silence.
ktp_bg in_srv socat TCP-LISTEN:2525,reuseaddr,fork SYSTEM:'echo "220 banner.test ESMTP ready"; sleep 3'
ktp_wait_port "$KTP_SRV" 2525

# Rules and upstreams come from a TOML file (as a service would run it), so
# that SIGHUP reloading can be tested by rewriting it.
KTP_CONF="$KTP_TMP/ktproxy.toml"
write_config() {  # write_config [EXTRA_RULE]: the suite's configuration
    local rules=(${1:+"$1"} "cidr=$KTP_SRV4 port=80 direct" "port=9999 block" "port=8081 proxy=dante"
        "port=8082 proxy=micro" "port=8083 proxy=tiny" "port=9101 proxy=badpass" "port=9102 proxy=down"
        "port=9103 proxy=garbage" "port=9104 proxy=silent" "domain=a.test proxy=micro" "domain=c.test proxy=tiny"
        "domain=b.test proxy=direct")
    local ups=("dante=socks5://ktpuser:s3cret@$KTP_SRV4:1080" "micro=socks5://$KTP_SRV4:1081"
        "tiny=http://ktpuser:s3cret@$KTP_SRV4:8888" "badpass=socks5://ktpuser:wrong@$KTP_SRV4:1080"
        "down=socks5://$KTP_SRV4:1099" "garbage=socks5://$KTP_SRV4:1098" "silent=socks5://$KTP_SRV4:1097")
    toml_list() { local out="" x; for x in "$@"; do out+="${out:+, }\"$x\""; done; printf '[%s]' "$out"; }
    {
        echo "upstream = $(toml_list "${ups[@]}")"
        echo "rule = $(toml_list "${rules[@]}")"
        echo 'default = "proxy=direct"'
        echo 'connect-timeout = 2'
    } > "$KTP_CONF.new"
    mv "$KTP_CONF.new" "$KTP_CONF"
}
write_config
# Accepts and never answers.
ktp_bg in_srv socat TCP-LISTEN:1097,bind=$KTP_SRV4,reuseaddr,fork SYSTEM:'sleep 30'
ktp_wait_port "$KTP_SRV" 1097
start_ktproxy --config "$KTP_CONF" || ktp_die "ktproxy did not start"

# nginx also listens on 8081-8083 for the upstream tests.
add_nginx_ports() {
    sed -i "s|listen $KTP_SRV4:80 backlog=4096;|listen $KTP_SRV4:80 backlog=4096; listen $KTP_SRV4:8081; listen $KTP_SRV4:8082; listen $KTP_SRV4:8083; listen $KTP_SRV4:9101; listen $KTP_SRV4:9102; listen $KTP_SRV4:9103;|" \
        "$KTP_TMP/nginx/nginx.conf"
    in_srv nginx -c "$KTP_TMP/nginx/nginx.conf" -s reload
    ktp_wait_port "$KTP_SRV" 8083
}
add_nginx_ports

# via_upstream PORT NAME: curl from the cgroup to nginx:PORT goes through the
# upstream NAME: nginx sees the upstream's address, ktproxy logs the route.
via_upstream() {
    local port="$1" name="$2" out lport
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4:$port/")
    expect_eq "${out%% *}" 200 "HTTP status via $name"
    lport="${out##* }"
    wait_log "$KTP_LOG" "client=[^ ]+:$lport .*route=$name .*end=eof" || fail "no conn line via $name for port $lport"
    expect_eq "$(grep " $port " "$NGINX_LOG" >/dev/null; tail -1 "$NGINX_LOG" | cut -d' ' -f1)" "$KTP_SRV4" \
        "address nginx saw (the upstream's)"
}

test_curl_reaches_nginx_through_dante_with_password() {
    via_upstream 8081 dante
    wait_log "$DANTE_LOG" "username%ktpuser@.* -> .* $KTP_SRV4.8081" || fail "dante's log does not show ktpuser's connection to :8081"
}

test_curl_reaches_nginx_through_microsocks() {
    via_upstream 8082 micro
    wait_log "$MICROSOCKS_LOG" "$KTP_SRV4" || fail "microsocks's log does not show the connection"
}

test_curl_reaches_nginx_through_tinyproxy_http_connect() {
    via_upstream 8083 tiny
    wait_log "$TINYPROXY_LOG" "CONNECT.*$KTP_SRV4:8083" || fail "tinyproxy's log does not show CONNECT to :8083"
}

test_direct_rule_bypasses_ktproxy_entirely() {
    local before bypassed_before out lport after
    before=$(ktp_counter redirected)
    bypassed_before=$(ktp_counter bypassed)
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status"
    lport="${out##* }"
    expect_eq "$(tail -1 "$NGINX_LOG" | cut -d' ' -f1-2)" "$KTP_CLI4 $lport" "nginx saw the client's own address and port"
    expect_eq "$(ktp_counter redirected)" "$before" "redirected counter"
    expect_eq "$(ktp_counter bypassed)" "$((bypassed_before + 1))" "bypassed counter"
    expect_no_file_match "$KTP_LOG" "client=[^ ]+:$lport " "ktproxy log"
}

test_block_rule_fails_connect_with_eperm() {
    local rc=0
    in_app timeout 5 socat -u "TCP:$KTP_SRV4:9999" - 2>"$KTP_TMP/block.err" || rc=$?
    expect_ne "$rc" 0 "socat exit status"
    expect_ne "$rc" 124 "socat exit status (timed out instead of failing at once)"
    expect_file_match "$KTP_TMP/block.err" "Operation not permitted"
}

test_domain_from_sni_routes_a_via_socks5_and_b_direct() {
    local out
    out=$(in_app curl -sS -k --max-time 5 --resolve "a.test:443:$KTP_SRV4" -o /dev/null -w '%{http_code}' https://a.test/)
    expect_eq "$out" 200 "HTTPS a.test"
    wait_log "$NGINX_LOG" "^$KTP_SRV4 [0-9]+ a.test a.test 200" || fail "nginx did not see a.test from the SOCKS5 server's address"
    wait_log "$MICROSOCKS_LOG" "connected to a\.test:443" || fail "microsocks's log does not name a.test"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:443 .*route=micro .*domain=a.test" || fail "no conn line routing a.test via micro"
    out=$(in_app curl -sS -k --max-time 5 --resolve "b.test:443:$KTP_SRV4" -o /dev/null -w '%{http_code}' https://b.test/)
    expect_eq "$out" 200 "HTTPS b.test"
    wait_log "$NGINX_LOG" "^$KTP_CLI4 [0-9]+ b.test b.test 200" || fail "nginx did not see b.test from the client host"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:443 .*route=direct .*domain=b.test" || fail "no conn line routing b.test direct"
}

test_domain_from_http_host_routes_via_http_connect() {
    # Port 9000 is the echo server: it sends the request back, which is
    # enough to see that ktproxy read the Host header and chose the route.
    in_app bash -c "printf 'GET / HTTP/1.1\r\nHost: c.test\r\n\r\n' | timeout 5 socat -t 2 - TCP:$KTP_SRV4:9000" >/dev/null || true
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9000 .*route=tiny .*domain=c.test" || fail "Host: c.test was not routed via tiny"
    wait_log "$TINYPROXY_LOG" "CONNECT.*c\.test:9000" || fail "tinyproxy's log does not name c.test:9000"
}

test_server_speaks_first_protocol_works_with_sniffing_on() {
    local banner
    banner=$(in_app timeout 10 socat -u "TCP:$KTP_SRV4:2525" - | head -1)
    expect_match "$banner" '^220 banner.test' "banner"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:2525 .*route=direct .*domain=-" || fail "banner connection not logged as sniffed without a name"
}

# upstream_failure PORT END REASON_REGEX: the client is reset promptly and the
# log says why.
upstream_failure() {
    local port="$1" end="$2" reason="$3" rc=0
    in_app timeout 10 curl -sS --max-time 8 -o /dev/null "http://$KTP_SRV4:$port/" 2>"$KTP_TMP/fail.err" || rc=$?
    expect_ne "$rc" 0 "curl exit status through a failing upstream"
    expect_ne "$rc" 124 "curl exit status (hung)"
    expect_ne "$rc" 28 "curl exit status (timed out instead of being reset)"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:$port .*end=$end .*reason=\".*$reason" ||
        fail "no conn line with end=$end and reason /$reason/ (last: $(grep "orig=$KTP_SRV4:$port" "$KTP_LOG" | tail -1))"
}

test_wrong_upstream_password_resets_client_with_reason() {
    upstream_failure 9101 upstream-error 'rejected username/password'
}

test_upstream_down_resets_client_with_reason() {
    upstream_failure 9102 refused 'Connection refused'
}

test_upstream_answering_garbage_resets_client_with_reason() {
    upstream_failure 9103 upstream-error 'garbage'
}

test_upstream_that_never_answers_resets_client_after_connect_timeout() {
    upstream_failure 9104 timeout 'handshake timed out'
}

test_other_connections_unaffected_by_upstream_failures() {
    via_upstream 8082 micro
    local out
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://[$KTP_SRV6]/")
    expect_eq "$out" 200 "IPv6 curl after upstream failures"
}

test_sighup_reloads_rules_from_the_config_and_keeps_live_connections() {
    # A live connection through ktproxy, held open across the reloads.
    in_app bash -c "(printf 'before\n'; sleep 3; printf 'after\n') | timeout 10 socat -t 5 - TCP:$KTP_SRV4:9000" \
        > "$KTP_TMP/live.out" &
    local live=$! rc
    sleep 0.3
    # New rule on top: port 9000 is now blocked in the kernel.
    write_config "port=9000 block"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reloaded: ' || fail "no reload line"
    rc=0
    in_app timeout 5 socat -u "TCP:$KTP_SRV4:9000" - </dev/null 2>"$KTP_TMP/blocked.err" || rc=$?
    expect_file_match "$KTP_TMP/blocked.err" "Operation not permitted"
    # A broken config is refused and the rules in force stay.
    printf 'rule = ["cidr=999.1.1.1/8 direct"]\n' > "$KTP_CONF"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reload refused, keeping the rules in force: .*999' || fail "bad config not refused"
    rc=0
    in_app timeout 5 socat -u "TCP:$KTP_SRV4:9000" - </dev/null 2>"$KTP_TMP/blocked2.err" || rc=$?
    expect_file_match "$KTP_TMP/blocked2.err" "Operation not permitted"
    # Back to the original configuration.
    write_config
    kill -HUP "$KTP_PID"
    local i
    for i in $(seq 100); do [ "$(grep -c 'reloaded: ' "$KTP_LOG")" -ge 2 ] && break; sleep 0.05; done
    [ "$(grep -c 'reloaded: ' "$KTP_LOG")" -ge 2 ] || fail "no second reload"
    wait "$live" || true
    expect_eq "$(tr '\n' ' ' < "$KTP_TMP/live.out")" "before after " "echo across the reloads"
    expect_eq "$(printf x | in_app timeout 5 socat -t 2 - "TCP:$KTP_SRV4:9000")" x "port 9000 after restoring the config"
}

run_all_tests "$0"
finish
