// `ktproxy status`: asks every running instance through its control socket.
#include "daemon/instance.h"

#include "base/error.h"
#include "base/log.h"
#include "ops/local_server.h"
#include "ops/watch.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

namespace ktp {

namespace {

// Until interrupted (SIGINT ends the process, as for watch(1)), or until
// the instance goes away: that fails with its one error line.
int watch(const std::string& path)
{
    const bool tty = isatty(STDOUT_FILENO) == 1;
    std::vector<WatchConn> prev = parse_watch_sample(query_control(path, "status watch"));
    auto then = std::chrono::steady_clock::now();
    for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        std::vector<WatchConn> cur = parse_watch_sample(query_control(path, "status watch"));
        auto now = std::chrono::steady_clock::now();
        char ts[16];
        std::time_t t = std::time(nullptr);
        std::tm tm{};
        localtime_r(&t, &tm);
        std::strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
        std::string view =
            render_watch_view(prev, cur, std::chrono::duration<double>(now - then).count(), tty, ts);
        std::fputs(view.c_str(), stdout);
        std::fflush(stdout);
        prev = std::move(cur);
        then = now;
    }
}

}  // namespace

std::vector<std::string> control_sockets(const Options& o)
{
    std::vector<std::string> paths;
    if (!o.control_socket.empty()) {
        paths.push_back(o.control_socket);
    } else if (DIR* d = opendir(kRunDir)) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 5 && n.substr(n.size() - 5) == ".sock")
                paths.push_back(std::string(kRunDir) + "/" + n);
        }
        closedir(d);
    }
    return paths;
}

int run_status(const Options& o)
{
    std::vector<std::string> paths = control_sockets(o);
    if (paths.empty())
        fail("no running ktproxy found (no control socket in {}; pass --control PATH)", kRunDir);
    if (o.status_watch) {
        if (o.status_json)
            fail("--watch and --json do not go together: --json is one snapshot, --watch a live view");
        if (paths.size() != 1)
            fail("--watch follows one instance: {} control sockets in {}, pass --control PATH", paths.size(),
                 kRunDir);
        return watch(paths[0]);
    }
    int reached = 0;
    for (const auto& p : paths) {
        try {
            std::string reply = query_control(p, o.status_json ? "status json" : "status");
            std::fputs(reply.c_str(), stdout);
            ++reached;
        } catch (const Error& e) {
            if (!o.control_socket.empty())
                throw;
            log::debug("skipping {}: {}", p, e.what());
        }
    }
    if (reached == 0)
        fail("no running ktproxy answered (stale sockets in {}; `ktproxy cleanup` removes them)", kRunDir);
    return 0;
}

}  // namespace ktp
