// Owner of the reader of the connect hooks' dry-run ring buffer (map
// ktp_events, bpf/sock_events.h): hands each record to a callback on the
// thread that calls drain().
#pragma once

#include <functional>

#include "ktproxy_shared.h"

struct ring_buffer;

namespace ktp {

class DryRunEvents {
public:
    using Handler = std::function<void(const ktp_dry_event&)>;
    // ringbuf_fd: SockHooks::events_fd(). Throws Error when libbpf cannot map it.
    DryRunEvents(int ringbuf_fd, Handler on_event);
    ~DryRunEvents();
    DryRunEvents(const DryRunEvents&) = delete;
    DryRunEvents& operator=(const DryRunEvents&) = delete;

    // Readable (POLLIN) when records wait.
    int fd() const;
    // Hands every waiting record to the handler; returns how many.
    int drain();

private:
    static int on_record(void* self, void* data, size_t size);

    ::ring_buffer* rb_ = nullptr;
    Handler on_event_;
};

}  // namespace ktp
