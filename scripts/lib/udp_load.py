#!/usr/bin/python3
"""UDP load for scripts/bench --udp (scripts/lib/bench_udp.sh).

dns HOST COUNT NAME: COUNT A queries for NAME to HOST:53; a "%d" in NAME
    becomes the query's number (a name per query: no cache, no merging).
echo HOST PORT COUNT: COUNT 64-byte datagrams to a UDP echo server.
flows HOST PORT N: N live flows (see flows() below).

Each runs two phases on one unconnected socket: throughput with 32
outstanding (the next goes out as an answer comes back), then latency with
one at a time over COUNT/4 exchanges. Prints
"rate=N p50_us=N p99_us=N lost=N bad=N". A datagram unanswered for 1 s is
lost; bad: answers that are not NOERROR with a record (dns) or shorter than
the datagram (echo).
"""
import os
import socket
import struct
import sys
import time


def dns_query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def run(dst, make, ident, count, window, ok=lambda d: True):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(1.0)
    sent = {}
    rtts = []
    lost = 0
    bad = 0
    seq = 0
    start = time.perf_counter()
    while seq < count or sent:
        while seq < count and len(sent) < window:
            sent[seq & 0xFFFF] = time.perf_counter()
            s.sendto(make(seq & 0xFFFF), dst)
            seq += 1
        try:
            data = s.recv(4096)
        except socket.timeout:
            lost += len(sent)
            sent.clear()
            continue
        t0 = sent.pop(ident(data), None)
        if t0 is not None:
            rtts.append(time.perf_counter() - t0)
            bad += not ok(data)
    return count / (time.perf_counter() - start), rtts, lost, bad


def flows(dst, n):
    """N unconnected sockets, each sends one datagram to the echo server at
    dst and waits for its answer, then all stay open, as N live UDP flows
    through the relay. Prints "pid=P" and "open=N answered=N secs=S"; then,
    on SIGUSR1, closes the first half ("closed=N"); on SIGTERM (or after
    300 s) exits, closing the rest."""
    import resource
    import select
    import signal
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 64:
        sys.exit("udp_load.py flows: RLIMIT_NOFILE hard limit %d < %d sockets" % (hard, n + 64))
    if soft != resource.RLIM_INFINITY and soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, hard))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    print("pid=%d" % os.getpid(), flush=True)
    socks = []
    answered = 0
    start = time.perf_counter()
    # Batches of 256 outstanding: the echo server and the relay see a burst,
    # not 10,000 at once (no drops from a full receive queue).
    for base in range(0, n, 256):
        batch = {}
        ep = select.epoll()
        for i in range(base, min(n, base + 256)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.sendto(struct.pack("!I", i) + b"x" * 60, dst)
            socks.append(s)
            batch[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN)
        deadline = time.perf_counter() + 2.0
        while batch and time.perf_counter() < deadline:
            for fd, _ in ep.poll(0.2):
                try:
                    batch[fd].recv(4096)
                except BlockingIOError:
                    continue
                ep.unregister(fd)
                del batch[fd]
                answered += 1
        ep.close()
    print("open=%d answered=%d secs=%.2f" % (len(socks), answered, time.perf_counter() - start), flush=True)
    half = n // 2
    end = time.monotonic() + 300
    while time.monotonic() < end:
        info = signal.sigtimedwait({signal.SIGUSR1, signal.SIGTERM}, max(0.1, end - time.monotonic()))
        if info is None or info.si_signo == signal.SIGTERM:
            break
        for s in socks[:half]:
            s.close()
        del socks[:half]
        print("closed=%d" % half, flush=True)
    for s in socks:
        s.close()


def main():
    mode = sys.argv[1]
    if mode == "flows":
        flows((sys.argv[2], int(sys.argv[3])), int(sys.argv[4]))
        return
    if mode == "dns":
        host, count, name = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        dst = (host, 53)
        make = (lambda i: dns_query(i, name % i)) if "%d" in name else (lambda i: dns_query(i, name))
        ident = lambda d: struct.unpack("!H", d[:2])[0]
        # An answer: NOERROR with at least one record.
        ok = lambda d: len(d) >= 12 and d[3] & 0x0F == 0 and struct.unpack("!H", d[6:8])[0] > 0
    else:
        host, port, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        dst = (host, port)
        make = lambda i: struct.pack("!H", i) + b"x" * 62
        ident = lambda d: struct.unpack("!H", d[:2])[0]
        ok = lambda d: len(d) >= 64
    rate, _, lost, bad = run(dst, make, ident, count, 32, ok)
    _, rtts, lost1, bad1 = run(dst, make, ident, max(count // 4, 1), 1, ok)
    rtts.sort()
    pct = lambda p: int(rtts[min(len(rtts) - 1, int(len(rtts) * p))] * 1e6) if rtts else 0
    print("rate=%d p50_us=%d p99_us=%d lost=%d bad=%d" % (rate, pct(0.5), pct(0.99), lost + lost1, bad + bad1))


if __name__ == "__main__":
    main()
