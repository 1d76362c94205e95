# shellcheck shell=bash
# The DNS/UDP section of scripts/bench (`scripts/bench --udp`). Sourced by
# scripts/bench, which has parsed the arguments. On the test topology
# (scripts/lib/netns.sh), from the app cgroup:
#   dns    A queries to dnsmasq on the server host, a name per query:
#          direct (no ktproxy) vs through ktproxy's forwarder (--udp, the
#          name routed direct) vs a peer, dnsmasq on the client host
#          forwarding to it (--cache-size=0: every query forwarded), and that
#          dnsmasq's cache (one name, answered from the cache)
#   echo   64-byte datagrams to a UDP echo server: direct vs ktproxy's
#          relay routed direct vs through dante's UDP ASSOCIATE
#   flows  ktproxy's RSS with 10,000 live UDP flows (10,000 sockets, one
#          datagram each to the echo server, held open), and the flow count
#          (udp_flows of the SIGUSR1 counters line) falling back once half
#          the sockets close and the other half idle out (--udp-timeout)
# scripts/lib/udp_load.py measures each: datagrams/s with 32 outstanding,
# then p50/p99 of one at a time. Every run measures every mode, so the
# ratios to direct are of the same run; the table shows medians over the
# runs (--runs, default 3; --quick: 1 run, small counts).

. "$HERE/lib/netns.sh"

UDP_COUNT="${KTP_BENCH_UDP_COUNT:-20000}"
[ "$QUICK" = 1 ] && UDP_COUNT="${KTP_BENCH_UDP_COUNT:-2000}"
UDP_FLOWS="${KTP_BENCH_UDP_FLOWS:-10000}"
[ "$QUICK" = 1 ] && UDP_FLOWS="${KTP_BENCH_UDP_FLOWS:-1000}"
UDP_IDLE="${KTP_BENCH_UDP_IDLE:-5}"   # --udp-timeout of the flows step
UDP_OUT="${KTP_BENCH_UDP_OUT:-$KTP_BUILD/bench-udp.md}"
UDP_STARTED=$(date +%s)
progress() { printf '[bench-udp %3ds] %s\n' "$(( $(date +%s) - UDP_STARTED ))" "$*" >&2; }

udp_servers() {
    local d="$KTP_TMP/udp"
    mkdir -p "$d"
    ktp_bg in_srv dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$KTP_SRV4" --port=53 --user=root --cache-size=1000 --local-ttl=300 \
        --pid-file="$d/dnsmasq.pid" --address="/bench.test/$KTP_SRV4"
    # The peer: dnsmasq as the client host's forwarding resolver, without a
    # cache (each query forwarded) and with one.
    ktp_bg in_cli dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address=127.0.0.2 --port=53 --user=root --cache-size=0 \
        --pid-file="$d/dnsmasq-fwd.pid" --server="$KTP_SRV4"
    ktp_bg in_cli dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
        --listen-address=127.0.0.3 --port=53 --user=root --cache-size=10000 \
        --pid-file="$d/dnsmasq-cache.pid" --server="$KTP_SRV4"
    ktp_bg in_srv /usr/bin/python3 "$KTP_ROOT/tests/e2e/udp_tools.py" echo "$KTP_SRV4" 7000 "$KTP_SRV4" 7100
    ktp_dante_setup "$d/dante" "$KTP_SRV4" 1081
    ktp_bg unshare -m sh -c "mount --bind '$d/dante/passwd' /etc/passwd && mount --bind '$d/dante/shadow' /etc/shadow &&
        exec nsenter --net=/run/netns/$KTP_SRV danted -f '$d/dante/danted.conf' -N 1"
    ktp_wait_port "$KTP_SRV" 1081
    sleep 0.5
}

# ktproxy's VmRSS in KiB.
ktp_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$KTP_PID/status" 2>/dev/null; }

# udp_wait_line FILE PREFIX SECONDS: waits for a line starting with PREFIX.
udp_wait_line() {
    for _ in $(seq $(( $3 * 20 ))); do
        grep -q "^$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# udp_wait_flows MAX SECONDS T0: polls udp_flows until <= MAX (at most
# SECONDS); echoes "COUNT SECONDS_SINCE_T0" (T0 in ns, date +%s%N).
udp_wait_flows() {
    local t0="$3" n
    for _ in $(seq $(( $2 * 4 ))); do
        n=$(ktp_counter udp_flows)
        [ -n "$n" ] && [ "$n" -le "$1" ] && break
        sleep 0.25
    done
    echo "${n:-na} $(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
}

# udp_flows_step RUN: a fresh ktproxy, UDP_FLOWS live flows; one line into
# udp-flows-samples. Times are from the moment all flows were open (the
# last datagrams), so the idle step ends near UDP_IDLE + the 1 s sweep.
udp_flows_step() {
    local run="$1" out="$KTP_TMP/flows.$1.out" base rss n pid closed idle after
    start_ktproxy --udp --udp-timeout "$UDP_IDLE" || ktp_die "ktproxy did not start"
    sleep 0.5
    base=$(ktp_rss_kib)
    in_app timeout 300 /usr/bin/python3 "$HERE/lib/udp_load.py" flows "$KTP_SRV4" 7000 "$UDP_FLOWS" > "$out" 2>&1 &
    local load=$!
    if ! udp_wait_line "$out" open= 120; then
        progress "run $run flows: failed: $(tr '\n' ' ' < "$out")"
        kill "$load" 2>/dev/null; wait "$load" 2>/dev/null
        stop_ktproxy TERM >/dev/null
        return
    fi
    local t0
    t0=$(date +%s%N)
    pid=$(sed -n 's/^pid=//p' "$out")
    rss=$(ktp_rss_kib)
    n=$(ktp_counter udp_flows)
    kill -USR1 "$pid"
    udp_wait_line "$out" closed= 10
    closed=$(udp_wait_flows $(( UDP_FLOWS / 2 )) 10 "$t0")
    idle=$(udp_wait_flows 0 $(( UDP_IDLE + 10 )) "$t0")
    after=$(ktp_rss_kib)
    kill -TERM "$pid" 2>/dev/null
    wait "$load" 2>/dev/null
    stop_ktproxy TERM >/dev/null
    local line
    line="base_kib=$base rss_kib=$rss flows=$n $(sed -n 's/^open=/open=/p' "$out") per_flow_kib=$(awk -v r="$rss" -v b="$base" -v n="$UDP_FLOWS" 'BEGIN { printf "%.2f", (r - b) / n }')"
    line+=" after_close=${closed% *} close_s=${closed#* } after_idle=${idle% *} idle_s=${idle#* } rss_after_kib=$after"
    printf '%s\t%s\n' "$run" "$line" >> "$KTP_TMP/udp-flows-samples"
    progress "run $run flows: $line"
}

# udp_measure RUN MODE KIND ARGS...: one udp_load.py line into the samples.
udp_measure() {
    local run="$1" mode="$2" kind="$3" out
    shift 3
    out=$(in_app timeout 300 /usr/bin/python3 "$HERE/lib/udp_load.py" "$kind" "$@" 2>&1) || out="failed: $out"
    printf '%s\t%s\t%s\t%s\n' "$run" "$kind" "$mode" "$out" >> "$KTP_TMP/udp-samples"
    progress "run $run $kind $mode: $out"
}

# awk functions of both tables: kv(line, key) reads "key=value" from a
# sample line; med(list) is the median of a space-separated list.
UDP_AWK_LIB='
function kv(s, k,   a, i, n) { n = split(s, a, " "); for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }
function med(list,   a, n, i, j, t) { n = split(list, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }; return n ? a[int((n + 1) / 2)] : "na" }
'

bench_udp_main() {
    ktp_require_root
    command -v dnsmasq >/dev/null && command -v danted >/dev/null || ktp_die "needs dnsmasq and danted (scripts/setup)"
    ktp_topo_up
    udp_servers
    : > "$KTP_TMP/udp-samples"
    : > "$KTP_TMP/udp-flows-samples"
    local run
    for run in $(seq "$RUNS"); do
        udp_measure "$run" direct dns "$KTP_SRV4" "$UDP_COUNT" q%d.bench.test
        udp_measure "$run" "dnsmasq forwarder" dns 127.0.0.2 "$UDP_COUNT" q%d.bench.test
        udp_measure "$run" "dnsmasq cache" dns 127.0.0.3 "$UDP_COUNT" bench.test
        udp_measure "$run" direct echo "$KTP_SRV4" 7000 "$UDP_COUNT"
        start_ktproxy --udp --upstream "dante=socks5://ktpuser:s3cret@$KTP_SRV4:1081" \
            --rule "port=7100 proxy=dante" || ktp_die "ktproxy did not start"
        udp_measure "$run" ktproxy dns "$KTP_SRV4" "$UDP_COUNT" q%d.bench.test
        udp_measure "$run" ktproxy echo "$KTP_SRV4" 7000 "$UDP_COUNT"
        udp_measure "$run" ktproxy-dante echo "$KTP_SRV4" 7100 "$UDP_COUNT"
        stop_ktproxy TERM >/dev/null
        udp_flows_step "$run"
    done
    # Medians over the runs; ratios are per run (to that run's direct), then their median.
    {
        echo "UDP/DNS bench $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg);" \
            "$RUNS run(s) of $UDP_COUNT datagrams (32 outstanding) and $((UDP_COUNT / 4)) one at a time; median of runs"
        echo
        echo "| kind | mode | datagrams/s | x direct | p50 µs | p99 µs | added p50 µs | lost | bad |"
        echo "|------|------|-------------|----------|--------|--------|--------------|------|-----|"
        awk -F'\t' "$UDP_AWK_LIB"'
            { r = kv($4, "rate"); p = kv($4, "p50_us"); q = kv($4, "p99_us"); l = kv($4, "lost"); b = kv($4, "bad")
              k = $2 SUBSEP $3; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
              rate[k] = rate[k] " " r; p50[k] = p50[k] " " p; p99[k] = p99[k] " " q; lost[k] = lost[k] + l; bad[k] = bad[k] + b
              if ($3 == "direct") { drate[$1, $2] = r; dp50[$1, $2] = p }
              else { ratio[k] = ratio[k] " " (drate[$1, $2] ? r / drate[$1, $2] : 0); add[k] = add[k] " " (p - dp50[$1, $2]) } }
            END { for (i = 1; i <= n; i++) { split(order[i], kk, SUBSEP); k = order[i]
                  printf "| %s | %s | %d | %s | %d | %d | %s | %d | %d |\n", kk[1], kk[2], med(rate[k]),
                      kk[2] == "direct" ? "1" : sprintf("%.2f", med(ratio[k])), med(p50[k]), med(p99[k]),
                      kk[2] == "direct" ? "-" : med(add[k]), lost[k], bad[k] } }' "$KTP_TMP/udp-samples" | sort -s -t'|' -k2,2
        echo
        echo "ktproxy with $UDP_FLOWS live UDP flows (--udp-timeout $UDP_IDLE), median of runs:"
        echo
        echo "| RSS idle MiB | RSS with flows MiB | KiB per flow | udp_flows | answered | open s | udp_flows after half closed (at s) | after idle timeout (at s) | RSS after MiB |"
        echo "|---|---|---|---|---|---|---|---|---|"
        awk -F'\t' "$UDP_AWK_LIB"'
            { n++; for (i = 1; i <= nk; i++) v[key[i]] = v[key[i]] " " kv($2, key[i]) }
            BEGIN { nk = split("base_kib rss_kib per_flow_kib flows answered secs after_close close_s after_idle idle_s rss_after_kib", key, " ") }
            END { if (!n) { print "| failed | | | | | | | | |"; exit }
                  printf "| %.1f | %.1f | %.2f | %d | %d | %.1f | %d (%.1f) | %d (%.1f) | %.1f |\n",
                      med(v["base_kib"]) / 1024, med(v["rss_kib"]) / 1024, med(v["per_flow_kib"]), med(v["flows"]),
                      med(v["answered"]), med(v["secs"]), med(v["after_close"]), med(v["close_s"]),
                      med(v["after_idle"]), med(v["idle_s"]), med(v["rss_after_kib"]) / 1024 }' "$KTP_TMP/udp-flows-samples"
    } | tee "$UDP_OUT"
}
