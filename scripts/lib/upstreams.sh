# shellcheck shell=bash
# Configuration of the upstream proxies from Debian that the suites and the
# bench start (dante with a password, tinyproxy). Sourced by netns.sh.

# ktp_dante_setup DIR ADDR PORT [RULES] [ADDR6]: writes DIR/passwd and DIR/shadow,
# copies of the system's with the test user ktpuser (password s3cret) added,
# and DIR/danted.conf for a username-authenticated SOCKS5 server on
# ADDR:PORT logging connects to DIR/danted.log. dante checks passwords
# against the system's files: the caller runs it in a private mount
# namespace with these copies bound over /etc/passwd and /etc/shadow, so the
# host's files are never touched. RULES (dante rule blocks, e.g. a
# `socks block`) come before the final `socks pass`, which also allows UDP
# ASSOCIATE (RFC 1928 section 7) and the replies it relays. The rules say
# 0/0, any family: dante's 0.0.0.0/0 matches IPv4 addresses only (an IPv6
# target is "no rules matched; using default block rule"). ADDR6: an IPv6
# address of the server host for dante's external side; without one dante
# relays nothing to IPv6 targets ("packet for IPv6 address target, but no
# IPv6 address configured for our usage on the external interface").
ktp_dante_setup() {
    local d="$1" addr="$2" port="$3" rules="${4:-}" addr6="${5:-}"
    mkdir -p "$d"
    cp /etc/passwd "$d/passwd"
    cp /etc/shadow "$d/shadow"
    echo "ktpuser:x:60999:60999::/nonexistent:/usr/sbin/nologin" >> "$d/passwd"
    echo "ktpuser:$(openssl passwd -6 s3cret):19000:0:99999:7:::" >> "$d/shadow"
    cat > "$d/danted.conf" <<CONF
logoutput: $d/danted.log
internal: $addr port = $port
external: $addr
${addr6:+external: $addr6}
socksmethod: username
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
    from: 0/0 to: 0/0
    log: connect error
}
$rules
socks pass {
    from: 0/0 to: 0/0
    command: connect udpassociate udpreply
    log: connect error
}
CONF
}

# ktp_dante_run DIR [HOSTS]: runs the dante ktp_dante_setup wrote in DIR on
# the server host (ktp_bg: stopped with the suite), with DIR's passwd and
# shadow (its user) and, given HOSTS, that file as its /etc/hosts: bound in
# a mount namespace of its own, so the host's files are never touched.
ktp_dante_run() {
    local d="$1" hosts="${2:-}"
    ktp_bg unshare -m sh -c "mount --bind '$d/passwd' /etc/passwd && mount --bind '$d/shadow' /etc/shadow &&
        ${hosts:+mount --bind '$hosts' /etc/hosts &&} exec nsenter --net=/run/netns/$KTP_SRV danted -f '$d/danted.conf' -N 1"
}

# ktp_tinyproxy_setup DIR ADDR PORT ALLOW "CONNECTPORT..." [LOGLEVEL]: writes
# DIR/tinyproxy.conf for an HTTP CONNECT proxy on ADDR:PORT with Basic auth
# (ktpuser/s3cret) that serves clients from ALLOW (a subnet) and CONNECTs only
# to the ports listed; it logs at LOGLEVEL (default Connect: each CONNECT is
# a line) to DIR/tinyproxy.log. DIR is made writable for tinyproxy, which
# drops to nobody.
ktp_tinyproxy_setup() {
    local d="$1" addr="$2" port="$3" allow="$4" ports="$5" level="${6:-Connect}" p
    mkdir -p "$d"
    chmod 777 "$d"
    {
        echo "Port $port"
        echo "Listen $addr"
        echo "Timeout 60"
        echo "LogFile \"$d/tinyproxy.log\""
        echo "LogLevel $level"
        echo "MaxClients 200"
        echo "Allow $allow"
        for p in $ports; do echo "ConnectPort $p"; done
        echo "BasicAuth ktpuser s3cret"
    } > "$d/tinyproxy.conf"
}
