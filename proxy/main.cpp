// ktproxy entry point: parse the command line and dispatch; every failure
// ends as one line on stderr and a non-zero exit.
#include "base/error.h"
#include "daemon/doctor.h"
#include "daemon/instance.h"
#include "base/log.h"
#include "config/options.h"

#include <cstdio>

int main(int argc, char** argv)
{
    ktp::Options opts;
    ktp::ParseResult pr = ktp::parse_command_line(argc, argv, opts);
    if (!pr.run) {
        if (pr.exit_code == 0)
            std::fputs(pr.message.c_str(), stdout);
        else
            ktp::log::write(ktp::log::Level::error, pr.message);
        return pr.exit_code;
    }
    try {
        switch (opts.command) {
        case ktp::Command::status: return ktp::run_status(opts);
        case ktp::Command::cleanup: return ktp::run_cleanup(opts);
        case ktp::Command::doctor: return ktp::run_doctor(opts);
        case ktp::Command::ctl: return ktp::run_ctl(opts);
        case ktp::Command::daemon:
        case ktp::Command::run: return ktp::run_instance(opts, argc, argv);
        }
    } catch (const ktp::Error& e) {
        ktp::log::write(ktp::log::Level::error, e.what());
    } catch (const std::exception& e) {
        ktp::log::write(ktp::log::Level::error, fmt::format("unexpected failure: {}", e.what()));
    }
    return 1;
}
