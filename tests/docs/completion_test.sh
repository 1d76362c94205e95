#!/bin/bash
# The bash completion, driven as bash drives it: flags of the daemon and of
# each command, command names, values of enumerated flags.
#   completion_test.sh KTPROXY COMPLETION_FILE
set -uo pipefail
ktproxy="$1"
completion="$2"
failed=0

# complete WORD...: what _ktproxy offers for the last word of "ktproxy WORD...".
complete_words() {
    bash -c '
        . "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
        COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        _ktproxy ktproxy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s\n" "${COMPREPLY[@]}"' sh "$completion" "$ktproxy" "$@"
}

expect() {
    local want="$1"
    shift
    local got
    got="$(complete_words "$@" | sort | tr '\n' ' ' | sed 's/ $//')"
    if [ "$got" = "$want" ]; then
        echo "PASS completion: ktproxy ${*} -> $want"
    else
        echo "FAIL completion: ktproxy ${*}: expected '$want', got '$got'"
        failed=1
    fi
}

expect "--fail-closed" --fai
expect "--gateway-iface --gateway-mark --gateway-table" --cgroup app --gate
expect "doctor" do
expect "ctl" ct
expect "dry-run" ctl ""
expect "off on" ctl dry-run ""
expect "--control" ctl --con
expect "--dry-run" --dr
expect "--json" doctor --js
expect "--json" status --j
expect "--user --user-timeout" run --us
expect "buffers splice" --relay ""
expect "json text" run --log-format ""
# A flag of another command is not offered.
expect "" cleanup --js
exit $failed
