# shellcheck shell=bash
# Assertions and bookkeeping for the e2e suites: each test is a function,
# `run_test NAME` runs it in a subshell and prints PASS/FAIL; `finish`
# prints the tally and sets the exit status. Sourced.

. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/netns.sh"

E2E_PASS=0
E2E_FAIL=0
E2E_FAILED=()

# fail MESSAGE: ends the current test (it runs in a subshell).
fail() { printf '    %s\n' "$*" >&2; exit 1; }
expect_eq() { [ "$1" = "$2" ] || fail "${3:-value}: expected '$2', got '$1'"; }
expect_ne() { [ "$1" != "$2" ] || fail "${3:-value}: expected something other than '$2'"; }
expect_match() { printf '%s' "$1" | grep -Eq -- "$2" || fail "${3:-text}: '$1' does not match /$2/"; }
expect_file_match() { grep -Eq -- "$2" "$1" || { tail -5 "$1" >&2; fail "${3:-$1} has no line matching /$2/"; }; }
expect_no_file_match() { ! grep -Eq -- "$2" "$1" || fail "${3:-$1} has a line matching /$2/"; }

run_test() {
    local name="$1"
    local start=$SECONDS
    if ( set -e; "$name" ); then
        E2E_PASS=$((E2E_PASS + 1))
        printf 'PASS %s (%ss)\n' "$name" $((SECONDS - start))
    else
        E2E_FAIL=$((E2E_FAIL + 1))
        E2E_FAILED+=("$name")
        printf 'FAIL %s (%ss)\n' "$name" $((SECONDS - start))
        # The newest ktproxy log: a test may have started its own instance
        # (in its subshell, so $KTP_LOG here can be an older one).
        local log
        log=$(ls -t "$KTP_TMP"/ktproxy.*.log 2>/dev/null | head -1)
        [ -n "$log" ] || log="$KTP_LOG"
        [ -n "$log" ] && [ -f "$log" ] && tail -5 "$log" | sed 's/^/    /' >&2
    fi
}

finish() {
    printf '%s: %d passed, %d failed\n' "$(basename "$0")" "$E2E_PASS" "$E2E_FAIL"
    [ "$E2E_FAIL" -eq 0 ]
}

skip_unless_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "SKIP $(basename "$0"): needs root"
        exit 77
    fi
}

# wait_log FILE PATTERN [SECONDS]: until a line matches (bounded; default 5s).
wait_log() {
    local n=$(( ${3:-5} * 20 ))
    for _ in $(seq "$n"); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# conn_field LINE NAME: a key=value field of a ktproxy conn line.
conn_field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# Runs every test_* function of the suite file, in file order (KTP_ONLY=word
# runs only the tests whose name contains it).
run_all_tests() {
    local t
    for t in $(grep -o '^test_[a-z0-9_]*' "$1"); do
        [ -n "${KTP_ONLY:-}" ] && [[ "$t" != *"$KTP_ONLY"* ]] && continue
        run_test "$t"
    done
}
