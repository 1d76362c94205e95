// bpf(2), netlink and namespace probes for `ktproxy doctor`.
#include "daemon/doctor_probe.h"

#include "base/error.h"
#include "base/unique_fd.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace ktp::probe {

namespace {

// "r0 = 1; exit", or "call helper; r0 = 1; exit".
std::vector<bpf_insn> tiny_program(int helper_id)
{
    std::vector<bpf_insn> v;
    if (helper_id > 0) {
        bpf_insn call{};
        call.code = BPF_JMP | BPF_CALL;
        call.imm = helper_id;
        v.push_back(call);
    }
    bpf_insn mov{};
    mov.code = BPF_ALU64 | BPF_MOV | BPF_K;
    mov.dst_reg = BPF_REG_0;
    mov.imm = 1;
    v.push_back(mov);
    bpf_insn exit{};
    exit.code = BPF_JMP | BPF_EXIT;
    v.push_back(exit);
    return v;
}

// Returns the fd (caller closes) or -errno; the verifier's log in *log.
int load(uint32_t prog_type, uint32_t attach_type, int helper_id, std::string* log)
{
    std::vector<bpf_insn> insns = tiny_program(helper_id);
    std::array<char, 4096> buf{};
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = static_cast<bpf_attach_type>(attach_type));
    if (log) {
        opts.log_buf = buf.data();
        opts.log_size = buf.size();
        opts.log_level = 1;
    }
    int fd = bpf_prog_load(static_cast<bpf_prog_type>(prog_type), "ktp_probe", "GPL", insns.data(), insns.size(),
                           &opts);
    int err = fd < 0 ? errno : 0;
    if (log)
        *log = buf.data();
    return fd < 0 ? -err : fd;
}

std::string first_line(const std::string& s)
{
    return s.substr(0, s.find('\n'));
}

// One netlink dump: sends req, calls on_msg for each reply until DONE.
void netlink_dump(nlmsghdr* req, const std::function<void(const nlmsghdr*)>& on_msg)
{
    UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd)
        fail_errno("open a netlink socket");
    timeval tv{2, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    req->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req->nlmsg_seq = 1;
    if (send(fd.get(), req, req->nlmsg_len, 0) < 0)
        fail_errno("send a netlink dump request");
    std::vector<char> buf(64 * 1024);
    for (int rounds = 0; rounds < 10000; ++rounds) {
        ssize_t n = recv(fd.get(), buf.data(), buf.size(), 0);
        if (n < 0)
            fail_errno("read a netlink dump");
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n));
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE)
                return;
            if (h->nlmsg_type == NLMSG_ERROR) {
                auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
                if (e->error == 0)
                    return;
                errno = -e->error;
                fail_errno("netlink dump");
            }
            on_msg(h);
        }
    }
}

// Calls on_attr(type, data, len) for each attribute in [a, a+len).
void for_attrs(const rtattr* a, int len, const std::function<void(int, const void*, size_t)>& on_attr)
{
    for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
        on_attr(a->rta_type & NLA_TYPE_MASK, RTA_DATA(a), RTA_PAYLOAD(a));
}

uint32_t u32_of(const void* p)
{
    uint32_t v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

}  // namespace

std::string load_tiny(uint32_t prog_type, uint32_t attach_type)
{
    std::string log;
    int fd = load(prog_type, attach_type, 0, &log);
    if (fd >= 0) {
        ::close(fd);
        return {};
    }
    std::string why = errno_text(-fd);
    if (!log.empty())
        why += ": " + first_line(log);
    return why;
}

std::optional<bool> has_helper(uint32_t prog_type, uint32_t attach_type, int helper_id)
{
    std::string log;
    int fd = load(prog_type, attach_type, helper_id, &log);
    if (fd >= 0) {
        ::close(fd);
        return true;
    }
    // The call has no arguments set up, so a known helper usually fails on
    // its arguments; an unknown one fails by name (libbpf probes the same way).
    if (log.find("invalid func ") != std::string::npos || log.find("unknown func ") != std::string::npos)
        return false;
    if (log.empty())
        return std::nullopt;
    return true;
}

std::string cgroup_link()
{
    int prog = load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, 0, nullptr);
    if (prog < 0)
        return "load a cgroup/connect4 program: " + errno_text(-prog);
    // target -1: a kernel with cgroup links gets as far as the cgroup fd and
    // says EBADF; one without fails on the command or the attach type first.
    int link = bpf_link_create(prog, -1, BPF_CGROUP_INET4_CONNECT, nullptr);
    int err = link < 0 ? errno : 0;
    if (link >= 0)
        ::close(link);
    ::close(prog);
    if (link >= 0 || err == EBADF)
        return {};
    return "BPF_LINK_CREATE for cgroups: " + errno_text(err);
}

std::vector<AttachedProg> cgroup_progs(const std::string& dir, uint32_t attach_type)
{
    UniqueFd cg(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg)
        fail_errno("open {}", dir);
    std::array<uint32_t, 64> ids{};
    uint32_t cnt = ids.size(), flags = 0;
    if (bpf_prog_query(cg.get(), static_cast<bpf_attach_type>(attach_type), 0, &flags, ids.data(), &cnt) != 0)
        fail_errno("query the programs attached to {}", dir);
    std::vector<AttachedProg> out;
    for (uint32_t i = 0; i < cnt && i < ids.size(); ++i) {
        AttachedProg p{ids[i], "?", flags};
        UniqueFd pfd(bpf_prog_get_fd_by_id(ids[i]));
        bpf_prog_info info{};
        uint32_t len = sizeof(info);
        if (pfd && bpf_obj_get_info_by_fd(pfd.get(), &info, &len) == 0)
            p.name = info.name;
        out.push_back(p);
    }
    return out;
}

std::vector<IpRule> ip_rules(int family)
{
    struct {
        nlmsghdr h;
        fib_rule_hdr r;
    } req{};
    req.h.nlmsg_len = sizeof(req);
    req.h.nlmsg_type = RTM_GETRULE;
    req.r.family = static_cast<uint8_t>(family);
    std::vector<IpRule> out;
    netlink_dump(&req.h, [&](const nlmsghdr* h) {
        if (h->nlmsg_type != RTM_NEWRULE)
            return;
        auto* r = static_cast<const fib_rule_hdr*>(NLMSG_DATA(h));
        IpRule rule;
        rule.family = r->family;
        rule.table = r->table;
        bool has_mask = false;
        for_attrs(reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(r) + NLMSG_ALIGN(sizeof(*r))),
                  static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*r))), [&](int type, const void* d, size_t n) {
                      if (n < 4)
                          return;
                      switch (type) {
                      case FRA_PRIORITY: rule.priority = u32_of(d); break;
                      case FRA_TABLE: rule.table = u32_of(d); break;
                      case FRA_FWMARK: rule.has_fwmark = true; rule.fwmark = u32_of(d); break;
                      case FRA_FWMASK: has_mask = true; rule.fwmask = u32_of(d); break;
                      }
                  });
        if (!has_mask)
            rule.fwmask = 0xffffffff;
        // "fwmark 0" with no mask is how iproute2 shows no fwmark match.
        if (rule.has_fwmark && rule.fwmark == 0 && rule.fwmask == 0)
            rule.has_fwmark = false;
        out.push_back(rule);
    });
    return out;
}

std::vector<TcFilter> tc_ingress_filters(int ifindex)
{
    struct {
        nlmsghdr h;
        tcmsg t;
    } req{};
    req.h.nlmsg_len = sizeof(req);
    req.h.nlmsg_type = RTM_GETTFILTER;
    req.t.tcm_family = AF_UNSPEC;
    req.t.tcm_ifindex = ifindex;
    req.t.tcm_parent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);
    std::vector<TcFilter> out;
    try {
        netlink_dump(&req.h, [&](const nlmsghdr* h) {
            if (h->nlmsg_type != RTM_NEWTFILTER)
                return;
            auto* t = static_cast<const tcmsg*>(NLMSG_DATA(h));
            if (t->tcm_handle == 0)
                return;  // the priority's head, not a filter
            TcFilter f;
            f.handle = t->tcm_handle;
            f.priority = TC_H_MAJ(t->tcm_info) >> 16;
            for_attrs(reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(t) + NLMSG_ALIGN(sizeof(*t))),
                      static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*t))),
                      [&](int type, const void* d, size_t n) {
                          if (type == TCA_KIND)
                              f.kind.assign(static_cast<const char*>(d), strnlen(static_cast<const char*>(d), n));
                          if (type == TCA_OPTIONS)
                              for_attrs(static_cast<const rtattr*>(d), static_cast<int>(n),
                                        [&](int t2, const void* d2, size_t n2) {
                                            if (t2 == TCA_BPF_NAME)
                                                f.bpf_name.assign(static_cast<const char*>(d2),
                                                                  strnlen(static_cast<const char*>(d2), n2));
                                            if (t2 == TCA_BPF_ID && n2 >= 4)
                                                f.bpf_id = u32_of(d2);
                                        });
                      });
            out.push_back(f);
        });
    } catch (const Error& e) {
        // No clsact qdisc on the interface: no filters either.
        if (std::string_view(e.what()).find("Invalid argument") != std::string_view::npos ||
            std::string_view(e.what()).find("No such file") != std::string_view::npos)
            return {};
        throw;
    }
    return out;
}

std::string clsact_in_scratch_netns()
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return "pipe: " + errno_text(errno);
    pid_t pid = fork();
    if (pid < 0) {
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        return "fork: " + errno_text(errno);
    }
    if (pid == 0) {
        ::close(pipefd[0]);
        int err = 0;
        if (unshare(CLONE_NEWNET) != 0) {
            err = errno;
        } else {
            LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = 1, .attach_point = BPF_TC_INGRESS);
            int rc = bpf_tc_hook_create(&hook);
            err = rc == 0 || rc == -EEXIST ? 0 : -rc;
        }
        ssize_t w = write(pipefd[1], &err, sizeof(err));
        _exit(w == sizeof(err) ? 0 : 1);
    }
    ::close(pipefd[1]);
    int err = EIO;
    ssize_t n = read(pipefd[0], &err, sizeof(err));
    ::close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (n != sizeof(err))
        return "the probe process died";
    return err == 0 ? std::string() : "create a clsact qdisc (in a scratch netns): " + errno_text(err);
}

namespace {

std::string find_program(const std::string& name)
{
    std::string path = getenv("PATH") ? getenv("PATH") : "";
    // Doctor may run from a service or sudo with a short PATH; the tools live in sbin.
    path += ":/usr/sbin:/sbin:/usr/bin:/bin";
    size_t start = 0;
    while (start <= path.size()) {
        size_t colon = path.find(':', start);
        std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
        if (!dir.empty()) {
            std::string p = dir + "/" + name;
            if (access(p.c_str(), X_OK) == 0)
                return p;
        }
        if (colon == std::string::npos)
            break;
        start = colon + 1;
    }
    return {};
}

}  // namespace

ToolRun run_tool(const std::vector<std::string>& argv)
{
    ToolRun r;
    const std::string prog = find_program(argv.at(0));
    if (prog.empty())
        return r;
    r.found = true;
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0)
        return r;
    if (pipe2(err, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return r;
    }
    std::vector<char*> args;
    std::vector<std::string> store = argv;
    for (auto& a : store)
        args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        int null = ::open("/dev/null", O_RDONLY);
        if (null < 0 || dup2(null, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
            _exit(127);
        execv(prog.c_str(), args.data());
        _exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    if (pid < 0) {
        ::close(out[0]);
        ::close(err[0]);
        return r;
    }
    constexpr size_t kMax = 16u << 20;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    bool timed_out = false;
    while (p[0].fd >= 0 || p[1].fd >= 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            break;
        }
        if (poll(p, 2, static_cast<int>(left.count())) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; ++i) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[65536];
            ssize_t n = ::read(p[i].fd, buf, sizeof(buf));
            std::string& dst = i == 0 ? r.out : r.err;
            if (n > 0 && dst.size() < kMax) {
                dst.append(buf, static_cast<size_t>(n));
            } else if (n > 0) {
                r.truncated |= i == 0;
            } else {
                ::close(p[i].fd);
                p[i].fd = -1;
            }
        }
    }
    for (auto& f : p)
        if (f.fd >= 0)
            ::close(f.fd);
    // A tool may close its pipes and stay (or hand them to a child and
    // hang): the exit gets what is left of the same 5 s, not forever.
    int status = 0;
    bool exited = false;
    while (!timed_out) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR)) {
            exited = w == pid;
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline)
            timed_out = true;
        else
            usleep(10000);
    }
    if (timed_out) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    } else if (exited && WIFEXITED(status)) {
        r.status = WEXITSTATUS(status);
    }
    if (auto nl = r.err.find('\n'); nl != std::string::npos)
        r.err.resize(nl);
    if (timed_out)
        r.err = "no answer within 5 s";
    return r;
}

}  // namespace ktp::probe
