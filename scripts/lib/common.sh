# shellcheck shell=bash
# Shared by scripts/*: repo paths, root check, Debian package installation.
# Sourced, not run.

KTP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KTP_BUILD="${KTP_BUILD:-$KTP_ROOT/build}"
KTPROXY="${KTPROXY:-$KTP_BUILD/proxy/ktproxy}"

ktp_log() { printf '%s\n' "$*" >&2; }
ktp_die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

ktp_require_root() {
    [ "$(id -u)" -eq 0 ] || ktp_die "must run as root (it loads BPF programs and creates network namespaces); try: sudo $0"
}

# Build and test dependencies, all from Debian 12.
KTP_BUILD_PKGS=(meson ninja-build pkg-config g++ clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev
                liburing-dev libfmt-dev libcli11-dev catch2 libclang-rt-14-dev scdoc)
KTP_TEST_PKGS=(iproute2 iptables nftables curl socat python3 nginx-light netcat-openbsd util-linux coreutils procps iperf3 jq
               openssl microsocks dante-server tinyproxy golang-go pv binutils tcpdump dnsmasq-base bind9-dnsutils
               docker.io busybox-static)

# Installs the named packages that are missing; apt-get update only if needed.
ktp_install() {
    local missing=()
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    ktp_log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || ktp_die "apt-get update failed"
    # Debian starts servers (nginx, danted, tinyproxy) on install; the tests
    # start their own. policy-rc.d saying 101 is Debian's way to prevent that,
    # without touching servers that are already running.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    local rc=0
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ "$own_policy" = 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || ktp_die "apt-get install ${missing[*]} failed"
}

ktp_build() {
    if [ ! -f "$KTP_BUILD/build.ninja" ]; then
        meson setup "$KTP_BUILD" "$KTP_ROOT" >/dev/null || ktp_die "meson setup failed"
    fi
    meson compile -C "$KTP_BUILD" >/dev/null || { meson compile -C "$KTP_BUILD"; ktp_die "build failed"; }
}

ktp_cgroup2_mount() {
    awk '$3 == "cgroup2" { print $2 }' /proc/self/mounts | sort | awk '
        $0 == "/sys/fs/cgroup" { best = $0 } $0 == "/sys/fs/cgroup/unified" && best == "" { best = $0 }
        first == "" { first = $0 } END { print (best != "" ? best : first) }'
}
