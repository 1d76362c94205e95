// The two small request/response servers an instance runs on its main
// thread: the owner-only unix control socket (`ktproxy status`) and the
// Prometheus HTTP endpoint (--metrics). One request per connection, bounded
// in size and time, so a stuck client cannot stall the instance.
#pragma once

#include "base/sock_addr.h"
#include "base/unique_fd.h"

#include <functional>
#include <string>
#include <string_view>

namespace ktp {

// A listening control socket that removes its file when destroyed.
class ControlSocket {
public:
    // Creates the parent directory (0700), replaces a stale socket, binds with
    // mode 0600. Throws Error when another live instance already owns the path.
    explicit ControlSocket(std::string path);
    ~ControlSocket();
    ControlSocket(const ControlSocket&) = delete;
    ControlSocket& operator=(const ControlSocket&) = delete;
    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    UniqueFd fd_;
};

// Answers one client of a control socket: reads one line, writes answer(line).
void serve_control(int listen_fd, const std::function<std::string(std::string_view)>& answer);

// Sends one request line to a control socket and returns the whole reply.
std::string query_control(const std::string& path, std::string_view request);

// "ADDR:PORT" -> listening TCP socket (non-blocking accept).
UniqueFd listen_metrics(const std::string& addr_port);

// Answers one HTTP request: GET /metrics (or /) with body(), else 404.
void serve_metrics(int listen_fd, const std::function<std::string()>& body);

}  // namespace ktp
