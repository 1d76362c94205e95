// fwmark rule + local table via iproute2.
#include "kernel/policy_route.h"

#include "base/error.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

extern char** environ;

namespace ktp {

int run_ip(const std::vector<std::string>& args, std::string* output)
{
    std::vector<std::string> argv_s = {"ip"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return 127;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, "ip", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(pipefd[1]);
    std::string out;
    if (rc == 0) {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0)
            out.append(buf, static_cast<size_t>(n));
    }
    ::close(pipefd[0]);
    if (rc != 0)
        return 127;
    int status = 0;
    waitpid(pid, &status, 0);
    if (output)
        *output = out;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

PolicyRoute::PolicyRoute(uint32_t mark, uint32_t table) : mark_(mark), table_(table)
{
    remove(mark, table);  // leftovers of a killed run
    const std::string m = fmt::format("{:#x}/{:#x}", mark, mark);
    const std::string t = std::to_string(table);
    for (const char* fam : {"-4", "-6"}) {
        std::string out;
        if (run_ip({fam, "rule", "add", "fwmark", m, "lookup", t, "pref", "9000"}, &out) != 0) {
            remove(mark, table);
            fail("gateway: ip {} rule add fwmark {} lookup {}: {}", fam, m, t, out.substr(0, out.find('\n')));
        }
        const char* any = fam[1] == '4' ? "0.0.0.0/0" : "::/0";
        if (run_ip({fam, "route", "add", "local", any, "dev", "lo", "table", t}, &out) != 0) {
            remove(mark, table);
            fail("gateway: ip {} route add local {} table {}: {}", fam, any, t, out.substr(0, out.find('\n')));
        }
    }
}

PolicyRoute::~PolicyRoute() { remove(mark_, table_); }

bool PolicyRoute::remove(uint32_t mark, uint32_t table)
{
    const std::string m = fmt::format("{:#x}/{:#x}", mark, mark);
    const std::string t = std::to_string(table);
    bool any = false;
    for (const char* fam : {"-4", "-6"}) {
        // One rule per run, but a crash loop could have left several.
        for (int i = 0; i < 16; ++i) {
            if (run_ip({fam, "rule", "del", "fwmark", m, "lookup", t}) != 0)
                break;
            any = true;
        }
        std::string out;
        if (run_ip({fam, "route", "show", "table", t}, &out) == 0 && !out.empty()) {
            any = true;
            run_ip({fam, "route", "flush", "table", t});
        }
    }
    return any;
}

}  // namespace ktp
