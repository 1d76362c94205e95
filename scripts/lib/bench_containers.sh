# scripts/bench --containers: the client is a container made as Docker makes
# one, inside the bench's client host: its own netns (ktb<PID>k) behind a
# Linux bridge 172.29.0.1/24 in the client host, MASQUERADE from there to the
# server host. `direct`: the container's processes, not intercepted; the
# ktproxy modes: the same container in the intercepted cgroup, served by a
# listener ktproxy opens inside its namespace (egress from the container's
# namespace, as by default). Sourced by scripts/bench after the topology.

CTR_NS="ktb${ID}k"
CTR4=172.29.0.2

ctr_topology_up() {
    ip netns add "$CTR_NS" || ktp_die "ip netns add $CTR_NS failed"
    ip -n "$CTR_NS" link set lo up
    ip -n "$CLI" link add "kb${ID}br" type bridge
    ip -n "$CLI" addr add 172.29.0.1/24 dev "kb${ID}br"
    ip -n "$CLI" link set "kb${ID}br" up
    ip -n "$CLI" link add "kb${ID}v" type veth peer name eth0 netns "$CTR_NS"
    ip -n "$CLI" link set "kb${ID}v" master "kb${ID}br" up
    ip -n "$CTR_NS" addr add "$CTR4/24" dev eth0
    ip -n "$CTR_NS" link set eth0 up
    ip -n "$CTR_NS" route add default via 172.29.0.1
    in_cli sysctl -q -w net.ipv4.ip_forward=1
    in_cli iptables -t nat -A POSTROUTING -s 172.29.0.0/24 ! -o "kb${ID}br" -j MASQUERADE ||
        ktp_die "iptables MASQUERADE in $CLI failed"
    nsenter --net="/run/netns/$CTR_NS" sysctl -q -w net.ipv4.tcp_tw_reuse=1 \
        net.ipv4.ip_local_port_range="10000 60999" >/dev/null
    # The container's init (as runc's: its namespace first, then its
    # cgroup): ktproxy meets the namespace at start.
    nsenter --net="/run/netns/$CTR_NS" sh -c 'echo $$ > "$1/cgroup.procs" && exec sleep 100000' sh "$CG" &
    SERVER_PIDS+=("$!")
}

# The app: inside the container's namespace, in the intercepted cgroup or not.
in_app() {
    nsenter --net="/run/netns/$CTR_NS" sh -c 'cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"' \
        sh "$CG" "$@"
}
client() {
    case "$MODE" in
        direct) nsenter --net="/run/netns/$CTR_NS" "$@" ;;
        *) in_app "$@" ;;
    esac
}
