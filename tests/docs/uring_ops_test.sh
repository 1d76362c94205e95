#!/bin/bash
# Every io_uring request the sources make is in the restriction list of
# proxy/loop/uring_ops.h: a missing one would fail at run time with EACCES
# (the worker rings are restricted to that list). Args: the source root.
set -uo pipefail
root="$1"
list="$root/proxy/loop/uring_ops.h"
# io_uring_prep_NAME -> the opcode it submits.
declare -A OP=(
    [accept]=ACCEPT [multishot_accept]=ACCEPT [connect]=CONNECT [recv]=RECV [send]=SEND
    [shutdown]=SHUTDOWN [poll_add]=POLL_ADD [poll_multishot]=POLL_ADD [cancel]=ASYNC_CANCEL
    [cancel64]=ASYNC_CANCEL [cancel_fd]=ASYNC_CANCEL [link_timeout]=LINK_TIMEOUT [timeout]=TIMEOUT
    [read]=READ [nop]=NOP [close]=CLOSE
)
bad=0
# The doctor probes on its own rings; ring.cpp's NOP is the self-test of the restriction.
while read -r prep; do
    name=${prep#io_uring_prep_}
    [ "$name" = rw ] && continue  # spelled IORING_OP_X at the call, checked below
    op=${OP[$name]:-}
    if [ -z "$op" ]; then
        echo "io_uring_prep_$name: unknown to this test; add its opcode to uring_ops.h and to OP here"
        bad=1
    elif [ "$op" != NOP ] && ! grep -q "IORING_OP_$op," "$list"; then
        echo "io_uring_prep_$name submits IORING_OP_$op, which is not in proxy/loop/uring_ops.h"
        bad=1
    fi
done < <(grep -rhoE 'io_uring_prep_[a-z0-9_]+' "$root/proxy" --include=*.cpp --include=*.h \
             --exclude=doctor*.cpp | sort -u)
while read -r op; do
    grep -q "$op," "$list" || { echo "$op is used but not in proxy/loop/uring_ops.h"; bad=1; }
done < <(grep -rhoE 'IORING_OP_[A-Z_]+' "$root/proxy" --include=*.cpp --exclude=doctor*.cpp | sort -u)
[ "$bad" -eq 0 ] && echo "every io_uring request is in proxy/loop/uring_ops.h"
exit "$bad"
