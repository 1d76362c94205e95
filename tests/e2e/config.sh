#!/bin/bash
# End-to-end tests of --config files: a file that is not entirely understood
# is refused at start (exit status 2, one line naming the file and line) and
# on SIGHUP (the rules in force stay, the refusal is counted in status and
# metrics), each proven by connections whose route would change: a blocked
# port stays blocked and a proxied port stays proxied. Reloads switch the
# kernel's rules whole.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx
start_echo 9000
# A SOCKS5 upstream on the server host: nginx sees a proxied request come
# from 10.201.0.2 (the upstream), a direct one from 10.201.0.1.
ktp_bg in_srv sh -c "exec microsocks -i $KTP_SRV4 -p 1081 > $KTP_TMP/microsocks.log 2>&1"
ktp_wait_port "$KTP_SRV" 1081

KTP_CONF="$KTP_TMP/ktproxy.toml"
good_config() {
    cat > "$KTP_CONF.new" <<CONF
# The suite's configuration: port 9000 blocked in the kernel, port 80
# through the SOCKS5 upstream.
upstream = ["micro=socks5://$KTP_SRV4:1081"]
rule = [
    "port=9000 block",
    "port=80 proxy=micro",   # arrays may span lines
]
default = "proxy=direct"
connect-timeout = 2
CONF
    mv "$KTP_CONF.new" "$KTP_CONF"
}

# Each bad file, by name: its text and what the error line must say.
declare -A BAD_TEXT BAD_SAYS
BAD_TEXT[not_toml]='this is not a TOML file {'
BAD_SAYS[not_toml]="line 1: expected '=' after the key 'this'"
BAD_TEXT[unknown_key]=$'rule = ["port=9000 block"]\ncolour = "blue"'
BAD_SAYS[unknown_key]="line 2: 'colour' is not an option"
BAD_TEXT[misspelled_key]='rules = ["port=9000 block"]'
BAD_SAYS[misspelled_key]="line 1: 'rules' is not an option \\(did you mean 'rule'\\?\\)"
BAD_TEXT[wrong_type]=$'rule = ["port=9000 block"]\nconnect-timeout = "2"'
BAD_SAYS[wrong_type]="line 2: 'connect-timeout' takes a number, not a string"
BAD_TEXT[duplicate_key]=$'rule = ["port=9000 block"]\n\nrule = ["port=80 direct"]'
BAD_SAYS[duplicate_key]="line 3: the key 'rule' is set twice \\(first on line 1\\)"
BAD_TEXT[unterminated_string]='rule = ["port=9000 block]'
BAD_SAYS[unterminated_string]="line 1: unterminated string"
BAD_TEXT[unterminated_array]=$'rule = ["port=9000 block",\n"port=80 direct"'
BAD_SAYS[unterminated_array]="line 1: unterminated array"
BAD_NAMES=(not_toml unknown_key misspelled_key wrong_type duplicate_key unterminated_string unterminated_array)

# blocked_9000: a connect to port 9000 fails at once with EPERM.
expect_blocked_9000() {
    local rc=0
    in_app timeout 5 socat -u "TCP:$KTP_SRV4:9000" - </dev/null 2>"$KTP_TMP/blocked.err" || rc=$?
    expect_ne "$rc" 0 "socat to the blocked port ($1)"
    expect_file_match "$KTP_TMP/blocked.err" "Operation not permitted" "$1: socat's error"
}
# proxied_80: nginx sees the request come from the upstream's address.
expect_proxied_80() {
    local tag="cfg-$RANDOM$RANDOM"
    local code
    code=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "Host: $tag" "http://$KTP_SRV4/") || true
    expect_eq "$code" 200 "$1: curl through the upstream"
    grep " $tag " "$KTP_TMP/nginx/access.log" | grep -q "^$KTP_SRV4 " ||
        fail "$1: the request did not come through the upstream: $(grep "$tag" "$KTP_TMP/nginx/access.log")"
}

test_each_bad_config_is_refused_at_start_with_exit_2_and_one_line() {
    local name out rc lines
    for name in "${BAD_NAMES[@]}"; do
        printf '%s\n' "${BAD_TEXT[$name]}" > "$KTP_TMP/$name.toml"
        rc=0
        out=$(in_cli timeout 10 "$KTPROXY" --cgroup "$KTP_CG" --config "$KTP_TMP/$name.toml" 2>&1) || rc=$?
        expect_eq "$rc" 2 "$name: exit status"
        lines=$(printf '%s\n' "$out" | wc -l)
        expect_eq "$lines" 1 "$name: lines printed ($out)"
        expect_match "$out" "^ktproxy: error: config $KTP_TMP/$name.toml ${BAD_SAYS[$name]}" "$name: the error line"
    done
}

test_an_empty_config_file_is_valid_and_means_no_rules() {
    : > "$KTP_TMP/empty.toml"
    start_ktproxy --config "$KTP_TMP/empty.toml" || fail "ktproxy did not start with an empty config"
    expect_file_match "$KTP_LOG" 'ready: .* 0 rules, 0 upstreams'
    expect_eq "$(printf x | in_app timeout 5 socat -t 2 - "TCP:$KTP_SRV4:9000")" x "port 9000 with no rules"
    stop_ktproxy || fail "ktproxy did not stop cleanly"
}

test_each_bad_config_on_sighup_is_refused_counted_and_the_rules_stay() {
    good_config
    start_ktproxy --config "$KTP_CONF" --metrics "127.0.0.1:9464" --control "$KTP_TMP/ctl.sock" ||
        fail "ktproxy did not start"
    expect_file_match "$KTP_LOG" 'ready: .* 2 rules, 1 upstreams'
    expect_blocked_9000 "before any reload"
    expect_proxied_80 "before any reload"
    local name n=0 refused
    for name in "${BAD_NAMES[@]}"; do
        printf '%s\n' "${BAD_TEXT[$name]}" > "$KTP_CONF"
        kill -HUP "$KTP_PID"
        n=$((n + 1))
        for _ in $(seq 100); do
            [ "$(grep -c 'reload refused' "$KTP_LOG")" -ge "$n" ] && break
            sleep 0.05
        done
        expect_eq "$(grep -c 'reload refused' "$KTP_LOG")" "$n" "$name: refusals logged"
        expect_match "$(grep 'reload refused' "$KTP_LOG" | tail -1)" \
            "reload refused, keeping the rules in force: config $KTP_CONF ${BAD_SAYS[$name]}" "$name: the refusal"
        expect_blocked_9000 "after the $name reload"
        expect_proxied_80 "after the $name reload"
    done
    expect_no_file_match "$KTP_LOG" 'reloaded: '
    # Counted where monitoring looks.
    local ctl=(--control "$KTP_TMP/ctl.sock")
    refused=$("$KTPROXY" status "${ctl[@]}" --json | jq -r '.reloads_refused')
    expect_eq "$refused" "$n" "reloads_refused in ktproxy status --json"
    "$KTPROXY" status "${ctl[@]}" | grep -q "reloads: applied=0 refused=$n last refusal: config $KTP_CONF" ||
        fail "ktproxy status does not show the refusals: $("$KTPROXY" status "${ctl[@]}" | grep reloads)"
    in_cli curl -sS --max-time 5 "http://127.0.0.1:9464/metrics" > "$KTP_TMP/metrics.txt" || fail "no metrics"
    expect_file_match "$KTP_TMP/metrics.txt" "^ktproxy_config_reloads_total\\{result=\"refused\"\\} $n\$"
    # A good file is taken again, and counted as applied.
    good_config
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reloaded: 2 rules, 1 upstreams' || fail "the good config was not reloaded"
    in_cli curl -sS --max-time 5 "http://127.0.0.1:9464/metrics" > "$KTP_TMP/metrics.txt" || fail "no metrics"
    expect_file_match "$KTP_TMP/metrics.txt" '^ktproxy_config_reloads_total\{result="applied"\} 1$'
    expect_blocked_9000 "after the good reload"
    expect_proxied_80 "after the good reload"
    # An empty file is a valid configuration: no rules, so port 9000 opens.
    : > "$KTP_CONF"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" 'reloaded: 0 rules, 0 upstreams' || fail "the empty config was not reloaded"
    expect_eq "$(printf x | in_app timeout 5 socat -t 2 - "TCP:$KTP_SRV4:9000")" x "port 9000 after an empty config"
    stop_ktproxy || fail "ktproxy did not stop cleanly"
}

# Two configurations that both block port 9000 on the server host, each in
# another way: a.toml by a rule under a `proxy` default, b.toml by its
# default, behind 2,000 rules for other prefixes (10.201.0.0/24 among them,
# for port 80 only). Applied one prefix at a time and the default after,
# the switch from a to b would pass port 9000 to the proxy for as long as
# the 2,000 writes take; connects race 100 reloads and none may pass.
test_reloads_switch_the_kernel_rules_whole() {
    cat > "$KTP_TMP/a.toml" <<CONF
rule = ["cidr=10.201.0.0/16 port=9000 block"]
default = "proxy=direct"
CONF
    {
        # One line: the same file must also be read by ktproxy versions
        # whose config reader took arrays on one line only.
        echo 'default = "block"'
        printf 'rule = ["cidr=10.201.0.0/24 port=80 direct"'
        local a b
        for a in $(seq 1 8); do
            for b in $(seq 0 249); do printf ', "cidr=10.%s.%s.0/24 direct"' "$a" "$b"; done
        done
        echo ']'
    } > "$KTP_TMP/b.toml"
    cp "$KTP_TMP/a.toml" "$KTP_CONF"
    start_ktproxy --config "$KTP_CONF" || fail "ktproxy did not start"
    local conn_before
    conn_before=$(ktp_counter redirected)
    # Connect attempts until the reloads are done (bounded: 30 s, 3 million).
    in_app timeout 60 python3 - "$KTP_SRV4" "$KTP_TMP/race.stop" > "$KTP_TMP/race.out" <<'PY' &
import os, socket, sys, time
ok = 0
end = time.time() + 30
n = 0
while time.time() < end and n < 3000000 and not os.path.exists(sys.argv[2]):
    n += 1
    s = socket.socket()
    try:
        s.connect((sys.argv[1], 9000))
        ok += 1
    except OSError:
        pass
    finally:
        s.close()
print(n, ok)
PY
    local racer=$! i
    for i in $(seq 100); do
        if [ $((i % 2)) -eq 1 ]; then cp "$KTP_TMP/b.toml" "$KTP_CONF"; else cp "$KTP_TMP/a.toml" "$KTP_CONF"; fi
        kill -HUP "$KTP_PID"
        for _ in $(seq 100); do
            [ "$(grep -c 'reloaded: ' "$KTP_LOG")" -ge "$i" ] && break
            sleep 0.01
        done
    done
    touch "$KTP_TMP/race.stop"
    wait "$racer"
    expect_eq "$(grep -c 'reloaded: ' "$KTP_LOG")" 100 "reloads applied"
    read -r tries passed < "$KTP_TMP/race.out"
    ktp_log "connect attempts during the reloads: $tries, passed: $passed"
    [ "${tries:-0}" -gt 100 ] || fail "the racing client made only ${tries:-0} attempts"
    expect_eq "$passed" 0 "connects to the blocked port that passed during reloads"
    expect_eq "$(ktp_counter redirected)" "$conn_before" "connects to port 9000 redirected instead of blocked"
    stop_ktproxy || fail "ktproxy did not stop cleanly"
}

run_all_tests "$0"
finish
