# shellcheck shell=bash
# A far-away upstream for the WAN bench and tests: a third namespace behind a
# delayed link (tools/ktp-delay: this kernel has no sch_netem). Sourced after
# netns.sh, once ktp_topo_up has run.
#
#   client host  $KTP_CLI  10.202.0.1/24 on kd<ID>c ──┐
#                                        ktp-delay --delay RTT/2 each way
#   far host     $KTP_WAN  10.202.0.2/24 on kd<ID>w ──┘  upstream proxies
#                          10.203.0.1/32 on lo             the destination, near them
#
# 10.x addresses only and no default route anywhere: nothing sent here can
# leave these namespaces. The client host routes 10.203.0.0/24 through the
# link as well, so a direct connection is just as far away.

KTP_WAN="ktp${KTP_ID}w"
KTP_WAN_CLI4=10.202.0.1
KTP_WAN4=10.202.0.2
KTP_WAN_DST4=10.203.0.1
KTP_WAN_DELAY_PID=""

in_wan() { nsenter --net="/run/netns/$KTP_WAN" "$@"; }

# ktp_wan_up RTT_MS: builds the far host and the link (RTT_MS round trip).
ktp_wan_up() {
    local rtt="$1" delay_bin="${KTP_BUILD:-build}/tools/ktp-delay"
    [ -x "$delay_bin" ] || ktp_die "no $delay_bin (build first)"
    ip netns add "$KTP_WAN"
    KTP_EXTRA_CLEANUP+=("ktp_wan_down")
    ip -n "$KTP_WAN" link set lo up
    ip -n "$KTP_WAN" addr add "$KTP_WAN_DST4/32" dev lo
    "$delay_bin" --ns-a "$KTP_CLI" --dev-a "kd${KTP_ID}c" --ns-b "$KTP_WAN" --dev-b "kd${KTP_ID}w" \
        --delay "$(awk -v r="$rtt" 'BEGIN { print r / 2 }')" > "$KTP_TMP/ktp-delay.log" 2>&1 &
    KTP_WAN_DELAY_PID=$!
    KTP_PIDS+=("$KTP_WAN_DELAY_PID")
    local _
    for _ in $(seq 100); do
        ip -n "$KTP_WAN" link show "kd${KTP_ID}w" >/dev/null 2>&1 && break
        sleep 0.05
    done
    ip -n "$KTP_WAN" link show "kd${KTP_ID}w" >/dev/null 2>&1 || { cat "$KTP_TMP/ktp-delay.log" >&2; ktp_die "ktp-delay did not start"; }
    # A larger MTU than Ethernet's: fewer packets for the user-space link to
    # carry in the bulk test; the delay is per packet either way.
    ip -n "$KTP_CLI" link set "kd${KTP_ID}c" mtu 9000 up
    ip -n "$KTP_WAN" link set "kd${KTP_ID}w" mtu 9000 up
    ip -n "$KTP_CLI" addr add "$KTP_WAN_CLI4/24" dev "kd${KTP_ID}c"
    ip -n "$KTP_WAN" addr add "$KTP_WAN4/24" dev "kd${KTP_ID}w"
    ip -n "$KTP_CLI" route add 10.203.0.0/24 dev "kd${KTP_ID}c"
}

ktp_wan_down() {
    [ -n "$KTP_WAN_DELAY_PID" ] && kill "$KTP_WAN_DELAY_PID" 2>/dev/null
    if [ -e "/run/netns/$KTP_WAN" ]; then
        ip netns pids "$KTP_WAN" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$KTP_WAN" 2>/dev/null
    fi
    return 0
}

# A background process on the far host, stopped on cleanup.
ktp_wan_bg() {
    nsenter --net="/run/netns/$KTP_WAN" "$@" &
    KTP_PIDS+=("$!")
}
