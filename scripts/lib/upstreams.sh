# shellcheck shell=bash
# Configuration of the upstream proxies from Debian that the suites and the
# bench start (dante with a password). Sourced by netns.sh.

# ktp_dante_setup DIR ADDR PORT [RULES]: writes DIR/passwd and DIR/shadow,
# copies of the system's with the test user ktpuser (password s3cret) added,
# and DIR/danted.conf for a username-authenticated SOCKS5 server on
# ADDR:PORT logging connects to DIR/danted.log. dante checks passwords
# against the system's files: the caller runs it in a private mount
# namespace with these copies bound over /etc/passwd and /etc/shadow, so the
# host's files are never touched. RULES (dante rule blocks, e.g. a
# `socks block`) come before the final `socks pass`, which also allows UDP
# ASSOCIATE (RFC 1928 section 7) and the replies it relays.
ktp_dante_setup() {
    local d="$1" addr="$2" port="$3" rules="${4:-}"
    mkdir -p "$d"
    cp /etc/passwd "$d/passwd"
    cp /etc/shadow "$d/shadow"
    echo "ktpuser:x:60999:60999::/nonexistent:/usr/sbin/nologin" >> "$d/passwd"
    echo "ktpuser:$(openssl passwd -6 s3cret):19000:0:99999:7:::" >> "$d/shadow"
    cat > "$d/danted.conf" <<CONF
logoutput: $d/danted.log
internal: $addr port = $port
external: $addr
socksmethod: username
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: connect error
}
$rules
socks pass {
    from: 0.0.0.0/0 to: 0.0.0.0/0
    command: connect udpassociate udpreply
    log: connect error
}
CONF
}
