#!/bin/bash
# End-to-end tests of the core: the cgroup hooks, the relay and the daemon's
# lifecycle, on a throwaway two-host network (scripts/lib/netns.sh).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
skip_unless_root

ktp_topo_up
start_nginx
start_echo 9000
start_count_after_eof 9002
start_ktproxy || ktp_die "ktproxy did not start"

# curl from the cgroup reaches nginx through ktproxy: nginx sees ktproxy's
# source port (the conn line's via), not curl's; the log names the destination.
curl_through_ktproxy() {
    local url="$1" orig="$2" server_addr="$3"
    local out lport line via nginx_port
    out=$(in_app curl -sS --max-time 5 -o "$KTP_TMP/body" -w '%{http_code} %{local_port}' "$url")
    expect_eq "${out%% *}" 200 "HTTP status"
    lport="${out##* }"
    expect_eq "$(cat "$KTP_TMP/body")" "hello from the server host" "body"
    wait_log "$KTP_LOG" "conn client=[^ ]+:$lport orig=$orig " || fail "no conn line for client port $lport to $orig"
    line=$(grep -E "conn client=[^ ]+:$lport orig=$orig " "$KTP_LOG" | tail -1)
    via=$(conn_field "$line" via)
    expect_match "$(conn_field "$line" end)" '^eof$' "end"
    wait_log "$NGINX_LOG" "^$server_addr ${via##*:} " || fail "nginx logged no request from ktproxy's port ${via##*:} (last: $(tail -1 "$NGINX_LOG"))"
    nginx_port=$(grep "^$server_addr ${via##*:} " "$NGINX_LOG" | tail -1 | cut -d' ' -f2)
    expect_eq "$nginx_port" "${via##*:}" "port nginx saw vs ktproxy's via"
    expect_ne "$nginx_port" "$lport" "port nginx saw vs curl's own port"
}

test_curl_ipv4_from_cgroup_goes_through_ktproxy() {
    curl_through_ktproxy "http://$KTP_SRV4/" "$KTP_SRV4:80" "$KTP_CLI4"
}

test_curl_ipv6_from_cgroup_goes_through_ktproxy() {
    curl_through_ktproxy "http://[$KTP_SRV6]/" "\\[$KTP_SRV6\\]:80" "$KTP_CLI6"
}

test_process_outside_cgroup_is_not_intercepted() {
    local before after out lport
    before=$(ktp_counter redirected)
    out=$(in_cli curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status"
    lport="${out##* }"
    wait_log "$NGINX_LOG" "^$KTP_CLI4 $lport " || fail "nginx did not see curl's own port $lport (last: $(tail -1 "$NGINX_LOG"))"
    after=$(ktp_counter redirected)
    expect_eq "$after" "$before" "redirected counter"
    expect_no_file_match "$KTP_LOG" "conn client=[^ ]+:$lport " "ktproxy log"
}

test_one_gib_each_way_arrives_intact() {
    # The client sends 1 GiB and half-closes; the echo server sends it all
    # back: both directions, and the half-close, in one transfer.
    in_app bash -c "head -c 1073741824 /dev/urandom | tee >(sha256sum > '$KTP_TMP/sent.sha') \
        | timeout 120 socat -b 262144 -t 60 - TCP:$KTP_SRV4:9000 | sha256sum > '$KTP_TMP/recv.sha'"
    sleep 0.2
    local sent recv
    sent=$(cut -d' ' -f1 "$KTP_TMP/sent.sha")
    recv=$(cut -d' ' -f1 "$KTP_TMP/recv.sha")
    expect_match "$sent" '^[0-9a-f]{64}$' "sent hash"
    expect_eq "$recv" "$sent" "sha256 of what came back"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9000 .* c2s=1073741824 s2c=1073741824 " || fail "no conn line with 1 GiB each way"
}

test_half_closed_client_gets_the_whole_reply() {
    # The server answers only after it sees EOF: the reply must still arrive.
    local reply
    reply=$(in_app bash -c "head -c 1048576 /dev/zero | timeout 20 socat -t 10 - TCP:$KTP_SRV4:9002" | tr -d ' ')
    expect_eq "$reply" 1048576 "byte count the server saw"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9002 .* c2s=1048576 s2c=8 .*end=eof" || fail "no conn line for 1 MiB to port 9002 (not intercepted?)"
}

test_reset_from_server_resets_the_client() {
    # A server that resets (SO_LINGER 0 close, no FIN before it) right after
    # echoing 5 bytes: the client must see a reset too, not a clean EOF.
    # perl (always on Debian) because socat shuts down (FIN) before closing;
    # curl's telnet:// because it reports a reset where socat reports EOF.
    ktp_bg in_srv perl -e 'use Socket;
        socket(my $l, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
        setsockopt($l, SOL_SOCKET, SO_REUSEADDR, 1);
        bind($l, pack_sockaddr_in($ARGV[0], INADDR_ANY)) or die "bind: $!";
        listen($l, 64) or die "listen: $!";
        while (accept(my $c, $l)) {
            sysread($c, my $b, 5); syswrite($c, $b);
            setsockopt($c, SOL_SOCKET, SO_LINGER, pack("ii", 1, 0)); close($c);
        }' 9003
    ktp_wait_port "$KTP_SRV" 9003
    local rc=0
    in_app bash -c "(printf hello; sleep 2) | timeout 10 curl -sS --max-time 5 telnet://$KTP_SRV4:9003" \
        >/dev/null 2>"$KTP_TMP/rst.err" || rc=$?
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9003 .* end=reset" || fail "ktproxy did not log a reset"
    grep -qi 'reset' "$KTP_TMP/rst.err" || fail "the client saw no reset (exit $rc, stderr: $(head -c 300 "$KTP_TMP/rst.err"))"
}

# same_as_direct PERL_CLIENT EXPECTED: the client (given the server's
# address) prints EXPECTED when run outside the cgroup, the reference
# behaviour, and prints the same through ktproxy.
same_as_direct() {
    local direct proxied
    direct=$(in_cli timeout 10 perl -e "$1" "$KTP_SRV4")
    proxied=$(in_app timeout 10 perl -e "$1" "$KTP_SRV4")
    expect_eq "$direct" "$2" "direct client (the reference behaviour)"
    expect_eq "$proxied" "$direct" "client through ktproxy"
}

test_reset_after_server_eof_reaches_the_client() {
    # The server says "bye" and closes; later the client writes twice. The
    # server's kernel answers the first write with RST, so a direct client's
    # second write fails; through ktproxy it must fail too, not be swallowed.
    # (socat keeps its side open 0.5s after EOF: the client waits it out.)
    ktp_bg in_srv socat TCP-LISTEN:9004,reuseaddr,fork SYSTEM:'echo bye'
    ktp_wait_port "$KTP_SRV" 9004
    local client='use Socket; $SIG{PIPE} = "IGNORE";
        socket(S, PF_INET, SOCK_STREAM, 0) or die; connect(S, sockaddr_in(9004, inet_aton($ARGV[0]))) or die "connect: $!";
        my $b; 1 while sysread(S, $b, 100); select(undef, undef, undef, 1.5);
        print "w1:", (defined syswrite(S, "x") ? "ok" : "err"), " "; select(undef, undef, undef, 0.7);
        print "w2:", (defined syswrite(S, "y") ? "ok" : "err"), "\n";'
    same_as_direct "$client" "w1:ok w2:err"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9004 .*end=reset" || fail "ktproxy did not log a reset"
}

test_urgent_data_does_not_stall_the_bytes_behind_it() {
    # A byte sent with MSG_OOB (telnet's and FTP's "interrupt") is out of
    # band: a reader without SO_OOBINLINE, like the echo server, never sees
    # it, and the bytes after it arrive as usual. splice(2) stops at such a
    # byte, so a relay that only splices spins there and then takes the
    # client's FIN for the end, losing "world". Same answer as direct.
    local client='use Socket;
        socket(S, PF_INET, SOCK_STREAM, 0) or die; connect(S, sockaddr_in(9000, inet_aton($ARGV[0]))) or die "connect: $!";
        sub pause { select(undef, undef, undef, $_[0]) }
        send(S, "hello", 0); pause(0.2); send(S, "!", MSG_OOB); pause(0.2); send(S, "world", 0); pause(0.3);
        shutdown(S, 1); my ($all, $b) = (""); $all .= $b while sysread(S, $b, 100); print "$all\n";'
    same_as_direct "$client" "helloworld"
    wait_log "$KTP_LOG" "orig=$KTP_SRV4:9000 .* c2s=10 s2c=10 .*end=eof" || fail "no conn line with 10 bytes each way"
}

test_two_thousand_short_connections_all_succeed_and_maps_drain() {
    local before codes ok after live_t lines_before lines
    before=$(ktp_counter redirected)
    lines_before=$(grep -c ' conn client=' "$KTP_LOG" || true)
    codes=$(in_app timeout 120 curl --parallel --parallel-max 200 -H 'Connection: close' -sS --no-progress-meter --max-time 20 \
        -o /dev/null -w '%{http_code}\n' "http://$KTP_SRV4/index.html?[1-2000]")
    ok=$(printf '%s\n' "$codes" | grep -c '^200$')
    expect_eq "$ok" 2000 "HTTP 200 responses"
    after=$(ktp_counter redirected)
    expect_eq "$((after - before))" 2000 "connections redirected by the kernel"
    for _ in $(seq 100); do
        lines=$(( $(grep -c ' conn client=' "$KTP_LOG" || true) - lines_before ))
        [ "$lines" -ge 2000 ] && break
        sleep 0.1
    done
    expect_eq "$lines" 2000 "conn lines logged"
    # The destinations live in socket storage and go with the sockets; the
    # hand-off map must be empty once every connection was accepted.
    for _ in $(seq 40); do
        live_t=$(ktp_counter live_tuples)
        [ "$live_t" = 0 ] && break
        sleep 0.25
    done
    expect_eq "$live_t" 0 "entries left in the hand-off map ktp_handoff"
}

goes_direct_after_exit() {
    local out lport
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status after ktproxy exit"
    lport="${out##* }"
    wait_log "$NGINX_LOG" "^$KTP_CLI4 $lport " || fail "nginx did not see the client's own port $lport, so not direct (last: $(tail -1 "$NGINX_LOG"))"
    local cg
    for cg in "$KTP_CG" "$KTP_CG_PROXY"; do
        [ -z "$(bpftool cgroup show "$cg" 2>/dev/null | tail -n +2)" ] || fail "programs still attached to $cg: $(bpftool cgroup show "$cg")"
    done
}

test_after_sigterm_connections_go_direct() {
    local rc=0
    stop_ktproxy TERM || rc=$?
    expect_eq "$rc" 0 "ktproxy exit status on SIGTERM"
    expect_file_match "$KTP_LOG" 'stopped by TERM'
    goes_direct_after_exit
}

# The suite's ktproxy is stopped by the SIGTERM test; when that did not run
# (KTP_ONLY) it is stopped here so that a test can start its own.
stop_suite_ktproxy() {
    if [ -n "$KTP_PID" ] && [ ! -e "$KTP_LOG.rc" ]; then
        stop_ktproxy TERM || true
    fi
}

test_after_kill_9_connections_go_direct() {
    stop_suite_ktproxy
    start_ktproxy || fail "ktproxy did not start"
    in_app curl -sS --max-time 5 -o /dev/null "http://$KTP_SRV4/" || fail "curl through the new ktproxy"
    stop_ktproxy KILL || true
    goes_direct_after_exit
}

test_ktproxy_in_its_own_non_root_cgroup_works_and_detaches() {
    # As a service or from a login shell, ktproxy runs in some non-root cgroup
    # (/system.slice/..., /user.slice/...): its getsockopt hook goes there.
    stop_suite_ktproxy
    KTP_PROXY_OWN_CG=1 start_ktproxy || fail "ktproxy did not start in cgroup $KTP_CG_PROXY"
    local out lport
    out=$(in_app curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{local_port}' "http://$KTP_SRV4/")
    expect_eq "${out%% *}" 200 "HTTP status"
    lport="${out##* }"
    wait_log "$KTP_LOG" "conn client=[^ ]+:$lport orig=$KTP_SRV4:80 .*end=eof" || fail "no conn line for client port $lport"
    [ -n "$(bpftool cgroup show "$KTP_CG_PROXY" 2>/dev/null | tail -n +2)" ] || fail "no program attached to ktproxy's own cgroup $KTP_CG_PROXY"
    local rc=0
    stop_ktproxy TERM || rc=$?
    expect_eq "$rc" 0 "ktproxy exit status on SIGTERM"
    goes_direct_after_exit
}

# bad_input EXPECTED_TEXT ARGS...: one line on stderr, non-zero exit, quickly.
bad_input() {
    local want="$1"
    shift
    local rc=0
    in_cli timeout 10 "$@" >/dev/null 2>"$KTP_TMP/err" || rc=$?
    [ "$rc" -ne 0 ] || fail "'$*' exited 0"
    [ "$rc" -ne 124 ] || fail "'$*' hung"
    expect_eq "$(wc -l < "$KTP_TMP/err")" 1 "stderr lines of '$*'"
    expect_file_match "$KTP_TMP/err" "^ktproxy: .*$want"
}

test_bad_flags_and_paths_give_one_line_and_nonzero_exit() {
    bad_input 'not expected' "$KTPROXY" --cgroup "$KTP_CG" --bogus
    bad_input '--cgroup is required' "$KTPROXY"
    bad_input 'No such file' "$KTPROXY" --cgroup /nonexistent/cgroup
    bad_input 'not a cgroup2 directory' "$KTPROXY" --cgroup /tmp
    bad_input 'not a directory' "$KTPROXY" --cgroup /etc/hostname
    bad_input 'port' "$KTPROXY" --cgroup "$KTP_CG" --port 70000
    bad_input 'IPv4' "$KTPROXY" --cgroup "$KTP_CG" --listen4 nonsense
    bad_input 'rule' "$KTPROXY" --cgroup "$KTP_CG" --rule 'cidr=300.0.0.0/8 direct'
    ktp_bg in_cli socat TCP-LISTEN:15999,bind=127.0.0.1,reuseaddr -
    ktp_wait_port "$KTP_CLI" 15999
    bad_input 'already in use' "$KTPROXY" --cgroup "$KTP_CG" --port 15999
    bad_input 'needs root' setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$KTPROXY" --cgroup "$KTP_CG"
}

run_all_tests "$0"
finish
