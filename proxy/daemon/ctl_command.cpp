// `ktproxy ctl`: one change to a running instance, through its control socket.
#include "daemon/instance.h"

#include "base/error.h"
#include "ops/local_server.h"

#include <cstdio>

namespace ktp {

int run_ctl(const Options& o)
{
    std::vector<std::string> paths = control_sockets(o);
    if (paths.empty())
        fail("no running ktproxy found (no control socket in {}; pass --control PATH)", kRunDir);
    // A switch meant for one instance must not land on another.
    if (paths.size() != 1)
        fail("{} control sockets in {}: say which instance with --control PATH", paths.size(), kRunDir);
    std::string reply = query_control(paths[0], o.ctl_what + " " + o.ctl_value);
    while (!reply.empty() && reply.back() == '\n')
        reply.pop_back();
    if (reply.rfind("ok: ", 0) == 0) {
        std::puts(reply.substr(4).c_str());
        return 0;
    }
    if (reply.rfind("error: ", 0) == 0)
        fail("{}: {}", paths[0], reply.substr(7));
    // An instance from before `ctl` answers anything else with its status.
    fail("{}: the instance does not know `{} {}` (older ktproxy?)", paths[0], o.ctl_what, o.ctl_value);
}

}  // namespace ktp
