// Listening sockets: bind errors become one clear line ("port in use").
#include "loop/listener.h"

#include "base/error.h"

#include <dirent.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <charconv>
#include <netinet/tcp.h>
#include <sys/socket.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace ktp {

Listener listen_tcp(const SockAddr& addr, const char* what, bool reuseport, bool transparent, uint32_t mark)
{
    Listener l;
    l.fd = UniqueFd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l.fd)
        fail_errno("{} {}: socket", what, addr.to_string());
    int one = 1;
    setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // Accepted sockets inherit TCP_NODELAY from the listener (the child is a
    // copy of it): one setsockopt per connection fewer. The relay forwards
    // whole chunks as they arrive; Nagle would only add latency.
    setsockopt(l.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (reuseport && setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        fail_errno("{} {}: SO_REUSEPORT", what, addr.to_string());
    if (addr.family() == AF_INET6)
        setsockopt(l.fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    // The connect hooks deliver only to a listener with this mark, which an
    // unprivileged user cannot set: a dead ktproxy's port, taken over by
    // someone else, gets none of the cgroup's connections.
    if (mark != 0 && setsockopt(l.fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
        fail_errno("{} {}: SO_MARK {:#x}", what, addr.to_string(), mark);
    if (transparent) {
        // Accept connections whose destination is not a local address.
        int rc = addr.family() == AF_INET6 ? setsockopt(l.fd.get(), SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
                                           : setsockopt(l.fd.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
        if (rc != 0)
            fail_errno("{} {}: IP_TRANSPARENT", what, addr.to_string());
        l.transparent = true;
    }
    if (::bind(l.fd.get(), addr.get(), addr.size()) != 0) {
        if (errno == EADDRINUSE)
            fail("{} {}: port {} is already in use (pick another with --port)", what, addr.to_string(),
                 addr.port());
        if (errno == EADDRNOTAVAIL)
            fail("{} {}: address not available in this network namespace", what, addr.to_string());
        fail_errno("{} {}: bind", what, addr.to_string());
    }
    if (::listen(l.fd.get(), 4096) != 0)
        fail_errno("{} {}: listen", what, addr.to_string());
    l.addr = SockAddr::local_of(l.fd.get());
    l.transparent = transparent;
    return l;
}

bool parse_proc_net_line(std::string_view line, bool v6, ProcListener& out)
{
    // "   0: 0100007F:3AEB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 123456 ..."
    // The address is the in-memory u32 words printed %08X, the port %04X.
    // No allocation: a host with many sockets must not cost one per line
    // (reliability.sh counts ktproxy's mallocs across runs).
    char buf[512];
    const size_t n = std::min(line.size(), sizeof(buf) - 1);
    std::memcpy(buf, line.data(), n);
    buf[n] = '\0';
    char local[64] = {};
    unsigned st = 0;
    unsigned long long inode = 0;
    if (std::sscanf(buf, " %*u: %63s %*s %x %*s %*s %*s %*u %*u %llu", local, &st, &inode) != 3)
        return false;
    if (st != 0x0A)  // TCP_LISTEN
        return false;
    std::string_view l(local);
    const size_t hex_len = v6 ? 32 : 8;
    if (l.size() <= hex_len || l[hex_len] != ':')
        return false;
    auto hex = [](std::string_view t, auto& v) {
        auto r = std::from_chars(t.data(), t.data() + t.size(), v, 16);
        return r.ec == std::errc() && r.ptr == t.data() + t.size();
    };
    out = ProcListener{};
    if (v6) {
        for (size_t i = 0; i < 4; ++i)
            if (!hex(l.substr(i * 8, 8), out.addr[i]))
                return false;
    } else {
        out.addr[2] = htonl(0xffff);
        if (!hex(l.substr(0, 8), out.addr[3]))
            return false;
    }
    if (!hex(l.substr(hex_len + 1), out.port))
        return false;
    out.inode = inode;
    return true;
}

std::vector<ProcListener> parse_proc_net_listeners(std::string_view text, bool v6)
{
    std::vector<ProcListener> out;
    while (!text.empty()) {
        size_t end = text.find('\n');
        ProcListener p;
        if (parse_proc_net_line(text.substr(0, end), v6, p))
            out.push_back(p);
        text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    }
    return out;
}

namespace {

// The pid of a process holding socket inode `ino`, or 0: only for the
// message, so a bounded walk of /proc is fine.
int holder_of_socket(uint64_t ino)
{
    const std::string want = fmt::format("socket:[{}]", ino);
    DIR* proc = opendir("/proc");
    if (!proc)
        return 0;
    int found = 0;
    while (dirent* p = readdir(proc)) {
        if (found || p->d_name[0] < '1' || p->d_name[0] > '9')
            continue;
        std::string fds = fmt::format("/proc/{}/fd", p->d_name);
        DIR* d = opendir(fds.c_str());
        if (!d)
            continue;
        while (dirent* f = readdir(d)) {
            char target[64];
            ssize_t n = readlink((fds + "/" + f->d_name).c_str(), target, sizeof(target) - 1);
            if (n > 0 && std::string_view(target, n) == want) {
                found = std::atoi(p->d_name);
                break;
            }
        }
        closedir(d);
    }
    closedir(proc);
    return found;
}

}  // namespace

void refuse_shared_listeners(const std::vector<const Listener*>& ours)
{
    std::vector<uint64_t> inodes;
    for (const Listener* l : ours) {
        struct stat st {};
        if (fstat(l->fd.get(), &st) == 0)
            inodes.push_back(st.st_ino);
    }
    for (bool v6 : {false, true}) {
        FILE* f = std::fopen(v6 ? "/proc/net/tcp6" : "/proc/net/tcp", "re");
        if (!f)
            continue;  // no IPv6 in this kernel
        char line[512];
        ProcListener o;
        while (std::fgets(line, sizeof(line), f)) {
            if (!parse_proc_net_line(line, v6, o) ||
                std::find(inodes.begin(), inodes.end(), o.inode) != inodes.end())
                continue;
            for (const Listener* l : ours) {
                uint32_t mine[4];
                l->addr.to_mapped(mine);
                if ((l->addr.family() == AF_INET6) != v6 || o.port != l->addr.port() ||
                    std::memcmp(o.addr, mine, sizeof(mine)) != 0)
                    continue;
                std::fclose(f);
                int pid = holder_of_socket(o.inode);
                fail("{}: another socket listens there too (SO_REUSEPORT, {}): the kernel would split the cgroup's "
                     "connections between it and ktproxy; stop it or pick another --port",
                     l->addr.to_string(), pid ? fmt::format("pid {}", pid) : fmt::format("socket inode {}", o.inode));
            }
        }
        std::fclose(f);
    }
}

uint64_t netns_cookie_of(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
        fail_errno("read the network namespace cookie (SO_NETNS_COOKIE needs Linux >= 5.14)");
    return cookie;
}

}  // namespace ktp
