#!/bin/bash
# The man page and the parsers cannot drift: every flag that any command's
# --help shows is defined in docs/ktproxy.8.scd (a "*--flag*" definition
# line), every flag defined there is in some --help, every command has its
# section, and --list-flags (which the completion uses) agrees with --help.
#   man_flags_test.sh KTPROXY MAN_SCD
set -uo pipefail
ktproxy="$1"
scd="$2"
failed=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

: > "$tmp/help"
: > "$tmp/list"
for cmd in "" run status cleanup doctor ctl; do
    # shellcheck disable=SC2086
    # A flag with a negated name shows both on one line: --udp,--no-udp{false}.
    "$ktproxy" $cmd --help | grep -oE '^ +(-[a-z],)?--[a-z0-9-]+(,--[a-z0-9-]+)*' | grep -oE -- '--[a-z0-9-]+' |
        sed "s/^/${cmd:-ktproxy} /" >> "$tmp/help"
done
"$ktproxy" --list-flags | sed 's/=$//' >> "$tmp/list"
sort -u -o "$tmp/help" "$tmp/help"
sort -u -o "$tmp/list" "$tmp/list"
if diff -u "$tmp/help" "$tmp/list" > "$tmp/d1"; then
    echo "PASS man: --list-flags lists exactly the flags of every --help"
else
    echo "FAIL man: --list-flags and --help differ:"; sed 's/^/    /' "$tmp/d1"; failed=1
fi

cut -d' ' -f2 "$tmp/help" | sort -u > "$tmp/help_flags"
grep -oE '^\*(-[a-z]\*, \*)?--[a-z0-9-]+\*' "$scd" | grep -oE -- '--[a-z0-9-]+' | sort -u > "$tmp/man_flags"
missing="$(comm -23 "$tmp/help_flags" "$tmp/man_flags" | tr '\n' ' ')"
extra="$(comm -13 "$tmp/help_flags" "$tmp/man_flags" | tr '\n' ' ')"
if [ -z "$missing" ]; then
    echo "PASS man: every flag in --help is defined in the man page"
else
    echo "FAIL man: in --help but not defined in $scd: $missing"; failed=1
fi
if [ -z "$extra" ]; then
    echo "PASS man: every flag the man page defines is in some --help"
else
    echo "FAIL man: defined in $scd but in no --help: $extra"; failed=1
fi
for cmd in run status cleanup doctor ctl; do
    if grep -qE "^\*$cmd\*" "$scd" && grep -qE "^## $cmd\$" "$scd"; then
        echo "PASS man: command $cmd is described and has its options section"
    else
        echo "FAIL man: command $cmd lacks its *$cmd* entry under COMMANDS or its '## $cmd' section"; failed=1
    fi
done
# Each command's own flags (beyond the daemon's) are named in its section.
for cmd in run status doctor ctl; do
    section="$(awk -v h="## $cmd" '$0 == h { on = 1; next } /^#/ { on = 0 } on' "$scd")"
    for f in $(grep "^$cmd " "$tmp/help" | cut -d' ' -f2); do
        grep -q -- "^ktproxy $f\$" "$tmp/help" && continue
        if ! grep -q -- "$f" <<<"$section"; then
            echo "FAIL man: $cmd's $f is not in the '## $cmd' section"; failed=1
        fi
    done
done
exit $failed
