// Test helper: drives a Handshake (SOCKS5, HTTP CONNECT) exactly as the event
// loop does, with the server's bytes delivered in chunks of a chosen size.
#pragma once

#include "upstream/handshake.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace ktp::testing {

// Drives a Handshake the way the event loop does (drop consumed bytes, feed
// what is left after a send, wait for more on need_more) while the server
// delivers its bytes `chunk` at a time.
struct DriveResult {
    ktp::HandshakeStep last;  // done, failed, or need_more when the server ran out
    std::string sent;         // everything the handshake sent, concatenated
    std::string rest;         // bytes left for the tunnel (delivered or not) after done
    int sends = 0;
};

inline DriveResult drive(ktp::Handshake& hs, std::string_view server, size_t chunk = SIZE_MAX)
{
    using ktp::HandshakeStep;
    DriveResult r;
    std::string in;
    size_t delivered = 0;
    HandshakeStep step = hs.start();
    for (int guard = 0; guard < 100000; ++guard) {
        REQUIRE(step.consumed <= in.size());
        switch (step.kind) {
        case HandshakeStep::send:
            REQUIRE_FALSE(step.out.empty());
            r.sent += step.out;
            ++r.sends;
            in.erase(0, step.consumed);
            // After a send, bytes already here are fed at once, as the loop does.
            step = in.empty() ? HandshakeStep{} : hs.feed(in);
            continue;
        case HandshakeStep::need_more: {
            REQUIRE(step.consumed == 0);  // need_more keeps the bytes for the next feed
            if (delivered == server.size()) {
                r.last = step;
                r.last.kind = HandshakeStep::need_more;
                return r;
            }
            size_t n = std::min(chunk, server.size() - delivered);
            in.append(server.substr(delivered, n));
            delivered += n;
            step = hs.feed(in);
            continue;
        }
        case HandshakeStep::done:
            in.erase(0, step.consumed);
            r.rest = in + std::string(server.substr(delivered));
            r.last = step;
            return r;
        case HandshakeStep::failed:
            REQUIRE_FALSE(step.error.empty());
            REQUIRE(step.error.find('\n') == std::string::npos);
            r.last = step;
            return r;
        }
    }
    FAIL("handshake did not finish");
    return r;
}

}  // namespace ktp::testing
