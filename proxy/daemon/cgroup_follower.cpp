// Following a re-created app cgroup.
#include "daemon/cgroup_follower.h"

#include "base/error.h"
#include "base/log.h"

namespace ktp {
namespace {

// How long a removed app cgroup may take to be created again before ktproxy
// gives up and exits (systemctl restart re-creates it within milliseconds;
// a service that stays stopped should not leave ktproxy up and useless).
constexpr int kReattachWaitS = 30;

}  // namespace

CgroupFollower::CgroupFollower(const Cgroup& app, bool fail_closed)
    : watch_(app.path, cgroup_id_of(app.fd.get())), fail_closed_(fail_closed)
{
}

bool CgroupFollower::follow(std::optional<Cgroup>& app, const Reattach& reattach)
{
    auto state = watch_.check();
    auto now = std::chrono::steady_clock::now();
    if (state != CgroupWatch::State::attached && !waiting_) {
        waiting_ = true;
        gone_since_ = now;
        log::warn("cgroup {} was removed: its hooks went with it; waiting up to {}s for it to be created again",
                  app->path, kReattachWaitS);
    }
    if (state == CgroupWatch::State::replaced) {
        try {
            Cgroup fresh = open_cgroup2_dir(app->path);
            reattach(*app, fresh);
            watch_.attached_to(cgroup_id_of(fresh.fd.get()));
            app = std::move(fresh);
        } catch (const Error& e) {
            log::error("cannot attach the hooks to the new cgroup {}: {}: exiting{}", app->path, e.what(),
                       fail_closed_ ? "; hooks stay pinned (fail-closed)" : "");
            return false;
        }
        waiting_ = false;
        ++reattached_;
        last_reattach_ = std::chrono::steady_clock::now();
        log::info("re-attached the hooks to cgroup {} (created again; {:.1f} ms from seeing it to attached)",
                  app->path, std::chrono::duration<double, std::milli>(last_reattach_ - now).count());
    } else if (waiting_ && now - gone_since_ > std::chrono::seconds(kReattachWaitS)) {
        log::error("cgroup {} was removed and not created again within {}s: exiting{}", app->path, kReattachWaitS,
                   fail_closed_ ? "; hooks stay pinned (fail-closed): a restarted ktproxy attaches them to the "
                                  "new cgroup"
                                : "");
        return false;
    }
    return true;
}

double CgroupFollower::since_last_reattach_s() const
{
    return reattached_ ? std::chrono::duration<double>(std::chrono::steady_clock::now() - last_reattach_).count()
                       : 0;
}

}  // namespace ktp
