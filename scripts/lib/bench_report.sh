# shellcheck shell=bash
# scripts/bench's arithmetic and report: turns the raw samples file (one
# "run<TAB>mode<TAB>metric<TAB>value" line per measurement, value "na" when a
# mode cannot run a metric) into the markdown table. Sourced, not run.

# Metric keys, in table order, with their column headers.
BENCH_METRICS=(bulk1 bulk4 rate lat_p50 lat_p99 cpu_gib rss)
declare -A BENCH_HEAD=(
    [bulk1]="bulk 1 stream (Gbit/s)"
    [bulk4]="bulk 4 streams (Gbit/s)"
    [rate]="short conns (conn/s)"
    [lat_p50]="latency p50 (us)"
    [lat_p99]="latency p99 (us)"
    [cpu_gib]="proxy CPU (s/GiB)"
    [rss]="proxy RSS, idle conns (MiB)"
)

# bench_stats SAMPLES MODE METRIC: prints "median min max n" of the values, or
# "na" when there are none. The median of an even count is the mean of the two
# middle values.
bench_stats() {
    awk -F'\t' -v m="$2" -v k="$3" '
        $2 == m && $3 == k && $4 != "na" { v[n++] = $4 + 0 }
        END {
            if (n == 0) { print "na"; exit }
            for (i = 1; i < n; i++) { x = v[i]; j = i - 1; while (j >= 0 && v[j] > x) { v[j+1] = v[j]; j-- } v[j+1] = x }
            med = (n % 2) ? v[int(n/2)] : (v[n/2-1] + v[n/2]) / 2
            printf "%.6g %.6g %.6g %d\n", med, v[0], v[n-1], n
        }' "$1"
}

# bench_ratio SAMPLES MODE METRIC [diff]: median over runs of MODE's value
# divided by direct's value of the same run (or, with "diff", minus it).
bench_ratio() {
    awk -F'\t' -v m="$2" -v k="$3" -v op="${4:-ratio}" '
        $3 == k && $4 != "na" && $2 == "direct" { d[$1] = $4 + 0 }
        $3 == k && $4 != "na" && $2 == m { x[$1] = $4 + 0 }
        END {
            for (r in x) if (r in d) {
                if (op == "diff") v[n++] = x[r] - d[r]
                else if (d[r] > 0) v[n++] = x[r] / d[r]
            }
            if (n == 0) { print "na"; exit }
            for (i = 1; i < n; i++) { y = v[i]; j = i - 1; while (j >= 0 && v[j] > y) { v[j+1] = v[j]; j-- } v[j+1] = y }
            med = (n % 2) ? v[int(n/2)] : (v[n/2-1] + v[n/2]) / 2
            printf "%.6g\n", med
        }' "$1"
}

# Numbers with a sensible number of digits for their size.
bench_fmt() {
    awk -v x="$1" 'BEGIN {
        a = (x < 0) ? -x : x
        if (a >= 1000) printf "%.0f", x; else if (a >= 100) printf "%.0f", x;
        else if (a >= 10) printf "%.1f", x; else printf "%.2f", x }'
}

bench_cell() {
    local s ratio
    s=$(bench_stats "$1" "$2" "$3")
    [ "$s" = na ] && { printf 'n/a'; return; }
    read -r med min max n <<< "$s"
    if [ "$n" -gt 1 ]; then
        printf '%s (%s–%s)' "$(bench_fmt "$med")" "$(bench_fmt "$min")" "$(bench_fmt "$max")"
    else
        printf '%s' "$(bench_fmt "$med")"
    fi
    ratio=$(bench_ratio "$1" "$2" "$3")
    [ "$ratio" != na ] && printf ' ×%.2f' "$ratio"
}

# bench_table SAMPLES MODES...: the markdown table, modes as rows.
bench_table() {
    local samples="$1"
    shift
    local m k line
    line="| mode |"
    for k in "${BENCH_METRICS[@]}"; do line+=" ${BENCH_HEAD[$k]} |"; done
    echo "$line"
    line="|---|"
    for k in "${BENCH_METRICS[@]}"; do line+="---|"; done
    echo "$line"
    for m in "$@"; do
        line="| $m |"
        for k in "${BENCH_METRICS[@]}"; do line+=" $(bench_cell "$samples" "$m" "$k") |"; done
        echo "$line"
    done
}

# Latency added over direct (median of the per-run differences) and the
# failure counts, so that a fast but lossy mode cannot hide.
bench_extra_table() {
    local samples="$1"
    shift
    local m d50 d99 rf rt ho ht
    echo "| mode | added p50 (us) | added p99 (us) | short-conn failures / made | idle conns held / echo ok / tried | proxy RSS before hold (MiB) | RSS per idle conn (KiB) | whole-machine CPU (s/GiB) |"
    echo "|---|---|---|---|---|---|---|---|"
    for m in "$@"; do
        d50=$(bench_ratio "$samples" "$m" lat_p50 diff)
        d99=$(bench_ratio "$samples" "$m" lat_p99 diff)
        [ "$d50" != na ] && d50=$(printf '%+.0f' "$d50")
        [ "$d99" != na ] && d99=$(printf '%+.0f' "$d99")
        rf=$(awk -F'\t' -v m="$m" '$2 == m && $3 == "rate_failed" && $4 != "na" { s += $4; n++ } END { print n ? s : "na" }' "$samples")
        rt=$(awk -F'\t' -v m="$m" '$2 == m && $3 == "rate_total" && $4 != "na" { s += $4; n++ } END { print n ? s : "na" }' "$samples")
        ho=$(awk -F'\t' -v m="$m" '$2 == m && $3 == "hold_ok" && $4 != "na" { s += $4; n++ } END { print n ? s : "na" }' "$samples")
        ht=$(awk -F'\t' -v m="$m" '$2 == m && $3 == "hold_held" && $4 != "na" { s += $4; n++ } END { print n ? s : "na" }' "$samples")
        local hs
        hs=$(awk -F'\t' -v m="$m" '$2 == m && $3 == "hold_total" && $4 != "na" { s += $4; n++ } END { print n ? s : "na" }' "$samples")
        local rcell="n/a" hcell="n/a"
        [ "$rf" != na ] && rcell="$rf / $rt"
        [ "$ho" != na ] && hcell="$ht / $ho of $hs"
        local base per
        base=$(bench_stats "$samples" "$m" rss_base)
        per=$(bench_stats "$samples" "$m" rss_per_conn_kib)
        [ "$base" != na ] && base=$(bench_fmt "${base%% *}")
        [ "$per" != na ] && per=$(bench_fmt "${per%% *}")
        local mc
        mc=$(bench_cell "$samples" "$m" machine_cpu_gib)
        echo "| $m | $d50 | $d99 | $rcell | $hcell | $base | $per | $mc |" | sed 's/| na |/| n\/a |/g; s/| na |/| n\/a |/g'
    done
}

# The RPC workload (scripts/bench measure_rpc): rates with ratios to direct and
# to haproxy (median of per-run ratios), latency, and the proxy's cost per
# connection.
bench_rpc_table() {
    local samples="$1"
    shift
    local m k line
    echo "| mode | rpc 8 clients (conn/s) | vs haproxy | rpc 64 clients (conn/s) | vs haproxy | rpc p50 / p99, 1 client (us) | proxy syscalls / conn, 8 clients | 1 client | proxy context switches / conn, 8 clients | 1 client | proxy CPU us / conn, 8 clients |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for m in "$@"; do
        [ "$(bench_stats "$samples" "$m" rpc8)" = na ] && [ "$(bench_stats "$samples" "$m" rpc_p50)" = na ] && continue
        line="| $m |"
        for k in rpc8 rpc64; do
            line+=" $(bench_cell "$samples" "$m" "$k") | $(bench_vs "$samples" "$m" haproxy "$k") |"
        done
        local p50 p99
        p50=$(bench_stats "$samples" "$m" rpc_p50)
        p99=$(bench_stats "$samples" "$m" rpc_p99)
        [ "$p50" != na ] && p50=$(bench_fmt "${p50%% *}")
        [ "$p99" != na ] && p99=$(bench_fmt "${p99%% *}")
        line+=" $p50 / $p99 |"
        for k in rpc_sys rpc_sys1 rpc_cs rpc_cs1 rpc_cpu_us; do line+=" $(bench_cell "$samples" "$m" "$k" | sed 's/ ×.*//') |"; done
        echo "$line"
    done
}

# bench_vs SAMPLES MODE REF METRIC: median over runs of MODE's value divided
# by REF's value of the same run, as "×R", or "n/a".
bench_vs() {
    awk -F'\t' -v m="$2" -v ref="$3" -v k="$4" '
        $3 == k && $4 != "na" && $2 == ref { d[$1] = $4 + 0 }
        $3 == k && $4 != "na" && $2 == m { x[$1] = $4 + 0 }
        END {
            for (r in x) if ((r in d) && d[r] > 0) v[n++] = x[r] / d[r]
            if (n == 0 || m == ref) { print "n/a"; exit }
            for (i = 1; i < n; i++) { y = v[i]; j = i - 1; while (j >= 0 && v[j] > y) { v[j+1] = v[j]; j-- } v[j+1] = y }
            printf "×%.2f\n", (n % 2) ? v[int(n/2)] : (v[n/2-1] + v[n/2]) / 2
        }' "$1"
}
