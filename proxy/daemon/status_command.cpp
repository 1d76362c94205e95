// `ktproxy status`: asks every running instance through its control socket.
#include "daemon/instance.h"

#include "base/error.h"
#include "base/log.h"
#include "ops/local_server.h"

#include <dirent.h>

#include <cstdio>
#include <string>
#include <vector>

namespace ktp {

int run_status(const Options& o)
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
    if (paths.empty())
        fail("no running ktproxy found (no control socket in {}; pass --control PATH)", kRunDir);
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
