// Whether an app still holds its end of a relayed connection, asked of the
// kernel's socket table (sock_diag). A relay whose app has sent its FIN
// waits for the destination's answer; if the app then closed its socket
// for good (close(), not shutdown()), nothing the destination sends can
// ever reach it: the kernel answers such data with a reset. A destination
// that never reads or answers would otherwise hold both of ktproxy's
// sockets for as long as it lives.
#pragma once

#include "base/sock_addr.h"
#include "kernel/sock_diag.h"
#include "netns/netns.h"

namespace ktp {

class AppSocketProbe {
public:
    enum class Holder {
        app,      // a process holds the socket: it may still read
        none,     // the socket is orphaned, in TIME_WAIT/FIN_WAIT2 or gone
        unknown,  // the kernel could not be asked (no sock_diag, an error)
    };

    // app: the app socket's own address (ktproxy's accepted socket's peer);
    // peer: the address it is connected to (ktproxy's listener). Both must
    // be of one family and live in this network namespace, or in `ns` (a
    // container's, asked through its own sock_diag socket); a wildcard peer
    // gives unknown.
    Holder holder(const SockAddr& app, const SockAddr& peer, const Netns* ns = nullptr);

private:
    // Made with the worker, while setup may still open sockets; if it has
    // no netlink socket every answer is unknown and such relays wait.
    SockDiag diag_;
};

}  // namespace ktp
