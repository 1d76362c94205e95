# shellcheck shell=bash
# The DNS/UDP section of scripts/bench (`scripts/bench --udp`). Sourced by
# scripts/bench, which has parsed the arguments. On the test topology
# (scripts/lib/netns.sh), from the app cgroup:
#   dns    A queries to dnsmasq on the server host: direct (no ktproxy) vs
#          through ktproxy's forwarder (--udp, the name routed direct)
#   echo   64-byte datagrams to a UDP echo server: direct vs ktproxy's
#          relay routed direct vs through dante's UDP ASSOCIATE
# scripts/lib/udp_load.py measures each: datagrams/s with 32 outstanding,
# then p50/p99 of one at a time. Every run measures every mode, so the
# ratios to direct are of the same run; the table shows medians over the
# runs (--runs, default 3; --quick: 1 run, small counts).

. "$HERE/lib/netns.sh"

UDP_COUNT="${KTP_BENCH_UDP_COUNT:-20000}"
[ "$QUICK" = 1 ] && UDP_COUNT="${KTP_BENCH_UDP_COUNT:-2000}"
UDP_OUT="${KTP_BENCH_UDP_OUT:-$KTP_BUILD/bench-udp.md}"
UDP_STARTED=$(date +%s)
progress() { printf '[bench-udp %3ds] %s\n' "$(( $(date +%s) - UDP_STARTED ))" "$*" >&2; }

udp_servers() {
    local d="$KTP_TMP/udp"
    mkdir -p "$d"
    ktp_bg in_srv dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$KTP_SRV4" --port=53 --user=root --cache-size=1000 \
        --pid-file="$d/dnsmasq.pid" --host-record="bench.test,$KTP_SRV4"
    ktp_bg in_srv /usr/bin/python3 "$KTP_ROOT/tests/e2e/udp_tools.py" echo "$KTP_SRV4" 7000 "$KTP_SRV4" 7100
    ktp_dante_setup "$d/dante" "$KTP_SRV4" 1081
    ktp_bg unshare -m sh -c "mount --bind '$d/dante/passwd' /etc/passwd && mount --bind '$d/dante/shadow' /etc/shadow &&
        exec nsenter --net=/run/netns/$KTP_SRV danted -f '$d/dante/danted.conf' -N 1"
    ktp_wait_port "$KTP_SRV" 1081
    sleep 0.5
}

# udp_measure RUN MODE KIND ARGS...: one udp_load.py line into the samples.
udp_measure() {
    local run="$1" mode="$2" kind="$3" out
    shift 3
    out=$(in_app timeout 300 /usr/bin/python3 "$HERE/lib/udp_load.py" "$kind" "$@" 2>&1) || out="failed: $out"
    printf '%s\t%s\t%s\t%s\n' "$run" "$kind" "$mode" "$out" >> "$KTP_TMP/udp-samples"
    progress "run $run $kind $mode: $out"
}

bench_udp_main() {
    ktp_require_root
    command -v dnsmasq >/dev/null && command -v danted >/dev/null || ktp_die "needs dnsmasq and danted (scripts/setup)"
    ktp_topo_up
    udp_servers
    : > "$KTP_TMP/udp-samples"
    local run
    for run in $(seq "$RUNS"); do
        udp_measure "$run" direct dns "$KTP_SRV4" "$UDP_COUNT" bench.test
        udp_measure "$run" direct echo "$KTP_SRV4" 7000 "$UDP_COUNT"
        start_ktproxy --udp --upstream "dante=socks5://ktpuser:s3cret@$KTP_SRV4:1081" \
            --rule "port=7100 proxy=dante" || ktp_die "ktproxy did not start"
        udp_measure "$run" ktproxy dns "$KTP_SRV4" "$UDP_COUNT" bench.test
        udp_measure "$run" ktproxy echo "$KTP_SRV4" 7000 "$UDP_COUNT"
        udp_measure "$run" ktproxy-dante echo "$KTP_SRV4" 7100 "$UDP_COUNT"
        stop_ktproxy TERM >/dev/null
    done
    # Medians over the runs; ratios are per run (to that run's direct), then their median.
    {
        echo "UDP/DNS bench $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg);" \
            "$RUNS run(s) of $UDP_COUNT datagrams (32 outstanding) and $((UDP_COUNT / 4)) one at a time; median of runs"
        echo
        echo "| kind | mode | datagrams/s | x direct | p50 µs | p99 µs | added p50 µs | lost |"
        echo "|------|------|-------------|----------|--------|--------|--------------|------|"
        awk -F'\t' '
            function kv(s, k,   a, i, n) { n = split(s, a, " "); for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }
            function med(list,   a, n, i, j, t) { n = split(list, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }; return n ? a[int((n + 1) / 2)] : "na" }
            { r = kv($4, "rate"); p = kv($4, "p50_us"); q = kv($4, "p99_us"); l = kv($4, "lost")
              k = $2 SUBSEP $3; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
              rate[k] = rate[k] " " r; p50[k] = p50[k] " " p; p99[k] = p99[k] " " q; lost[k] = lost[k] + l
              if ($3 == "direct") { drate[$1, $2] = r; dp50[$1, $2] = p }
              else { ratio[k] = ratio[k] " " (drate[$1, $2] ? r / drate[$1, $2] : 0); add[k] = add[k] " " (p - dp50[$1, $2]) } }
            END { for (i = 1; i <= n; i++) { split(order[i], kk, SUBSEP); k = order[i]
                  printf "| %s | %s | %d | %s | %d | %d | %s | %d |\n", kk[1], kk[2], med(rate[k]),
                      kk[2] == "direct" ? "1" : sprintf("%.2f", med(ratio[k])), med(p50[k]), med(p99[k]),
                      kk[2] == "direct" ? "-" : med(add[k]), lost[k] } }' "$KTP_TMP/udp-samples" | sort -s -t'|' -k2,2
    } | tee "$UDP_OUT"
}
