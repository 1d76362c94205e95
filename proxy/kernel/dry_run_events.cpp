// The dry-run ring buffer through libbpf's ring_buffer reader.
#include "kernel/dry_run_events.h"

#include "base/error.h"
#include "kernel/bpf_abi.h"

#include <bpf/libbpf.h>

#include <cstring>

namespace ktp {

DryRunEvents::DryRunEvents(int ringbuf_fd, Handler on_event) : on_event_(std::move(on_event))
{
    rb_ = ring_buffer__new(ringbuf_fd, &DryRunEvents::on_record, this, nullptr);
    if (!rb_)
        fail_errno("dry run: map the event ring buffer ktp_events");
}

DryRunEvents::~DryRunEvents() { ring_buffer__free(rb_); }

int DryRunEvents::fd() const { return ring_buffer__epoll_fd(rb_); }

int DryRunEvents::drain()
{
    int n = ring_buffer__consume(rb_);
    return n < 0 ? 0 : n;
}

int DryRunEvents::on_record(void* self, void* data, size_t size)
{
    // A record of another size would be a build of the programs that does
    // not match this daemon: skip it rather than read past it.
    if (size < sizeof(ktp_dry_event))
        return 0;
    ktp_dry_event ev;
    std::memcpy(&ev, data, sizeof(ev));
    static_cast<DryRunEvents*>(self)->on_event_(ev);
    return 0;
}

}  // namespace ktp
