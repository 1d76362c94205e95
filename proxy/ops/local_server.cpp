// Control socket and metrics endpoint.
#include "ops/local_server.h"

#include "base/error.h"
#include "loop/listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

namespace ktp {

namespace {

constexpr int kClientTimeoutMs = 1000;
constexpr size_t kMaxRequest = 4096;

sockaddr_un unix_addr(const std::string& path)
{
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() >= sizeof(sun.sun_path))
        fail("control socket path too long: {}", path);
    std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    return sun;
}

// Reads until `stop` appears or kMaxRequest bytes, within the timeout.
std::string read_request(int fd, std::string_view stop)
{
    std::string req;
    char buf[1024];
    while (req.size() < kMaxRequest && req.find(stop) == std::string::npos) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, kClientTimeoutMs) <= 0)
            break;
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        req.append(buf, static_cast<size_t>(n));
    }
    return req;
}

void write_all(int fd, std::string_view data)
{
    while (!data.empty()) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, kClientTimeoutMs) <= 0)
            return;
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n <= 0)
            return;
        data.remove_prefix(static_cast<size_t>(n));
    }
}

UniqueFd accept_client(int listen_fd)
{
    return UniqueFd(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
}

}  // namespace

ControlSocket::~ControlSocket() { ::unlink(path_.c_str()); }

ControlSocket::ControlSocket(std::string p) : path_(std::move(p))
{
    const std::string& path = path_;
    auto slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0) {
        std::string dir = path.substr(0, slash);
        if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
            fail_errno("control socket directory {}", dir);
    }
    sockaddr_un sun = unix_addr(path);
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0) {
        // A socket file with nobody behind it is left over from a killed run.
        UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) == 0)
            fail("control socket {} is in use by another ktproxy (choose another with --control)", path);
        ::unlink(path.c_str());
    }
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd)
        fail_errno("control socket {}: socket", path);
    // Owner-only from the first instant: the umask covers the window before chmod.
    mode_t old = umask(0177);
    int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun));
    umask(old);
    if (rc != 0)
        fail_errno("control socket {}: bind", path);
    chmod(path.c_str(), 0600);
    if (::listen(fd.get(), 16) != 0) {
        ::unlink(path.c_str());
        fail_errno("control socket {}: listen", path);
    }
    fd_ = std::move(fd);
}

void serve_control(int listen_fd, const std::function<std::string(std::string_view)>& answer)
{
    UniqueFd c = accept_client(listen_fd);
    if (!c)
        return;
    std::string req = read_request(c.get(), "\n");
    auto nl = req.find('\n');
    write_all(c.get(), answer(std::string_view(req).substr(0, nl)));
}

std::string query_control(const std::string& path, std::string_view request)
{
    sockaddr_un sun = unix_addr(path);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0)
        fail_errno("connect to {}", path);
    std::string line = std::string(request) + "\n";
    write_all(fd.get(), line);
    std::string reply;
    char buf[4096];
    for (;;) {
        pollfd p{fd.get(), POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0)
            fail("{}: no reply within 5s", path);
        ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        reply.append(buf, static_cast<size_t>(n));
    }
    return reply;
}

UniqueFd listen_metrics(const std::string& addr_port)
{
    auto colon = addr_port.rfind(':');
    auto addr = SockAddr::parse_ip(addr_port.substr(0, colon),
                                   static_cast<uint16_t>(std::stoul(addr_port.substr(colon + 1))));
    Listener l = listen_tcp(*addr, "--metrics");
    int flags = fcntl(l.fd.get(), F_GETFL);
    fcntl(l.fd.get(), F_SETFL, flags | O_NONBLOCK);
    return std::move(l.fd);
}

void serve_metrics(int listen_fd, const std::function<std::string()>& body)
{
    UniqueFd c = accept_client(listen_fd);
    if (!c)
        return;
    std::string req = read_request(c.get(), "\r\n\r\n");
    std::string resp;
    if (req.rfind("GET /metrics ", 0) == 0 || req.rfind("GET / ", 0) == 0) {
        std::string b = body();
        resp = fmt::format(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n"
            "Connection: close\r\n\r\n{}",
            b.size(), b);
    } else {
        resp = "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n";
    }
    write_all(c.get(), resp);
}

}  // namespace ktp
