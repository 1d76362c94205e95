#!/bin/bash
# The Debian package, end to end: build it (scripts/package), install it with
# apt-get, proxy curl with the installed /usr/sbin/ktproxy on the throwaway
# network, verify the installed unit, then remove and purge it and check that
# nothing is left: no files, no running instance, no pins of this test.
# The package is removed on every exit path. A machine that already has the
# ktproxy package installed is skipped: its install is not ours to remove.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

if dpkg-query -W -f='${Status}' ktproxy 2>/dev/null | grep -q 'install ok installed'; then
    echo "SKIP package.sh: the ktproxy package is already installed here"
    exit 77
fi

ktp_topo_up
start_nginx
BIN=/usr/sbin/ktproxy
# Only after the check above: from here on, an installed ktproxy is ours.
remove_package() {
    dpkg-query -W -f='${Status}' ktproxy 2>/dev/null | grep -q 'install ok installed' || return 0
    DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -q ktproxy >/dev/null 2>&1
}
KTP_EXTRA_CLEANUP+=(remove_package)

# The unit tests ran in meson test already: the package build skips them.
# KTP_DEB=PATH tests a package built before instead (while working on this suite).
DEB_DIR="$KTP_TMP/deb"
if [ -n "${KTP_DEB:-}" ]; then
    mkdir -p "$DEB_DIR" && cp "$KTP_DEB" "$DEB_DIR/" && echo "$DEB_DIR/$(basename "$KTP_DEB")" > "$KTP_TMP/package.out"
elif ! DEB_BUILD_OPTIONS=nocheck "$KTP_ROOT/scripts/package" "$DEB_DIR" > "$KTP_TMP/package.out"; then
    echo "FAIL test_package_builds"
    finish
    exit 1
fi
DEB=$(tail -1 "$KTP_TMP/package.out")
echo "PASS test_package_builds ($(basename "$DEB"))"
E2E_PASS=$((E2E_PASS + 1))

# The instance name (pins, control socket) of the test's app cgroup.
NAME=$(printf '%s' "${KTP_CG#"$(ktp_cgroup2_mount)"/}" | tr / _)
# A failed removal test leaves its --fail-closed pins: only this test's go.
remove_my_pins() {
    rm -rf "/sys/fs/bpf/ktproxy/$NAME"
    rm -f "/run/ktproxy/$NAME.pin-owner" "/run/ktproxy/$NAME.sock"
    rmdir /sys/fs/bpf/ktproxy 2>/dev/null || true
}
KTP_EXTRA_CLEANUP+=(remove_my_pins)

test_package_installs_with_apt() {
    local name
    name=$(basename "$DEB")
    expect_match "$name" '^ktproxy_[0-9][^_]*_[a-z0-9]+\.deb$' "package file name"
    (cd "$DEB_DIR" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$name") > "$KTP_TMP/apt.log" 2>&1 ||
        { tail -5 "$KTP_TMP/apt.log" >&2; fail "apt-get install ./$name failed"; }
    expect_match "$($BIN --version)" "^ktproxy $(dpkg-query -W -f='${Version}' ktproxy)\$" "--version against the package version"
    local f
    for f in "$BIN" /lib/systemd/system/ktproxy@.service /usr/share/man/man8/ktproxy.8.gz \
        /usr/share/bash-completion/completions/ktproxy /etc/ktproxy/example.toml; do
        [ -e "$f" ] || fail "$f is not installed"
    done
    expect_eq "$(stat -c %a /etc/ktproxy/example.toml)" 640 "mode of the example config"
    expect_match "$(dpkg-query -W -f='${Conffiles}' ktproxy)" '/etc/ktproxy/example.toml' "conffiles"
    if command -v man >/dev/null; then
        expect_match "$(man -w ktproxy 2>/dev/null)" 'man8/ktproxy.8' "man -w ktproxy"
    fi
}

test_installed_binary_proxies_curl() {
    local out lport
    KTPROXY=$BIN start_ktproxy || fail "$BIN did not start"
    out=$(in_app curl -sS --max-time 5 -o "$KTP_TMP/body" -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status"
    lport="${out##* }"
    expect_eq "$(cat "$KTP_TMP/body")" "hello from the server host" "body"
    wait_log "$KTP_LOG" "conn client=[^ ]+:$lport orig=$KTP_SRV4:80 " || fail "no conn line for curl's port $lport"
    stop_ktproxy || fail "ktproxy exited $?"
}

test_installed_example_config_is_accepted() {
    # The shipped example, read strictly; the command line's --cgroup wins
    # over the file's, so it runs on the test's cgroup.
    KTPROXY=$BIN start_ktproxy --config /etc/ktproxy/example.toml || fail "the example config was refused"
    stop_ktproxy || fail "ktproxy exited $?"
}

test_installed_unit_verifies() {
    systemd-analyze verify /lib/systemd/system/ktproxy@.service > "$KTP_TMP/verify.log" 2>&1 ||
        { cat "$KTP_TMP/verify.log" >&2; fail "systemd-analyze verify failed"; }
    expect_no_file_match "$KTP_TMP/verify.log" 'ktproxy@' "systemd-analyze verify output"
    expect_match "$(grep '^ExecStart=' /lib/systemd/system/ktproxy@.service)" "$BIN --config /etc/ktproxy/%i.toml" "ExecStart"
}

test_installed_doctor_and_completion() {
    in_cli "$BIN" doctor --cgroup "$KTP_CG" > "$KTP_TMP/doctor.txt" || { cat "$KTP_TMP/doctor.txt" >&2; fail "doctor exited $?"; }
    local got
    got=$(bash -c '. /usr/share/bash-completion/completions/ktproxy
        COMP_WORDS=(ktproxy --fai); COMP_CWORD=1; _ktproxy; echo "${COMPREPLY[*]}"')
    expect_eq "$got" "--fail-closed" "completion of ktproxy --fai"
}

test_remove_purge_stops_instances_and_leaves_nothing() {
    # A live --fail-closed instance: removing the package must stop it and
    # take its pinned hooks away, or the cgroup's connects would be refused
    # with no ktproxy left.
    KTPROXY=$BIN start_ktproxy --fail-closed || fail "$BIN --fail-closed did not start"
    local pid=$KTP_PID
    [ -d "/sys/fs/bpf/ktproxy/$NAME" ] || fail "no pins at /sys/fs/bpf/ktproxy/$NAME"
    DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -q ktproxy > "$KTP_TMP/remove.log" 2>&1 ||
        { tail -5 "$KTP_TMP/remove.log" >&2; fail "apt-get remove --purge failed"; }
    for _ in $(seq 50); do [ -s "$KTP_LOG.rc" ] && break; sleep 0.1; done
    [ -d "/proc/$pid" ] && fail "ktproxy pid $pid still runs after the removal"
    expect_file_match "$KTP_LOG" 'stopped by TERM'
    local f
    for f in "$BIN" /lib/systemd/system/ktproxy@.service /usr/share/man/man8/ktproxy.8.gz \
        /usr/share/bash-completion/completions/ktproxy /etc/ktproxy "/sys/fs/bpf/ktproxy/$NAME" \
        "/run/ktproxy/$NAME.sock" "/run/ktproxy/$NAME.pin-owner"; do
        [ -e "$f" ] && fail "$f is left after apt-get remove --purge"
    done
    dpkg-query -W -f='${Status}' ktproxy 2>/dev/null | grep -q 'installed' && fail "dpkg still lists ktproxy"
    # Fail-open again: curl goes straight to nginx with its own port.
    local out lport
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status after the removal"
    lport="${out##* }"
    wait_log "$NGINX_LOG" "^$KTP_CLI4 $lport " || fail "nginx did not see curl's own port $lport: still redirected?"
}

run_all_tests "$0"
finish
