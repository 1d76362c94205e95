#!/bin/bash
# End-to-end tests of `ktproxy doctor`: all good on this machine, then one
# fault at a time, each injected where it harms nothing else (the test's own
# cgroup and network namespace, a private mount namespace) or restored on
# every exit path (the io_uring sysctl), and each must give its check's verdict.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
IF_CLI="kv${KTP_ID}c"
FOREIGN_PIN="/sys/fs/bpf/ktp-doctor-foreign-$KTP_ID"

# doctor ARGS...: runs ktproxy doctor --json in the client netns; the report
# in $KTP_TMP/doctor.json, the exit status in $KTP_TMP/doctor.rc.
doctor() {
    local rc=0
    in_cli "$KTPROXY" doctor --json "$@" > "$KTP_TMP/doctor.json" 2> "$KTP_TMP/doctor.err" || rc=$?
    echo "$rc" > "$KTP_TMP/doctor.rc"
}
doctor_rc() { cat "$KTP_TMP/doctor.rc"; }
# check_status NAME: ok, warn, fail or skip of one check in the last report.
check_status() { jq -r --arg n "$1" '.checks[] | select(.name == $n) | .status' "$KTP_TMP/doctor.json"; }
check_field() { jq -r --arg n "$1" --arg f "$2" '.checks[] | select(.name == $n) | .[$f]' "$KTP_TMP/doctor.json"; }

test_doctor_passes_on_this_machine() {
    doctor --cgroup "$KTP_CG"
    local bad
    bad=$(jq -r '.checks[] | select(.status == "fail" or .status == "skip") | "\(.name): \(.verdict)"' \
        "$KTP_TMP/doctor.json")
    expect_eq "$bad" "" "failed or skipped checks"
    expect_eq "$(doctor_rc)" 0 "exit status"
    expect_eq "$(jq -r .ok "$KTP_TMP/doctor.json")" true "ok"
    local c
    for c in kernel btf privileges cgroup2 cgroup bpf-hooks bpf-helpers bpf-link bpf-load io-uring buffer-rings \
        netns-cookie bpffs cgroup-hooks instance ip-rules netfilter gateway; do
        expect_eq "$(check_status "$c")" ok "check $c"
    done
    # The text report: one verdict line per check, "fix:" lines only for warnings here.
    in_cli "$KTPROXY" doctor --cgroup "$KTP_CG" > "$KTP_TMP/doctor.txt" || fail "text report exited $?"
    expect_file_match "$KTP_TMP/doctor.txt" '^ok +bpf-load +ktproxy.s socket hooks pass the verifier$'
    expect_file_match "$KTP_TMP/doctor.txt" '^all checks passed'
}

test_doctor_bad_usage_exits_2() {
    local rc=0
    "$KTPROXY" doctor --no-such-flag 2> "$KTP_TMP/err" || rc=$?
    expect_eq "$rc" 2 "exit status"
    expect_file_match "$KTP_TMP/err" 'no-such-flag'
    rc=0
    "$KTPROXY" doctor --max-conns 5 2> "$KTP_TMP/err" || rc=$?
    expect_eq "$rc" 2 "exit status for --max-conns 5"
}

test_doctor_missing_cgroup_fails() {
    doctor --cgroup "$KTP_CG_PARENT/no-such-cgroup"
    expect_eq "$(check_status cgroup)" fail "cgroup check"
    expect_eq "$(doctor_rc)" 1 "exit status"
    expect_match "$(check_field cgroup fix)" 'mkdir' "fix"
}

# Read once for the whole suite, so that the suite's cleanup (on any exit,
# TERM from a timeout included) puts the host's value back as well.
IO_URING_WAS=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null)
restore_io_uring() { [ -z "$IO_URING_WAS" ] || sysctl -q -w "kernel.io_uring_disabled=$IO_URING_WAS" || true; }

test_doctor_io_uring_disabled_by_sysctl() {
    [ -e /proc/sys/kernel/io_uring_disabled ] || { echo "    (no kernel.io_uring_disabled before Linux 6.6: nothing to inject)"; return 0; }
    # Restored on every way out of this subshell, and by the suite's cleanup.
    trap restore_io_uring EXIT
    # The sysctl is host-wide: off for the one doctor run, nothing else.
    sysctl -q -w kernel.io_uring_disabled=2
    doctor
    restore_io_uring
    expect_eq "$(cat /proc/sys/kernel/io_uring_disabled)" "$IO_URING_WAS" "sysctl restored"
    expect_eq "$(check_status io-uring)" fail "io-uring check"
    expect_match "$(check_field io-uring verdict)" 'kernel.io_uring_disabled = 2' "verdict"
    expect_match "$(check_field io-uring fix)" 'sysctl -w kernel.io_uring_disabled=0' "fix"
    expect_eq "$(doctor_rc)" 1 "exit status"
    # And back to normal once restored.
    doctor
    expect_eq "$(check_status io-uring)" ok "io-uring check after the restore"
}

# A cgroup/connect4 program that is not ktproxy's, compiled here.
foreign_prog() {
    cat > "$KTP_TMP/foreign.bpf.c" <<'C'
__attribute__((section("cgroup/connect4"), used)) int foreign_connect(void *ctx) { return 1; }
char _license[] __attribute__((section("license"), used)) = "GPL";
C
    clang -O2 -target bpf -c "$KTP_TMP/foreign.bpf.c" -o "$KTP_TMP/foreign.bpf.o" || fail "clang -target bpf failed"
    rm -f "$FOREIGN_PIN"
    bpftool prog load "$KTP_TMP/foreign.bpf.o" "$FOREIGN_PIN" type cgroup/connect4 || fail "bpftool prog load failed"
}
remove_foreign() {
    if [ -e "$FOREIGN_PIN" ]; then
        bpftool cgroup detach "$KTP_CG" connect4 pinned "$FOREIGN_PIN" 2>/dev/null || true
        rm -f "$FOREIGN_PIN"
    fi
}
KTP_EXTRA_CLEANUP+=(remove_foreign restore_io_uring)

test_doctor_foreign_program_on_the_cgroup() {
    foreign_prog
    trap remove_foreign EXIT
    # Exclusive (no flag): ktproxy's multi attach would be refused.
    bpftool cgroup attach "$KTP_CG" connect4 pinned "$FOREIGN_PIN" || fail "bpftool cgroup attach failed"
    doctor --cgroup "$KTP_CG"
    expect_eq "$(check_status cgroup-hooks)" fail "cgroup-hooks check, exclusive program"
    expect_match "$(check_field cgroup-hooks verdict)" "'foreign_connect' on connect4 of $KTP_CG \(exclusive" "verdict"
    expect_eq "$(doctor_rc)" 1 "exit status"
    # Proof that the verdict is right: ktproxy itself cannot start there.
    start_ktproxy 2>/dev/null && fail "ktproxy started on a cgroup with an exclusive foreign connect4"
    expect_file_match "$KTP_LOG" 'attach cgroup/connect4 .*Operation not permitted'
    # With BPF_F_ALLOW_MULTI both run: a warning, not a failure.
    bpftool cgroup detach "$KTP_CG" connect4 pinned "$FOREIGN_PIN" || fail "detach failed"
    bpftool cgroup attach "$KTP_CG" connect4 pinned "$FOREIGN_PIN" multi || fail "multi attach failed"
    doctor --cgroup "$KTP_CG"
    expect_eq "$(check_status cgroup-hooks)" warn "cgroup-hooks check, multi program"
    expect_match "$(check_field cgroup-hooks verdict)" 'BPF_F_ALLOW_MULTI: runs beside' "verdict"
    expect_eq "$(doctor_rc)" 0 "exit status"
}

test_doctor_conflicting_fwmark_rules() {
    # In the client netns only: ip rules are per network namespace.
    ip -n "$KTP_CLI" rule add fwmark 0x6b75 lookup 100 pref 100
    doctor --gateway-iface "$IF_CLI"
    expect_eq "$(check_status ip-rules)" fail "ip-rules check, a rule on the gateway mark"
    expect_match "$(check_field ip-rules verdict)" 'pref 100 fwmark 0x6b75/0xffffffff table 100 catches the gateway' "verdict"
    expect_eq "$(doctor_rc)" 1 "exit status"
    ip -n "$KTP_CLI" rule del pref 100
    # A rule on ktproxy's own outgoing mark may be meant (egress via a VPN
    # table): a warning.
    ip -n "$KTP_CLI" rule add fwmark 0x6b74/0xffff lookup 101 pref 101
    doctor
    expect_eq "$(check_status ip-rules)" warn "ip-rules check, a rule on --mark"
    expect_match "$(check_field ip-rules verdict)" 'catches ktproxy.s outgoing sockets' "verdict"
    ip -n "$KTP_CLI" rule del pref 101
    doctor
    expect_eq "$(check_status ip-rules)" ok "ip-rules check once the rules are gone"
}

# nft and iptables rules live in the client netns (rulesets are per network
# namespace, and doctor runs there), in a throwaway nft table of their own.
remove_netfilter() {
    in_cli nft delete table inet ktpdoc 2>/dev/null || true
    in_cli iptables -t mangle -F PREROUTING 2>/dev/null || true
    ip -n "$KTP_CLI" rule del pref 102 2>/dev/null || true
}
KTP_EXTRA_CLEANUP+=(remove_netfilter)

test_doctor_netfilter_rules_on_ktproxy_marks() {
    command -v nft >/dev/null || { echo "    (no nft: install nftables)"; return 1; }
    trap remove_netfilter EXIT
    in_cli nft add table inet ktpdoc
    in_cli nft add chain inet ktpdoc out '{ type filter hook output priority 0; }'
    in_cli nft add rule inet ktpdoc out meta mark 0x6b74 drop
    # iptables(-nft): its MARK target is an opaque "xt" in nft's JSON, so
    # doctor reads it from iptables-save (and reports it once).
    in_cli iptables -t mangle -A PREROUTING -j MARK --set-mark 0x6b75
    # A rule that exempts the mark is how tools leave ktproxy alone: not flagged.
    in_cli nft add rule inet ktpdoc out meta mark != 0x6b74 accept
    # And an ip rule on the same mark: its own check flags it.
    ip -n "$KTP_CLI" rule add fwmark 0x6b74 lookup 102 pref 102
    doctor
    expect_eq "$(check_status netfilter)" warn "netfilter check"
    local v
    v=$(check_field netfilter verdict)
    expect_match "$v" '^2 rules use ktproxy.s marks: ' "verdict"
    expect_match "$v" 'nft inet ktpdoc chain out handle [0-9]+ matches meta mark 0x6b74 \(--mark 0x6b74\)' "verdict, nft rule"
    expect_match "$v" 'iptables -t mangle -A PREROUTING -j MARK --set-xmark 0x6b75/0xffffffff sets mark 0x6b75/0xffffffff \(--gateway-mark 0x6b75\)' "verdict, iptables rule"
    expect_match "$(check_field netfilter fix)" 'pick another --mark/--gateway-mark' "fix"
    expect_eq "$(check_status ip-rules)" warn "ip-rules check"
    expect_match "$(check_field ip-rules verdict)" 'pref 102 fwmark 0x6b74/0xffffffff table 102 catches ktproxy.s outgoing sockets' "ip-rules verdict"
    # Warnings only: ktproxy runs, exit 0; the JSON totals count both.
    expect_eq "$(doctor_rc)" 0 "exit status"
    expect_eq "$(jq -r '[.checks[] | select(.status == "warn") | .name] | map(select(. == "netfilter" or . == "ip-rules")) | length' "$KTP_TMP/doctor.json")" 2 "warn checks"
    [ "$(jq -r .warnings "$KTP_TMP/doctor.json")" -ge 2 ] || fail "warnings count under 2"
    # Another --mark: the nft rule is no longer about ktproxy, the iptables one still is.
    doctor --mark 0x100
    expect_match "$(check_field netfilter verdict)" '^1 rule uses ktproxy.s marks: iptables ' "verdict with --mark 0x100"
    remove_netfilter
    doctor
    expect_eq "$(check_status netfilter)" ok "netfilter check once the rules are gone"
    expect_match "$(check_field netfilter verdict)" 'read: iptables-save, ip6tables-save, nft' "verdict, tools read"
    expect_eq "$(check_status ip-rules)" ok "ip-rules check once the rule is gone"
}

test_doctor_netfilter_output_too_long_is_not_an_all_clear() {
    # An iptables-save (a stand-in first in PATH) whose rules run past what
    # doctor reads, the rule on --mark last: doctor must not say no rule
    # uses the mark when it read only part of them.
    mkdir -p "$KTP_TMP/fakebin"
    cat > "$KTP_TMP/fakebin/iptables-save" <<'SH'
#!/bin/sh
echo '*mangle'
head -c 18000000 /dev/zero | tr '\0' '#' | fold -w 100
echo
echo '-A OUTPUT -m mark --mark 0x6b74 -j ACCEPT'
echo 'COMMIT'
SH
    chmod +x "$KTP_TMP/fakebin/iptables-save"
    PATH="$KTP_TMP/fakebin:$PATH" doctor
    expect_eq "$(check_status netfilter)" warn "netfilter check"
    expect_match "$(check_field netfilter verdict)" 'iptables-save: .*over 16 MiB' "verdict"
}

test_doctor_tool_that_closes_its_pipes_and_stays_is_cut_off() {
    # An nft (a stand-in first in PATH) that closes stdout and stderr, then
    # sleeps: doctor must give it up after its 5 s, say so in one line, and
    # finish (it waited for the exit without a bound).
    mkdir -p "$KTP_TMP/fakebin-mute"
    printf '#!/bin/sh\nexec >&- 2>&-\nexec sleep 60\n' > "$KTP_TMP/fakebin-mute/nft"
    chmod +x "$KTP_TMP/fakebin-mute/nft"
    PATH="$KTP_TMP/fakebin-mute:$PATH" timeout 30 nsenter --net="/run/netns/$KTP_CLI" "$KTPROXY" doctor --json \
        > "$KTP_TMP/doctor.json" 2> "$KTP_TMP/doctor.err"
    local rc=$?
    [ "$rc" -ne 124 ] || fail "doctor still waiting for the mute nft after 30 s"
    expect_match "$(check_field netfilter verdict)" 'nft: no answer within 5 s' "verdict"
}

test_doctor_foreign_tc_filter_on_a_gateway_interface() {
    # A TC filter of someone else's, before ktproxy's priority, in the test's netns.
    cat > "$KTP_TMP/foreign_tc.bpf.c" <<'C'
__attribute__((section("tc"), used)) int foreign_tc(void *skb) { return -1; }
char _license[] __attribute__((section("license"), used)) = "GPL";
C
    clang -O2 -target bpf -c "$KTP_TMP/foreign_tc.bpf.c" -o "$KTP_TMP/foreign_tc.bpf.o" || fail "clang -target bpf failed"
    in_cli tc qdisc add dev "$IF_CLI" clsact
    in_cli tc filter add dev "$IF_CLI" ingress prio 1 handle 1 bpf da obj "$KTP_TMP/foreign_tc.bpf.o" sec tc ||
        fail "tc filter add failed"
    doctor --gateway-iface "$IF_CLI"
    in_cli tc qdisc del dev "$IF_CLI" clsact
    expect_eq "$(check_status "tc:$IF_CLI")" warn "tc:$IF_CLI check"
    expect_match "$(check_field "tc:$IF_CLI" verdict)" 'bpf filter pref 1 handle 0x1 .*runs before ktproxy' "verdict"
    doctor --gateway-iface "$IF_CLI"
    expect_eq "$(check_status "tc:$IF_CLI")" ok "tc:$IF_CLI check once the filter is gone"
}

test_doctor_bpffs_missing() {
    # A private mount namespace, so only this doctor sees /sys/fs/bpf gone.
    unshare -m sh -c 'umount -l /sys/fs/bpf 2>/dev/null; exec "$@"' sh \
        nsenter --net="/run/netns/$KTP_CLI" "$KTPROXY" doctor --json --fail-closed > "$KTP_TMP/doctor.json"
    echo $? > "$KTP_TMP/doctor.rc"
    expect_eq "$(check_status bpffs)" fail "bpffs check with --fail-closed"
    expect_match "$(check_field bpffs fix)" 'mount -t bpf bpffs /sys/fs/bpf' "fix"
    expect_eq "$(doctor_rc)" 1 "exit status"
    unshare -m sh -c 'umount -l /sys/fs/bpf 2>/dev/null; exec "$@"' sh "$KTPROXY" doctor --json > "$KTP_TMP/doctor.json"
    expect_eq "$(check_status bpffs)" warn "bpffs check without --fail-closed"
    # The host's mount is untouched.
    expect_eq "$(stat -f -c %T /sys/fs/bpf)" bpf_fs "/sys/fs/bpf outside the test"
}

test_doctor_instance_already_running() {
    start_ktproxy || fail "ktproxy did not start"
    doctor --cgroup "$KTP_CG"
    expect_eq "$(check_status instance)" fail "instance check"
    expect_match "$(check_field instance verdict)" 'already runs on .*control socket' "verdict"
    expect_eq "$(doctor_rc)" 1 "exit status"
    stop_ktproxy || fail "ktproxy exited $?"
    doctor --cgroup "$KTP_CG"
    expect_eq "$(check_status instance)" ok "instance check once it stopped"
}

run_all_tests "$0"
finish
