// ktp-load's RPC-style workload (tools/ktp_load_rpc.cpp): blocking client
// threads doing one small request/reply per connection, and its tiny server.
#pragma once

#include <sys/socket.h>

#include <csignal>
#include <cstdint>

namespace ktp_load {

struct RpcOptions {
    uint64_t conns = 10000;   // client: exchanges in all, shared by the threads
    unsigned clients = 8;     // client: threads, each one exchange at a time
    uint32_t request = 64;    // bytes the client sends
    uint32_t reply = 128;     // bytes the server answers
    double timeout_s = 60;    // the whole run
    double conn_timeout_s = 10;  // client: one exchange
};

// Prints one `mode=rpc ...` line. Exit status as ktp-load's: 0, 1 failures, 3 timeout.
int run_rpc_client(const sockaddr* to, socklen_t to_len, const RpcOptions& o, const volatile std::sig_atomic_t& stop);
// Serves until stop or the timeout; prints `mode=rpc-server ...`.
int run_rpc_server(const sockaddr* at, socklen_t at_len, const RpcOptions& o, const volatile std::sig_atomic_t& stop);

}  // namespace ktp_load
