#!/usr/bin/python3
"""UDP load for scripts/bench --udp (scripts/lib/bench_udp.sh).

dns HOST COUNT NAME: COUNT A queries for NAME to HOST:53.
echo HOST PORT COUNT: COUNT 64-byte datagrams to a UDP echo server.

Each runs two phases on one unconnected socket: throughput with 32
outstanding (the next goes out as an answer comes back), then latency with
one at a time over COUNT/4 exchanges. Prints
"rate=N p50_us=N p99_us=N lost=N". A datagram unanswered for 1 s is lost.
"""
import socket
import struct
import sys
import time


def dns_query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def run(dst, make, ident, count, window):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(1.0)
    sent = {}
    rtts = []
    lost = 0
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
    return count / (time.perf_counter() - start), rtts, lost


def main():
    mode = sys.argv[1]
    if mode == "dns":
        host, count, name = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        dst = (host, 53)
        make = lambda i: dns_query(i, name)
        ident = lambda d: struct.unpack("!H", d[:2])[0]
    else:
        host, port, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        dst = (host, port)
        make = lambda i: struct.pack("!H", i) + b"x" * 62
        ident = lambda d: struct.unpack("!H", d[:2])[0]
    rate, _, lost = run(dst, make, ident, count, 32)
    _, rtts, lost1 = run(dst, make, ident, max(count // 4, 1), 1)
    rtts.sort()
    pct = lambda p: int(rtts[min(len(rtts) - 1, int(len(rtts) * p))] * 1e6) if rtts else 0
    print("rate=%d p50_us=%d p99_us=%d lost=%d" % (rate, pct(0.5), pct(0.99), lost + lost1))


if __name__ == "__main__":
    main()
