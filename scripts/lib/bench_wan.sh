# shellcheck shell=bash
# The WAN section of scripts/bench (`scripts/bench --wan`): the upstream
# proxies and the destination sit behind a delayed link (tools/ktp-delay,
# scripts/lib/wan.sh), as a proxy abroad does; ktproxy (cold and warm
# session pool, optimistic data off and on), proxychains4 and redsocks go
# through the same microsocks, dante (user/password) and tinyproxy.
# Sourced by scripts/bench, which has parsed the arguments.
#
# Metrics, per RTT (default 10 and 50 ms), upstream and mode:
#   ttfb   connect + HTTP/1.0 GET of a 1 KiB file + its answer, sequential
#          (ktp-load latency): p50 and p99, in RTTs. The destination's own
#          time is nil next to a round trip; direct needs 2 (SYN, request).
#   rate   short connections/s, 50 at a time (ktp-load rate).
#   bulk   MB/s of one 32 MiB download (curl).
# And failover: a group of two microsocks (warm pools), TTFB of requests in a
# row with both up, right after the first is killed, and after the back-off.

. "$HERE/lib/netns.sh"
. "$HERE/lib/wan.sh"

WAN_RTTS="${KTP_BENCH_WAN_RTTS:-10 50}"
WAN_LAT="${KTP_BENCH_WAN_LAT:-100}"
WAN_RATE="${KTP_BENCH_WAN_RATE:-300}"
# proxychains4 runs ktp-load's non-blocking connects one at a time (its
# connect() blocks for the whole handshake): 5 a second at 50 ms.
WAN_RATE_PC="${KTP_BENCH_WAN_RATE_PC:-60}"
WAN_FAILOVER_N="${KTP_BENCH_WAN_FAILOVER_N:-20}"
WAN_OUT="${KTP_BENCH_WAN_OUT:-$KTP_BUILD/bench-wan.md}"
WAN_STARTED=$(date +%s)
progress() { printf '[bench-wan %3ds] %s\n' "$(( $(date +%s) - WAN_STARTED ))" "$*" >&2; }
[ "$QUICK" = 1 ] && { WAN_RTTS="${KTP_BENCH_WAN_RTTS:-10}"; WAN_LAT="${KTP_BENCH_WAN_LAT:-30}"; WAN_RATE=100; WAN_RATE_PC=20; }
KTPLOAD="$KTP_BUILD/tools/ktp-load"
RS_PORT=12345

wan_servers() {
    local d="$KTP_TMP/wan"
    mkdir -p "$d/html"
    chmod 755 "$KTP_TMP" "$d" "$d/html"
    head -c 1024 /dev/zero | tr '\0' x > "$d/html/index.html"
    head -c 33554432 /dev/urandom > "$d/html/bulk.bin"
    cat > "$d/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d;
       scgi_temp_path $d; server { listen $KTP_WAN_DST4:80 backlog=4096; root $d/html; } }
CONF
    # TCP Fast Open accepted by every listener of the far host (its own
    # namespace's setting: 0x400 needs no socket option from the servers),
    # for ktproxy's tfo=on rows; the other clients never ask for it.
    in_wan sysctl -qw net.ipv4.tcp_fastopen=1027
    ktp_wan_bg nginx -c "$d/nginx.conf"
    ktp_wan_bg microsocks -i "$KTP_WAN4" -p 1080
    ktp_dante_setup "$d" "$KTP_WAN4" 1081
    unshare -m sh -c "mount --bind '$d/passwd' /etc/passwd && mount --bind '$d/shadow' /etc/shadow &&
        exec nsenter --net=/run/netns/$KTP_WAN danted -f '$d/danted.conf' -N 2" &
    KTP_PIDS+=("$!")
    ktp_tinyproxy_setup "$d/tinyproxy" "$KTP_WAN4" 8888 10.202.0.0/24 80 Critical
    ktp_wan_bg tinyproxy -d -c "$d/tinyproxy/tinyproxy.conf"
    local p
    for p in 80 1080 1081 8888; do ktp_wait_port "$KTP_WAN" "$p" || ktp_die "WAN server on port $p did not start"; done
}

# The upstream URL, proxychains line and redsocks lines of each upstream.
wan_url() {
    case "$1" in
        microsocks) echo "socks5://$KTP_WAN4:1080" ;;
        dante) echo "socks5://ktpuser:s3cret@$KTP_WAN4:1081" ;;
        tinyproxy) echo "http://ktpuser:s3cret@$KTP_WAN4:8888" ;;
    esac
}
wan_pc_line() {
    case "$1" in
        microsocks) echo "socks5 $KTP_WAN4 1080" ;;
        dante) echo "socks5 $KTP_WAN4 1081 ktpuser s3cret" ;;
        tinyproxy) echo "http $KTP_WAN4 8888 ktpuser s3cret" ;;
    esac
}
wan_rs_lines() {
    case "$1" in
        microsocks) echo "ip = $KTP_WAN4; port = 1080; type = socks5;" ;;
        dante) echo "ip = $KTP_WAN4; port = 1081; type = socks5; login = \"ktpuser\"; password = \"s3cret\";" ;;
        tinyproxy) echo "ip = $KTP_WAN4; port = 8888; type = http-connect; login = \"ktpuser\"; password = \"s3cret\";" ;;
    esac
}

WAN_PIDS=()
wan_mode_up() {  # wan_mode_up MODE UPSTREAM
    local mode="$1" up="$2"
    case "$mode" in
        direct) ;;
        ktproxy-*)
            local opts
            case "$mode" in
                ktproxy-cold) opts="pool=0&optimistic=off" ;;
                ktproxy-cold-opt) opts="pool=0&optimistic=on" ;;
                ktproxy-cold-tfo) opts="pool=0&optimistic=off&tfo=on" ;;
                ktproxy-warm) opts="pool=8&optimistic=off" ;;
                ktproxy-warm-opt) opts="pool=8&optimistic=on" ;;
            esac
            start_ktproxy --workers 1 --upstream "u=$(wan_url "$up")?$opts" --default proxy=u >/dev/null 2>&1 \
                || { ktp_log "ktproxy did not start"; return 1; }
            # Let the pool fill: a few round trips.
            sleep 0.5
            ;;
        proxychains)
            printf 'strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\n%s\n' \
                "$(wan_pc_line "$up")" > "$KTP_TMP/pc.conf"
            ;;
        redsocks)
            cat > "$KTP_TMP/rs.conf" <<CONF
base { log_debug = off; log_info = off; log = stderr; daemon = off; redirector = iptables; }
redsocks { local_ip = 127.0.0.1; local_port = $RS_PORT; $(wan_rs_lines "$up") }
CONF
            in_cli redsocks -c "$KTP_TMP/rs.conf" 2>"$KTP_TMP/rs.log" &
            WAN_PIDS+=("$!")
            ktp_wait_port "$KTP_CLI" "$RS_PORT" || return 1
            in_cli iptables -t nat -A OUTPUT -p tcp -d "$KTP_WAN_DST4" -j REDIRECT --to-ports "$RS_PORT"
            ;;
    esac
}
wan_mode_down() {
    local p
    [ -n "$KTP_PID" ] && [ ! -e "$KTP_LOG.rc" ] && { stop_ktproxy >/dev/null 2>&1; KTP_PID=""; }
    for p in "${WAN_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    WAN_PIDS=()
    in_cli iptables -t nat -F OUTPUT 2>/dev/null
    return 0
}
wan_client() {  # wan_client MODE CMD...
    local mode="$1"
    shift
    case "$mode" in
        ktproxy-*) in_app "$@" ;;
        proxychains) in_cli proxychains4 -q -f "$KTP_TMP/pc.conf" "$@" ;;
        *) in_cli "$@" ;;
    esac
}

# The modes each upstream supports: optimistic data only where the server
# keeps the bytes (dante; microsocks drops them, tinyproxy is HTTP).
wan_modes() {
    case "$1" in
        dante) echo "ktproxy-cold ktproxy-cold-tfo ktproxy-warm ktproxy-warm-opt proxychains redsocks" ;;
        microsocks) echo "ktproxy-cold ktproxy-cold-tfo ktproxy-warm proxychains redsocks" ;;
        *) echo "ktproxy-cold ktproxy-warm proxychains redsocks" ;;
    esac
}

wan_measure() {  # wan_measure RTT UPSTREAM MODE: one table row
    local rtt="$1" up="$2" mode="$3" lat p50 p99 rate bulk
    lat=$(wan_client "$mode" "$KTPLOAD" latency --to "$KTP_WAN_DST4:80" --count "$WAN_LAT" --http /index.html \
        --conn-timeout 10 --timeout 600 2>/dev/null)
    p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<< "$lat")
    p99=$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<< "$lat")
    local conns="$WAN_RATE"
    [ "$mode" = proxychains ] && conns="$WAN_RATE_PC"
    rate=$(wan_client "$mode" "$KTPLOAD" rate --to "$KTP_WAN_DST4:80" --conns "$conns" --concurrency 50 \
        --http /index.html --conn-timeout 20 --timeout 600 2>/dev/null | sed -n 's/.*conns_per_s=\([0-9.]*\).*/\1/p')
    bulk=$(wan_client "$mode" curl -s -o /dev/null --max-time 120 -w '%{speed_download}' \
        "http://$KTP_WAN_DST4/bulk.bin" 2>/dev/null)
    local rtts50="na" rtts99="na"
    [ -n "$p50" ] && rtts50=$(awk -v u="$p50" -v r="$rtt" 'BEGIN { printf "%.2f", u / 1000 / r }')
    [ -n "$p99" ] && rtts99=$(awk -v u="$p99" -v r="$rtt" 'BEGIN { printf "%.2f", u / 1000 / r }')
    [ -n "$bulk" ] && bulk=$(awk -v b="$bulk" 'BEGIN { printf "%.1f", b / 1e6 }')
    printf '| %s ms | %s | %s | %s | %s | %s | %s |\n' "$rtt" "$up" "$mode" "$rtts50" "$rtts99" "${rate:-na}" \
        "${bulk:-na}"
}

# wan_failover RTT: rows of the failover table. The first member dies just
# before the second phase's first connection; each phase's p50 and max are in
# RTTs, its extra the p50 minus the p50 with both up (a max is as much the
# shared machine's scheduling as the proxy's).
wan_failover() {
    local rtt="$1" a b
    ktp_wan_bg microsocks -i "$KTP_WAN4" -p 1090
    a=$!
    ktp_wan_bg microsocks -i "$KTP_WAN4" -p 1091
    b=$!
    ktp_wait_port "$KTP_WAN" 1090 && ktp_wait_port "$KTP_WAN" 1091 || { ktp_log "failover: microsocks did not start"; return 1; }
    start_ktproxy --workers 1 --upstream "a=socks5://$KTP_WAN4:1090?pool=4" \
        --upstream "b=socks5://$KTP_WAN4:1091?pool=4" --upstream-group g=a,b --default proxy=g >/dev/null 2>&1 \
        || { ktp_log "failover: ktproxy did not start"; kill "$a" "$b"; return 1; }
    sleep "$(awk -v r="$rtt" 'BEGIN { print 0.5 + 4 * r / 1000 }')"
    local phase out base=""
    for phase in "both up" "a killed" "after back-off"; do
        case "$phase" in
            "a killed") kill "$a" ;;
            "after back-off") sleep 3.5 ;;
        esac
        out=$(in_app "$KTPLOAD" latency --to "$KTP_WAN_DST4:80" --count "$WAN_FAILOVER_N" --http /index.html \
            --conn-timeout 10 --timeout 120 2>/dev/null)
        local p50 max failed
        p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<< "$out")
        max=$(sed -n 's/.*max_us=\([0-9.]*\).*/\1/p' <<< "$out")
        failed=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<< "$out")
        [ -z "$base" ] && base="$p50"
        printf '| %s ms | %s | %s | %s | %s | %s |\n' "$rtt" "$phase" \
            "$(awk -v u="${p50:-0}" -v r="$rtt" 'BEGIN { printf "%.2f", u / 1000 / r }')" \
            "$(awk -v u="${max:-0}" -v r="$rtt" 'BEGIN { printf "%.2f", u / 1000 / r }')" \
            "$(awk -v u="${p50:-0}" -v b="${base:-0}" -v r="$rtt" 'BEGIN { printf "%.2f", (u - b) / 1000 / r }')" \
            "${failed:-na}"
    done
    stop_ktproxy >/dev/null 2>&1
    KTP_PID=""
    kill "$b" 2>/dev/null
    return 0
}

bench_wan_main() {
    ktp_require_root
    [ -x "$KTPLOAD" ] && [ -x "$KTP_BUILD/tools/ktp-delay" ] || ktp_die "build first (ninja -C $KTP_BUILD)"
    ktp_topo_up
    {
        echo "| RTT | upstream | mode | TTFB p50 (RTT) | TTFB p99 (RTT) | short conns/s (50 at once) | bulk MB/s |"
        echo "|-----|----------|------|----------------|----------------|----------------------------|-----------|"
    } > "$KTP_TMP/table"
    local rtt up mode
    for rtt in $WAN_RTTS; do
        ktp_wan_up "$rtt"
        wan_servers
        progress "WAN ${rtt} ms: failover"
        wan_failover "$rtt" >> "$KTP_TMP/failover"
        progress "WAN ${rtt} ms: direct"
        wan_measure "$rtt" "-" direct >> "$KTP_TMP/table"
        for up in dante microsocks tinyproxy; do
            for mode in $(wan_modes "$up"); do
                progress "WAN ${rtt} ms: $up $mode"
                if wan_mode_up "$mode" "$up"; then
                    wan_measure "$rtt" "$up" "$mode" >> "$KTP_TMP/table"
                else
                    printf '| %s ms | %s | %s | failed to start | | | |\n' "$rtt" "$up" "$mode" >> "$KTP_TMP/table"
                fi
                wan_mode_down
            done
        done
        # The next RTT gets a new link and new servers.
        local p
        for p in "${KTP_PIDS[@]}"; do kill "$p" 2>/dev/null; done
        sleep 0.3
        ktp_wan_down
        KTP_PIDS=()
    done
    {
        echo "WAN bench $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); " \
            "TTFB over $WAN_LAT sequential requests, rate over $WAN_RATE connections"
        echo
        cat "$KTP_TMP/table"
        echo
        echo "Failover: group g=a,b (microsocks each, pool=4), $WAN_FAILOVER_N requests in a row per phase"
        echo
        echo "| RTT | phase | TTFB p50 (RTT) | max (RTT) | p50 - p50 both up (RTT) | failed |"
        echo "|-----|-------|----------------|-----------|-------------------------|--------|"
        cat "$KTP_TMP/failover"
    } | tee "$WAN_OUT"
}
