#!/bin/bash
# End-to-end tests of least privilege (docs/architecture.md, "Privileges"):
# once its hooks are attached the relay runs as an unprivileged user with
# one capability, NoNewPrivs and seccomp, and a root helper does the rest;
# pins and the control socket are root's alone; metrics stay on loopback
# unless asked; a config with passwords that others can read is named.
# UDP (on by default) works in the dropped relay, and its threads (the UDP
# relay's, the DNS-over-upstream pool's) are as unprivileged as the rest.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)

ktp_topo_up
start_nginx
ktp_bg in_srv /usr/bin/python3 "$(cd "$(dirname "$0")" && pwd)/udp_tools.py" echo "$KTP_SRV4" 7000

# status_field PID NAME: a line's value from /proc/PID/status.
status_field() { awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$1/status"; }

# The capabilities the relay keeps: for SO_MARK, CAP_NET_RAW (bit 13) since
# Linux 5.17, CAP_NET_ADMIN (bit 12) before; CAP_BPF (bit 39) before 6.5,
# where map lookups need it while unprivileged BPF is disabled.
kept_cap_mask() {
    local major minor v mask
    IFS=. read -r major minor _ <<<"$(uname -r)"
    v=$((major * 1000 + minor))
    if [ "$v" -ge 5017 ]; then mask=$((1 << 13)); else mask=$((1 << 12)); fi
    [ "$v" -lt 6005 ] && [ "$(cat /proc/sys/kernel/unprivileged_bpf_disabled)" != 0 ] && mask=$((mask | (1 << 39)))
    printf '%016x\n' "$mask"
}

helper_pid() { pgrep -P "$KTP_PID" -x ktproxy-priv | head -1; }

test_every_ktproxy_process_runs_with_least_privilege() {
    trap stop_ktproxy EXIT
    # pool.test is routed to an upstream nobody listens on: its query makes
    # the relay start the DNS-over-upstream threads (and then fails).
    start_ktproxy --control "$KTP_TMP/ctl.sock" --upstream "m=socks5://$KTP_SRV4:1999" \
        --rule "domain=pool.test proxy=m" || fail "ktproxy did not start"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through the dropped relay failed"
    local out
    out=$(in_app /usr/bin/python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'hi', ('$KTP_SRV4', 7000)); print(s.recvfrom(200)[0].decode())") || fail "UDP through the dropped relay: $out"
    expect_match "$out" "^hi\|from=$KTP_CLI4:[0-9]+$" "the UDP echo through the dropped relay"
    [ "$(ktp_counter udp_redirected)" -gt 0 ] || fail "the datagram did not go through ktproxy"
    in_app /usr/bin/python3 "$(dirname "$0")/udp_tools.py" dnsmany "$KTP_SRV4" 1 pool.test >/dev/null
    wait_log "$KTP_LOG" "pool\.test" 5 || fail "no log line for the query routed to the upstream"
    local uid want_uid
    want_uid=$(id -u ktproxy 2>/dev/null || id -u nobody)
    uid=$(status_field "$KTP_PID" Uid)
    printf '    relay  pid %s: Uid %s CapEff %s CapBnd %s NoNewPrivs %s Seccomp %s\n' "$KTP_PID" "$uid" \
        "$(status_field "$KTP_PID" CapEff)" "$(status_field "$KTP_PID" CapBnd)" \
        "$(status_field "$KTP_PID" NoNewPrivs)" "$(status_field "$KTP_PID" Seccomp)"
    expect_eq "$uid" "$want_uid $want_uid $want_uid $want_uid" "relay Uid"
    expect_eq "$(status_field "$KTP_PID" CapEff)" "$(kept_cap_mask)" "relay CapEff"
    expect_eq "$(status_field "$KTP_PID" CapPrm)" "$(kept_cap_mask)" "relay CapPrm"
    expect_eq "$(status_field "$KTP_PID" CapBnd)" "$(kept_cap_mask)" "relay CapBnd"
    expect_eq "$(status_field "$KTP_PID" NoNewPrivs)" 1 "relay NoNewPrivs"
    expect_eq "$(status_field "$KTP_PID" Seccomp)" 2 "relay Seccomp"
    # Every thread, not only the main one: capabilities are per thread.
    local t
    echo "    relay threads: $(ls /proc/"$KTP_PID"/task | wc -l) ($(cat /proc/"$KTP_PID"/task/*/comm | sort | uniq -c | tr -s ' \n' ' '))" >&2
    for t in /proc/"$KTP_PID"/task/*; do
        expect_eq "$(awk '$1 == "CapEff:" { print $2 }' "$t/status")" "$(kept_cap_mask)" "CapEff of thread $t"
        expect_eq "$(awk '$1 == "Seccomp:" { print $2 }' "$t/status")" 2 "Seccomp of thread $t"
    done
    local helper
    helper=$(helper_pid)
    [ -n "$helper" ] || fail "no privileged helper process under $KTP_PID"
    printf '    helper pid %s: Uid %s CapEff %s NoNewPrivs %s Seccomp %s\n' "$helper" \
        "$(status_field "$helper" Uid)" "$(status_field "$helper" CapEff)" \
        "$(status_field "$helper" NoNewPrivs)" "$(status_field "$helper" Seccomp)"
    # uid 0 with CAP_NET_ADMIN CAP_BPF CAP_PERFMON CAP_KILL CAP_DAC_OVERRIDE,
    # and, as the instance has an app cgroup whose containers it may serve,
    # CAP_SYS_ADMIN (setns) and CAP_SYS_PTRACE (their /proc/PID/ns/net).
    expect_eq "$(status_field "$helper" Uid)" "0 0 0 0" "helper Uid"
    expect_eq "$(status_field "$helper" CapEff)" 000000c000281022 "helper CapEff"
    expect_eq "$(status_field "$helper" CapBnd)" 000000c000281022 "helper CapBnd"
    expect_eq "$(status_field "$helper" NoNewPrivs)" 1 "helper NoNewPrivs"
    expect_eq "$(status_field "$helper" Seccomp)" 2 "helper Seccomp"
    # The helper holds no socket of the relay: no listener, no connection.
    local socks
    socks=$(find "/proc/$helper/fd" -lname 'socket:*' 2>/dev/null | wc -l)
    expect_eq "$socks" 1 "sockets the helper holds (its socketpair end)"
    stop_ktproxy || fail "ktproxy exited non-zero"
    [ ! -e "/proc/$helper" ] || fail "helper $helper outlived the relay"
    [ ! -e "$KTP_TMP/ctl.sock" ] || fail "control socket left behind (the helper removes it)"
}

test_relay_cannot_set_up_io_uring_load_bpf_or_open_raw_sockets() {
    trap stop_ktproxy EXIT
    KTPROXY_PRIV_SELFTEST=1 start_ktproxy || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "privilege self-test:" || fail "no self-test line"
    grep "privilege self-test:" "$KTP_LOG" | sed 's/^/    /'
    expect_file_match "$KTP_LOG" "io_uring_setup=EPERM bpf_prog_load=EPERM raw_socket=EPERM setuid0=EPERM unshare_user=EPERM setns_net=EPERM signal_peer=none signal_self=ALLOWED cgroups_map_write=EPERM ip_transparent=EPERM other_mark=EPERM fork=EPERM" "self-test"
    # Each worker ring refuses an opcode outside proxy/loop/uring_ops.h.
    wait_log "$KTP_LOG" "ring self-test:" || fail "no ring self-test line"
    grep "ring self-test:" "$KTP_LOG" | sed 's/^/    /'
    expect_no_file_match "$KTP_LOG" "ring self-test: nop=[^E]|ring self-test: nop=E[^A]" "ring self-test"
    expect_eq "$(grep -c 'ring self-test: nop=EACCES' "$KTP_LOG")" "$(grep -c 'ring self-test:' "$KTP_LOG")" "rings refusing a NOP"
    stop_ktproxy
}

test_relay_cannot_signal_another_process_of_its_user() {
    # Every instance's relay runs as the same user: a relay taken over must
    # not stop or kill another instance's (whose hooks would then go, or
    # whose apps would hang). A sleep of that user stands for one.
    local user peer
    trap stop_ktproxy EXIT
    user=$(id -un ktproxy 2>/dev/null || echo nobody)
    setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups sleep 60 &
    peer=$!
    KTP_EXTRA_CLEANUP+=("kill $peer")
    KTPROXY_PRIV_SELFTEST=1 KTPROXY_PRIV_SELFTEST_PEER=$peer start_ktproxy || fail "ktproxy did not start"
    wait_log "$KTP_LOG" "privilege self-test:" || fail "no self-test line"
    grep "privilege self-test:" "$KTP_LOG" | sed 's/^/    /'
    expect_eq "$(awk '/^Uid:/ {print $2}' /proc/$KTP_PID/status)" "$(id -u "$user")" "the relay's uid (the peer's)"
    expect_file_match "$KTP_LOG" "signal_peer=EPERM signal_self=ALLOWED" "signals from the relay"
    kill -0 $peer || fail "the peer is gone"
    kill $peer
    stop_ktproxy
}

test_pins_and_control_socket_are_closed_to_other_users() {
    trap stop_ktproxy EXIT
    start_ktproxy --fail-closed --control "/run/ktproxy/priv-$$.sock" || fail "ktproxy did not start"
    local dir
    dir=$(ls -d /sys/fs/bpf/ktproxy/*"$(basename "$KTP_CG")"* 2>/dev/null | head -1)
    [ -n "$dir" ] || fail "no pin dir for $KTP_CG"
    expect_eq "$(stat -c '%a %U' /sys/fs/bpf/ktproxy)" "700 root" "pin root"
    expect_eq "$(stat -c '%a %U' "$dir")" "700 root" "pin dir"
    local f
    for f in "$dir"/*; do
        expect_eq "$(stat -c '%a %U' "$f")" "600 root" "pin $f"
    done
    expect_eq "$(stat -c '%a %U' "/run/ktproxy/priv-$$.sock")" "600 root" "control socket"
    local out
    out=$("${NOBODY[@]}" /usr/bin/python3 -c 'import os, sys
try:
    os.open(sys.argv[1], os.O_RDONLY); print("opened")
except OSError as e:
    print(os.strerror(e.errno))' "$(ls "$dir"/* | head -1)")
    expect_eq "$out" "Permission denied" "a pin opened as nobody"
    out=$("${NOBODY[@]}" /usr/bin/python3 -c 'import socket, os, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("connected")
except OSError as e:
    print(os.strerror(e.errno))' "/run/ktproxy/priv-$$.sock")
    expect_eq "$out" "Permission denied" "the control socket connected to as nobody"
    "$KTPROXY" status --control "/run/ktproxy/priv-$$.sock" >/dev/null || fail "root's status failed"
    stop_ktproxy
    "$KTPROXY" cleanup >/dev/null 2>&1 || true
}

test_metrics_on_a_non_loopback_address_needs_metrics_public() {
    local rc=0 out
    out=$("$KTPROXY" --cgroup "$KTP_CG" --metrics 0.0.0.0:9464 2>&1) || rc=$?
    expect_eq "$rc" 2 "exit status"
    expect_eq "$(printf '%s\n' "$out" | wc -l)" 1 "lines of output"
    expect_match "$out" "not a loopback address.*--metrics-public" "error"
    trap stop_ktproxy EXIT
    start_ktproxy --metrics "$KTP_CLI4:9464" --metrics-public || fail "--metrics-public did not start"
    stop_ktproxy
}

test_config_with_passwords_readable_by_others_gets_one_warning() {
    trap stop_ktproxy EXIT
    local conf="$KTP_TMP/secret.toml"
    printf 'upstream = ["s=socks5://user:hunter2@%s:1081"]\n' "$KTP_SRV4" > "$conf"
    chmod 644 "$conf"
    start_ktproxy --config "$conf" || fail "ktproxy did not start"
    expect_file_match "$KTP_LOG" "config $conf: permissions 0644 let other users read the upstream passwords" "warning"
    expect_eq "$(grep -c 'let other users read' "$KTP_LOG")" 1 "warning lines"
    stop_ktproxy
    chmod 600 "$conf"
    start_ktproxy --config "$conf" || fail "ktproxy did not start"
    expect_no_file_match "$KTP_LOG" "let other users read" "log of a 0600 config"
    stop_ktproxy
}

test_sighup_rereads_a_root_only_config_through_the_helper() {
    trap stop_ktproxy EXIT
    local conf="$KTP_TMP/root-only.toml"
    echo 'rule = ["port=80 block"]' > "$conf"
    chmod 600 "$conf"
    start_ktproxy --config "$conf" || fail "ktproxy did not start"
    in_app curl -sS --max-time 3 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null && fail "port 80 not blocked"
    echo 'rule = ["port=80 proxy=direct"]' > "$conf"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reloaded:" || fail "no reload"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "port 80 still blocked after reload"
    echo 'rule = ["port=80 proxy=direct"' > "$conf"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reload refused.*config $conf line 1" || fail "a bad file's refusal does not name it"
    stop_ktproxy
}

# config_dir_with_block: a new root-only directory (CONF_DIR) with a
# root-only config (CONF) that blocks port 80.
config_dir_with_block() {
    CONF_DIR=$(mktemp -d "$KTP_TMP/confdir.XXXXXX") || fail "mktemp -d"
    CONF="$CONF_DIR/ktproxy.toml"
    echo 'rule = ["port=80 block"]' > "$CONF"
    chmod 600 "$CONF"
}
port80_blocked() { ! in_app curl -sS --max-time 3 -o /dev/null "http://$KTP_SRV4/" 2>/dev/null; }

test_sighup_sees_a_config_replaced_editor_style() {
    # Editors write a new file and rename it over the old one: a new inode
    # at the same name, which the helper must read (it keeps the directory,
    # not the file, open).
    trap stop_ktproxy EXIT
    config_dir_with_block
    start_ktproxy --config "$CONF" || fail "ktproxy did not start"
    port80_blocked || fail "port 80 not blocked"
    echo 'rule = ["port=80 proxy=direct"]' > "$CONF.new"
    chmod 600 "$CONF.new"
    mv -f "$CONF.new" "$CONF"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reloaded:" || fail "no reload after the file was replaced"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "port 80 still blocked after reload"
    stop_ktproxy
}

test_sighup_reads_no_symlink_or_second_name_put_in_the_configs_place() {
    # The helper reads the config with root's rights: what the relay could
    # put at that name later (a symlink, a hard link to another root-only
    # file) must be refused, and so must a directory others can write. The
    # "secret" here is itself a config that would open port 80.
    trap stop_ktproxy EXIT
    config_dir_with_block
    local secret="$KTP_TMP/secret.toml"
    echo 'rule = ["port=80 proxy=direct"]' > "$secret"
    chmod 600 "$secret"
    start_ktproxy --config "$CONF" || fail "ktproxy did not start"
    port80_blocked || fail "port 80 not blocked"
    ln -s "$secret" "$CONF.link" && mv -fT "$CONF.link" "$CONF"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reload refused.*config $CONF: is a symlink" || fail "a symlink in the config's place was not refused"
    port80_blocked || fail "port 80 opened by the symlink's target"
    ln -f "$secret" "$CONF.hard" && mv -fT "$CONF.hard" "$CONF"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reload refused.*config $CONF: has 2 hard links" || fail "a hard link in the config's place was not refused"
    port80_blocked || fail "port 80 opened through the hard link"
    rm -f "$CONF" && echo 'rule = ["port=80 proxy=direct"]' > "$CONF" && chmod 600 "$CONF"
    chmod 777 "$CONF_DIR"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reload refused.*config $CONF: its directory is writable by group or others" ||
        fail "a config in a directory others can write was not refused"
    port80_blocked || fail "port 80 opened from a directory others can write"
    stop_ktproxy
}

test_relay_stops_when_the_helper_dies() {
    # Without its helper the relay can neither reattach a recreated cgroup,
    # reread a root-only config nor undo setup: it says so and exits
    # non-zero (the unit restarts it) instead of running on half-blind.
    trap stop_ktproxy EXIT
    start_ktproxy || fail "ktproxy did not start"
    local helper
    helper=$(helper_pid)
    [ -n "$helper" ] || fail "no privileged helper process under $KTP_PID"
    kill -KILL "$helper"
    for _ in $(seq 100); do [ -s "$KTP_LOG.rc" ] && break; sleep 0.1; done
    [ -s "$KTP_LOG.rc" ] || fail "the relay ran on for 10 s after its helper $helper was killed"
    local rc=0
    stop_ktproxy || rc=$?
    expect_eq "$rc" 1 "the relay's exit status"
    expect_file_match "$KTP_LOG" "privileged helper .pid $helper. died" "log"
}

test_a_helper_that_answered_too_late_gets_no_further_requests() {
    # A stalled helper (stopped here) lets the relay's request time out
    # (15 s); its late reply must never be read as the answer to a later
    # request. The relay gives up on it (closes its end) and stops as it
    # does when its helper dies (the unit restarts it); the helper, once it
    # runs again, finds the relay gone and ends. Here the late reply is the
    # config of the first SIGHUP (port 80 direct); the second SIGHUP's file
    # blocks port 80 again: nothing may apply the first.
    STALLED_HELPER=""
    trap 'kill -CONT "$STALLED_HELPER" 2>/dev/null; stop_ktproxy' EXIT
    config_dir_with_block
    start_ktproxy --config "$CONF" || fail "ktproxy did not start"
    port80_blocked || fail "port 80 not blocked"
    local helper
    helper=$(helper_pid)
    [ -n "$helper" ] || fail "no privileged helper process under $KTP_PID"
    STALLED_HELPER=$helper
    kill -STOP "$helper"
    echo 'rule = ["port=80 proxy=direct"]' > "$CONF"
    kill -HUP "$KTP_PID"
    wait_log "$KTP_LOG" "reload refused.*did not answer; no further requests go to it" 25 ||
        fail "the stalled helper's reload was not refused"
    kill -CONT "$helper"
    echo 'rule = ["port=80 block"]' > "$CONF"
    kill -HUP "$KTP_PID" 2>/dev/null || true
    for _ in $(seq 100); do [ -s "$KTP_LOG.rc" ] && break; sleep 0.1; done
    expect_no_file_match "$KTP_LOG" "reloaded:" "a reload applied from a late reply"
    [ -s "$KTP_LOG.rc" ] || fail "the relay runs on with a helper it gave up on"
    local rc=0
    stop_ktproxy || rc=$?
    expect_eq "$rc" 1 "the relay's exit status"
    expect_file_match "$KTP_LOG" "privileged helper .pid $helper. stopped answering" "log"
}

test_proxy_user_root_keeps_every_privilege() {
    trap stop_ktproxy EXIT
    start_ktproxy --proxy-user root || fail "ktproxy did not start"
    expect_eq "$(status_field "$KTP_PID" Uid | awk '{ print $1 }')" 0 "Uid"
    expect_eq "$(status_field "$KTP_PID" Seccomp)" 0 "Seccomp"
    [ -z "$(helper_pid)" ] || fail "a helper runs with --proxy-user root"
    stop_ktproxy
    local rc=0
    "$KTPROXY" --cgroup "$KTP_CG" --proxy-user no-such-user-here 2>"$KTP_TMP/err" || rc=$?
    expect_eq "$rc" 1 "exit status for an unknown user"
    expect_file_match "$KTP_TMP/err" "--proxy-user no-such-user-here: no such user" "error"
}

run_all_tests "$0"
finish
