// The host routing state gateway mode needs: an fwmark rule and a table whose
// only route delivers everything locally, for IPv4 and IPv6. Set up through
// iproute2's `ip` (run directly, no shell), removed on exit, and removable
// after a crash because both are identified by mark and table alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ktp {

// Runs `ip ARGS...`; returns its exit status (127 if ip is missing).
int run_ip(const std::vector<std::string>& args, std::string* output = nullptr);

class PolicyRoute {
public:
    PolicyRoute(uint32_t mark, uint32_t table);
    ~PolicyRoute();
    PolicyRoute(const PolicyRoute&) = delete;
    PolicyRoute& operator=(const PolicyRoute&) = delete;

    // Deletes every rule for (mark, table) and flushes the table, both
    // families; true if anything was there.
    static bool remove(uint32_t mark, uint32_t table);

private:
    uint32_t mark_, table_;
};

}  // namespace ktp
