# shellcheck shell=bash
# A throwaway two-host network for tests and the demo, and helpers to run
# things on it. Sourced, not run.
#
#   client host  netns $KTP_CLI   10.201.0.1/24  fd00:201::1/64   ktproxy + the app cgroup
#        |  veth
#   server host  netns $KTP_SRV   10.201.0.2/24  fd00:201::2/64   nginx, echo servers, upstream proxies
#
# Neither namespace has a default route: a connection that escapes
# interception can only reach the server host, never anything else.
# ktp_topo_up registers ktp_cleanup on EXIT/INT/TERM, which removes every
# process, namespace, cgroup and file it made, on every path.

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$(dirname "${BASH_SOURCE[0]}")/upstreams.sh"

KTP_ID="${KTP_ID:-$$}"
KTP_CLI="ktp${KTP_ID}c"
KTP_SRV="ktp${KTP_ID}s"
KTP_CLI4=10.201.0.1
KTP_SRV4=10.201.0.2
KTP_CLI6=fd00:201::1
KTP_SRV6=fd00:201::2
KTP_TMP=""
KTP_CG_PARENT=""
KTP_CG=""          # the app cgroup
KTP_CG_PROXY=""    # a cgroup for ktproxy itself (start_ktproxy with KTP_PROXY_OWN_CG=1)
KTP_PIDS=()        # background processes to stop on cleanup
KTP_PID=""         # the running ktproxy
KTP_LOG=""         # its stderr
KTP_EXTRA_CLEANUP=()

ktp_cleanup() {
    local rc=$?
    set +e
    local f
    for f in "${KTP_EXTRA_CLEANUP[@]}"; do eval "$f" >/dev/null 2>&1; done
    [ -n "$KTP_PID" ] && [ ! -e "$KTP_LOG.rc" ] && kill -9 "$KTP_PID" 2>/dev/null
    local p
    for p in "${KTP_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.1
    for p in "${KTP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    local cg
    for cg in "$KTP_CG" "$KTP_CG_PROXY"; do
        if [ -n "$cg" ] && [ -d "$cg" ]; then
            echo 1 > "$cg/cgroup.kill" 2>/dev/null || xargs -r kill -9 < "$cg/cgroup.procs" 2>/dev/null
            for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.05; done
        fi
    done
    [ -n "$KTP_CG_PARENT" ] && [ -d "$KTP_CG_PARENT" ] && rmdir "$KTP_CG_PARENT" 2>/dev/null
    # Anything still inside the namespaces dies with them.
    local ns
    for ns in "$KTP_CLI" "$KTP_SRV"; do
        if [ -e "/run/netns/$ns" ]; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
            ip netns del "$ns" 2>/dev/null
        fi
    done
    # KTP_KEEP_TMP=1: logs and captures stay for a post-mortem.
    if [ -n "$KTP_TMP" ]; then
        if [ "${KTP_KEEP_TMP:-}" = 1 ]; then echo "kept $KTP_TMP" >&2; else rm -rf "$KTP_TMP"; fi
    fi
    return $rc
}

ktp_topo_up() {
    trap ktp_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    KTP_TMP="$(mktemp -d /tmp/ktp-test.XXXXXX)"
    chmod 755 "$KTP_TMP"   # nginx's workers run as nobody and serve files from here
    ip netns add "$KTP_CLI"
    ip netns add "$KTP_SRV"
    ip link add "kv${KTP_ID}c" type veth peer name "kv${KTP_ID}s"
    ip link set "kv${KTP_ID}c" netns "$KTP_CLI"
    ip link set "kv${KTP_ID}s" netns "$KTP_SRV"
    ip -n "$KTP_CLI" addr add "$KTP_CLI4/24" dev "kv${KTP_ID}c"
    ip -n "$KTP_SRV" addr add "$KTP_SRV4/24" dev "kv${KTP_ID}s"
    ip -n "$KTP_CLI" addr add "$KTP_CLI6/64" dev "kv${KTP_ID}c" nodad
    ip -n "$KTP_SRV" addr add "$KTP_SRV6/64" dev "kv${KTP_ID}s" nodad
    local ns
    for ns in "$KTP_CLI" "$KTP_SRV"; do
        ip -n "$ns" link set lo up
    done
    ip -n "$KTP_CLI" link set "kv${KTP_ID}c" up
    ip -n "$KTP_SRV" link set "kv${KTP_ID}s" up
    local cg2
    cg2="$(ktp_cgroup2_mount)"
    [ -n "$cg2" ] || ktp_die "no cgroup2 mount found"
    KTP_CG_PARENT="$cg2/ktp-test-$KTP_ID"
    KTP_CG="$KTP_CG_PARENT/app"
    KTP_CG_PROXY="$KTP_CG_PARENT/proxy"
    mkdir -p "$KTP_CG" "$KTP_CG_PROXY"
}

# nsenter keeps the mount namespace, so cgroup paths stay visible
# (`ip netns exec` remounts /sys).
in_cli() { nsenter --net="/run/netns/$KTP_CLI" "$@"; }
in_srv() { nsenter --net="/run/netns/$KTP_SRV" "$@"; }
# Runs a command inside the app cgroup on the client host.
in_app() {
    # Namespace first, then the cgroup (as `docker exec` does): a process of
    # the cgroup is never seen in another namespace, which ktproxy would
    # take for a container's.
    nsenter --net="/run/netns/$KTP_CLI" sh -c 'cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"' \
        sh "$KTP_CG" "$@"
}

# Starts a background process and remembers it for cleanup. in_cli/in_srv as
# the first word become a plain nsenter, which execs the command, so that the
# remembered pid is the server's own.
ktp_bg() {
    case "$1" in
        in_cli) shift; nsenter --net="/run/netns/$KTP_CLI" "$@" & ;;
        in_srv) shift; nsenter --net="/run/netns/$KTP_SRV" "$@" & ;;
        *) "$@" & ;;
    esac
    KTP_PIDS+=("$!")
}

# start_ktproxy ARGS...: ktproxy on the client host, outside the app cgroup
# (in the caller's cgroup, or in $KTP_CG_PROXY if KTP_PROXY_OWN_CG=1), and
# waits (at most 10s) until its hooks are attached. A wrapper records its exit
# status in $KTP_LOG.rc, so that stop_ktproxy can report it even when called
# from another subshell than the one that started it (tests run in subshells).
start_ktproxy() {
    KTP_LOG="$KTP_TMP/ktproxy.$(date +%s%N).log"
    : > "$KTP_LOG"
    (
        trap - EXIT INT TERM
        sh -c '[ -z "$1" ] || echo $$ > "$1/cgroup.procs" || exit 125; shift; exec "$@"' \
            sh "${KTP_PROXY_OWN_CG:+$KTP_CG_PROXY}" \
            ${KTP_LAUNCHER:-nsenter --net=/run/netns/$KTP_CLI} "$KTPROXY" --cgroup "${KTP_CG_ARG:-$KTP_CG}" \
            ${KTP_E2E_ARGS:-} "$@" 2>"$KTP_LOG" &
        echo $! > "$KTP_LOG.pid"
        wait $!
        echo $? > "$KTP_LOG.rc"
    ) 2>/dev/null &
    KTP_PIDS+=("$!")
    for _ in $(seq 100); do
        [ -s "$KTP_LOG.pid" ] && break
        sleep 0.01
    done
    KTP_PID="$(cat "$KTP_LOG.pid" 2>/dev/null)"
    [ -n "$KTP_PID" ] || { ktp_log "ktproxy did not start"; return 1; }
    for _ in $(seq 100); do
        grep -q 'ready:' "$KTP_LOG" 2>/dev/null && return 0
        [ -e "$KTP_LOG.rc" ] && break
        sleep 0.1
    done
    cat "$KTP_LOG" >&2
    return 1
}

# stop_ktproxy [SIGNAL]: signals ktproxy, waits (at most 10s) for it to exit
# and returns its exit status (124 if it did not exit).
stop_ktproxy() {
    local sig="${1:-TERM}"
    [ -n "$KTP_PID" ] || return 0
    kill "-$sig" "$KTP_PID" 2>/dev/null
    for _ in $(seq 200); do
        [ -s "$KTP_LOG.rc" ] && break
        sleep 0.05
    done
    if [ ! -s "$KTP_LOG.rc" ]; then
        ktp_log "ktproxy (pid $KTP_PID) did not exit within 10s of SIG$sig"
        kill -9 "$KTP_PID" 2>/dev/null
        KTP_PID=""
        return 124
    fi
    KTP_PID=""
    return "$(cat "$KTP_LOG.rc")"
}

# ktp_counter NAME: a kernel counter (or live_tuples) of the
# running ktproxy, read from the line it logs on SIGUSR1.
ktp_counter() {
    local before after
    before=$(grep -c 'counters ' "$KTP_LOG" || true)
    kill -USR1 "$KTP_PID"
    for _ in $(seq 50); do
        after=$(grep -c 'counters ' "$KTP_LOG" || true)
        [ "$after" -gt "$before" ] && break
        sleep 0.05
    done
    grep 'counters ' "$KTP_LOG" | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# nginx on the server host, on port 80 (and 443 with TLS when certs exist in
# $KTP_TMP/tls). Access log: addr port host sni status.
start_nginx() {
    local d="$KTP_TMP/nginx"
    mkdir -p "$d/html"
    echo "hello from the server host" > "$d/html/index.html"
    head -c 1048576 /dev/urandom > "$d/html/1m.bin"
    local tls=""
    if [ -d "$KTP_TMP/tls" ]; then
        local n
        for n in $(ls "$KTP_TMP/tls" | sed -n 's/\.crt$//p'); do
            tls+="server { listen $KTP_SRV4:443 ssl; listen [$KTP_SRV6]:443 ssl; server_name $n;
                ssl_certificate $KTP_TMP/tls/$n.crt; ssl_certificate_key $KTP_TMP/tls/$n.key; root $d/html; }
"
        done
    fi
    cat > "$d/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 8192; }
http {
    log_format ktp '\$remote_addr \$remote_port \$host \$ssl_server_name \$status';
    access_log $d/access.log ktp;
    client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
    server { listen $KTP_SRV4:80 backlog=4096; listen [$KTP_SRV6]:80 backlog=4096; root $d/html; }
    $tls
}
CONF
    ktp_bg in_srv nginx -c "$d/nginx.conf"
    ktp_wait_port "$KTP_SRV" 80
    NGINX_LOG="$d/access.log"
}

# Self-signed certificates for names served by nginx on 443.
make_certs() {
    mkdir -p "$KTP_TMP/tls"
    local n
    for n in "$@"; do
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$n" -addext "subjectAltName=DNS:$n" \
            -keyout "$KTP_TMP/tls/$n.key" -out "$KTP_TMP/tls/$n.crt" 2>/dev/null
    done
}

# An echo server on the server host. nofork: cat itself gets the socket as
# stdin/stdout. Without it socat relays through a socketpair to cat, and with
# bulk data both ways socat and cat end up blocked writing to each other.
start_echo() {
    ktp_bg in_srv socat -t 60 "TCP6-LISTEN:$1,ipv6only=0,reuseaddr,fork,backlog=4096" EXEC:cat,nofork
    ktp_wait_port "$KTP_SRV" "$1"
}

# Replies with the byte count only after the client half-closes.
start_count_after_eof() {
    ktp_bg in_srv socat -t 30 "TCP6-LISTEN:$1,ipv6only=0,reuseaddr,fork" SYSTEM:'wc -c'
    ktp_wait_port "$KTP_SRV" "$1"
}

# ktp_wait_port NETNS PORT: until something listens there (at most 5s).
ktp_wait_port() {
    for _ in $(seq 100); do
        nsenter --net="/run/netns/$1" ss -Hltn "sport = :$2" | grep -q LISTEN && return 0
        sleep 0.05
    done
    ktp_log "nothing listens on port $2 in $1"
    return 1
}

# ktp_wait_port_gone NETNS PORT: until nothing listens there (at most 5s).
ktp_wait_port_gone() {
    for _ in $(seq 100); do
        nsenter --net="/run/netns/$1" ss -Hltn "sport = :$2" | grep -q LISTEN || return 0
        sleep 0.05
    done
    ktp_log "something still listens on port $2 in $1"
    return 1
}
