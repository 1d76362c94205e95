#!/bin/bash
# The shipped unit's `systemd-analyze security` exposure, printed beside that
# of sing-box's upstream unit (tests/fixtures/sing-box.service, source in its
# header), and held at or below it. Offline analysis of the unit files: no
# running systemd needed. Figures recorded in docs/architecture.md.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
command -v systemd-analyze >/dev/null || { echo "SKIP $(basename "$0"): no systemd-analyze"; exit 77; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

# exposure UNITFILE: the overall exposure number (e.g. 3.4).
exposure() {
    systemd-analyze security --offline=true --no-pager "$1" 2>/dev/null |
        sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p'
}

test_ktproxy_unit_exposure_is_at_most_sing_box_s() {
    # An instance of the template, its ExecStart pointing at a binary that
    # exists here (offline analysis checks the path).
    sed "s|/usr/sbin/ktproxy|$(command -v true)|" "$ROOT/scripts/ktproxy@.service" > "$DIR/ktproxy@test.service"
    sed '/^#/d' "$ROOT/tests/fixtures/sing-box.service" |
        sed "s|/usr/bin/sing-box|$(command -v true)|" > "$DIR/sing-box.service"
    local ours theirs
    ours=$(cd "$DIR" && exposure ktproxy@test.service)
    theirs=$(cd "$DIR" && exposure sing-box.service)
    [ -n "$ours" ] && [ -n "$theirs" ] || fail "no exposure figure (ours '$ours', sing-box '$theirs')"
    printf '    systemd-analyze security exposure: ktproxy@.service %s, sing-box.service %s\n' "$ours" "$theirs"
    awk -v a="$ours" -v b="$theirs" 'BEGIN { exit !(a <= b) }' ||
        fail "ktproxy@.service exposure $ours is above sing-box's $theirs"
}

run_all_tests "$0"
finish
