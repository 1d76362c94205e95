#!/usr/bin/env python3
"""Clients and servers for tests/e2e/hostile.sh and scripts/soak.

Each subcommand is bounded in time and prints one line of key=value pairs on
stdout (the figures the shell asserts on). Not a test by itself: the suite
decides what the counts must be.
"""
import argparse
import errno
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def kv(**fields):
    print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


# --- servers ---------------------------------------------------------------

def cmd_servers(a):
    """echo:PORT, rst:PORT (accept, reset at once), stuck:PORT (backlog 0,
    never accepts: SYNs beyond the queue are dropped), id:LO-HI (one listener
    per port, replies "id=PORT\\n" and closes). All dual-stack."""
    sel = selectors.DefaultSelector()
    stuck = []
    for spec in a.spec:
        kind, ports = spec.split(":")
        lo, _, hi = ports.partition("-")
        for port in range(int(lo), int(hi or lo) + 1):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", port))
            if kind == "stuck":
                s.listen(0)
                stuck.append(s)
                continue
            s.listen(4096)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, (kind, port, None))
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            kind, port, conn = key.data
            if conn is None:
                try:
                    c, _ = key.fileobj.accept()
                except OSError:
                    continue
                if kind == "rst":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                elif kind == "id":
                    try:
                        c.send(f"id={port}\n".encode())
                    except OSError:
                        pass
                    c.close()
                else:
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, (kind, port, True))
                continue
            c = key.fileobj
            try:
                data = c.recv(65536)
                if data:
                    c.setblocking(True)
                    c.settimeout(5)
                    c.sendall(data)
                    c.setblocking(False)
                    continue
            except OSError:
                pass
            sel.unregister(c)
            c.close()


# --- probe: a connect every INTERVAL, recording its own source ports --------

def cmd_probe(a):
    fam = family_of(a.host)
    ok = refused = other = 0
    ports = []
    deadline = time.monotonic() + a.duration
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    while time.monotonic() < deadline and not stop[0] and len(ports) < a.max:
        s = socket.socket(fam, socket.SOCK_STREAM)
        # Bound before connect, so the port is known even for a connect
        # that fails: a SYN from it on the server is a direct one.
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
        ports.append(s.getsockname()[1])
        s.settimeout(1)
        try:
            s.connect((a.host, a.port))
            s.sendall(b"p")
            if s.recv(1) == b"p":
                ok += 1
            else:
                other += 1
        except ConnectionRefusedError:
            refused += 1
        except OSError:
            other += 1
        finally:
            # A reset, not a FIN: thousands of probes a second must not
            # leave TIME_WAITs on every odd port (bind's) of 127.0.0.1 and
            # [::1], which ktproxy's restarts need one of.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        time.sleep(a.interval)
    with open(a.ports, "w") as f:
        f.write("\n".join(map(str, ports)) + "\n")
    kv(ok=ok, refused=refused, other=other, tries=len(ports))


# --- long-lived echo flows -------------------------------------------------

def cmd_flows(a):
    """N connections each sending 32 bytes every INTERVAL for DURATION, then
    waiting (at most 5 s) for every echo. Interrupted: a connection that saw
    an error or EOF before its last echo."""
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(a.conns):
        s = socket.create_connection((a.host, a.port), timeout=5)
        s.setblocking(False)
        st = {"sock": s, "sent": 0, "got": 0, "dead": False, "i": i}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    with open(a.ready, "w") as f:
        f.write("ready\n")
    payload = b"0123456789abcdef0123456789abcdef"
    start = time.monotonic()
    next_send = start
    while time.monotonic() - start < a.duration:
        now = time.monotonic()
        if now >= next_send:
            for st in conns:
                if st["dead"]:
                    continue
                try:
                    st["sent"] += st["sock"].send(payload)
                except BlockingIOError:
                    pass
                except OSError:
                    st["dead"] = True
            next_send += a.interval
        for key, _ in sel.select(timeout=max(0.0, next_send - time.monotonic())):
            st = key.data
            try:
                d = st["sock"].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                st["dead"] = True
                sel.unregister(st["sock"])
            st["got"] += len(d)
    end = time.monotonic() + 5
    while time.monotonic() < end and any(not st["dead"] and st["got"] < st["sent"] for st in conns):
        for key, _ in sel.select(timeout=0.2):
            st = key.data
            try:
                d = st["sock"].recv(65536)
            except OSError:
                d = b""
            if not d:
                st["dead"] = True
                sel.unregister(st["sock"])
            st["got"] += len(d)
    kv(conns=len(conns), sent=sum(c["sent"] for c in conns), echoed=sum(c["got"] for c in conns),
       interrupted=sum(1 for c in conns if c["dead"] or c["got"] != c["sent"]))


# --- churn -----------------------------------------------------------------

def cmd_churn(a):
    """N connections, C at a time, the kind chosen by index: clean close,
    client reset, server reset, refused destination, never accepted (backlog
    full). Every connect must succeed at the app side, or fail the way a
    direct connect would (refused, timed out: the dead-destination cache)."""
    import asyncio

    kinds = a.kinds.split(",")
    counts = {k: 0 for k in kinds}
    errors = {}

    async def one(i):
        kind = kinds[i % len(kinds)]
        port = {"clean": a.echo, "client_rst": a.echo, "server_rst": a.rst, "refused": a.refused,
                "stuck": a.stuck}[kind]
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, port), 3)
            if kind == "clean":
                w.write(b"x" * 100)
                await w.drain()
                await asyncio.wait_for(r.readexactly(100), 3)
            elif kind == "client_rst":
                w.write(b"y" * 100)
                await w.drain()
                w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                     struct.pack("ii", 1, 0))
            elif kind == "server_rst":
                w.write(b"z")
                await asyncio.wait_for(r.read(1), 3)
            elif kind == "stuck":
                await asyncio.sleep(0.01)
                if a.stuck_close == "rst":
                    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                         struct.pack("ii", 1, 0))
            counts[kind] += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            # Resets and refusals are this mix's point; count them by kind.
            name = f"{kind}:{type(e).__name__}"
            errors[name] = errors.get(name, 0) + 1
        finally:
            if w is not None:
                w.close()

    async def main():
        sem = asyncio.Semaphore(a.concurrency)

        async def guarded(i):
            async with sem:
                await one(i)
        await asyncio.wait_for(asyncio.gather(*(guarded(i) for i in range(a.conns))), a.timeout)

    asyncio.run(main())
    kv(conns=a.conns, **counts, errors=",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "none")


def cmd_streamers(a):
    """N connections sending as fast as they can until killed (the shell
    kill -9s this process mid-stream)."""
    socks = [socket.create_connection((a.host, a.port), timeout=5) for _ in range(a.conns)]
    for s in socks:
        s.setblocking(False)
    print("streaming", flush=True)
    buf = b"s" * 16384
    end = time.monotonic() + a.timeout
    while time.monotonic() < end:
        for s in socks:
            try:
                s.send(buf)
                s.recv(65536)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass


# --- identity: which server did each connection reach -----------------------

def cmd_identity(a):
    """C connects at once, each to a random port of LO-HI; each must read
    "id=PORT". wrong: another port's identity; reset: no identity at all."""
    lo, hi = map(int, a.ports.split("-"))
    rnd = random.Random(a.seed)
    want = [rnd.randint(lo, hi) for _ in range(a.conns)]
    fam = family_of(a.host)
    socks = []
    for p in want:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((a.host, p))
        except BlockingIOError:
            pass
        socks.append(s)
    sel = selectors.DefaultSelector()
    bufs = {}
    # --send: one byte once connected, so that a connection whose handshake
    # ACK was lost still reaches the listener (a pure ACK is never resent).
    first = selectors.EVENT_READ | (selectors.EVENT_WRITE if a.send else 0)
    for i, s in enumerate(socks):
        sel.register(s, first, i)
        bufs[i] = b""
    ok = wrong = reset = 0
    pending = set(range(len(socks)))
    deadline = time.monotonic() + a.timeout
    while pending and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            i = key.data
            if ev & selectors.EVENT_WRITE:
                try:
                    key.fileobj.send(b"?")
                except OSError:
                    pass
                sel.modify(key.fileobj, selectors.EVENT_READ, i)
                continue
            try:
                d = key.fileobj.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                d = None
            if d:
                bufs[i] += d
                if not bufs[i].endswith(b"\n"):
                    continue
            sel.unregister(key.fileobj)
            pending.discard(i)
            if bufs[i] == f"id={want[i]}\n".encode():
                ok += 1
            elif bufs[i]:
                wrong += 1
            else:
                reset += 1
    for s in socks:
        s.close()
    kv(conns=len(socks), ok=ok, wrong=wrong, reset=reset, unanswered=len(pending))


def cmd_hold(a):
    """N connections opened (non-blocking) and held until SIGTERM or TIMEOUT."""
    fam = family_of(a.host)
    socks = []
    for _ in range(a.conns):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((a.host, a.port))
        except BlockingIOError:
            pass
        socks.append(s)
    print(f"opened {len(socks)}", flush=True)
    done = [False]
    signal.signal(signal.SIGTERM, lambda *_: done.__setitem__(0, True))
    end = time.monotonic() + a.timeout
    while not done[0] and time.monotonic() < end:
        time.sleep(0.05)
    for s in socks:
        s.close()


# --- getsockopt from apps --------------------------------------------------

SO_ORIGINAL_DST = 80


def cmd_sockopts(a):
    """getsockopt results (return, errno, length, bytes) of a connected
    socket for a set of options at buffer sizes 8 KiB and 64 KiB. TCP_INFO's
    bytes move on their own: only its length counts."""
    fam = family_of(a.host)
    s = socket.create_connection((a.host, a.port), timeout=5)
    opts = [("SO_RCVBUF", socket.SOL_SOCKET, socket.SO_RCVBUF, True),
            ("SO_TYPE", socket.SOL_SOCKET, socket.SO_TYPE, True),
            ("TCP_NODELAY", socket.IPPROTO_TCP, socket.TCP_NODELAY, True),
            ("TCP_CONGESTION", socket.IPPROTO_TCP, socket.TCP_CONGESTION, True),
            ("TCP_INFO", socket.IPPROTO_TCP, socket.TCP_INFO, False),
            ("IP_TOS", socket.IPPROTO_IP, socket.IP_TOS, True),
            ("SO_ORIGINAL_DST", socket.SOL_IP, SO_ORIGINAL_DST, True)]
    if fam == socket.AF_INET6:
        opts.append(("IPV6_V6ONLY", socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True))
    for name, level, opt, exact in opts:
        for size in (8192, 65536):
            try:
                v = s.getsockopt(level, opt, size)
                res = f"len={len(v)}" + (f" bytes={v.hex()}" if exact else "")
            except OSError as e:
                res = f"errno={errno.errorcode.get(e.errno, e.errno)}"
            print(f"{name} {size} {res}")
    s.close()


def cmd_origdst(a):
    """A socket whose remote port is PORT (a live relayed connection's
    source port): listen on ADDR:any, connect to it from ADDR:PORT, then ask
    SO_ORIGINAL_DST on both ends. Prints each end's answer."""
    srv = socket.socket()
    srv.bind((a.addr, 0))
    srv.listen(1)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind((a.addr, a.port))
    c.connect(srv.getsockname())
    acc, peer = srv.accept()
    assert peer[1] == a.port, peer
    out = []
    for name, s in (("accepted", acc), ("connecting", c)):
        try:
            v = s.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            out.append(f"{name}=answer:{v.hex()}")
        except OSError as e:
            out.append(f"{name}={errno.errorcode.get(e.errno, e.errno)}")
    print(" ".join(out), flush=True)


def cmd_stranger(a):
    """Connects straight to ktproxy's listener, sends a request, and reports
    how the connection ended and how long that took (ms)."""
    # Timed from the connect: ktproxy can reset the connection so soon that
    # the reset already reaches connect() on loopback.
    t0 = time.monotonic()
    try:
        s = socket.create_connection((a.host, a.port), timeout=5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        d = s.recv(100)
        how = "eof" if not d else "data"
    except ConnectionResetError:
        how = "reset"
    except socket.timeout:
        how = "open"
    kv(end=how, ms=f"{(time.monotonic() - t0) * 1000:.1f}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("servers"); s.add_argument("spec", nargs="+"); s.add_argument("--timeout", type=float, default=600)
    s = sub.add_parser("probe"); s.add_argument("host"); s.add_argument("port", type=int)
    s.add_argument("--duration", type=float, required=True); s.add_argument("--interval", type=float, default=0.001)
    s.add_argument("--ports", required=True); s.add_argument("--max", type=int, default=10**9)
    s = sub.add_parser("flows"); s.add_argument("host"); s.add_argument("port", type=int)
    s.add_argument("--conns", type=int, default=100); s.add_argument("--interval", type=float, default=0.01)
    s.add_argument("--duration", type=float, required=True); s.add_argument("--ready", required=True)
    s = sub.add_parser("churn"); s.add_argument("host")
    for n in ("echo", "rst", "refused", "stuck"):
        s.add_argument(f"--{n}", type=int, required=True)
    s.add_argument("--conns", type=int, required=True); s.add_argument("--concurrency", type=int, default=100)
    s.add_argument("--timeout", type=float, default=120); s.add_argument("--stuck-close", choices=["fin", "rst"], default="fin")
    s.add_argument("--kinds", default="clean,client_rst,server_rst,refused,stuck")
    s = sub.add_parser("streamers"); s.add_argument("host"); s.add_argument("port", type=int)
    s.add_argument("--conns", type=int, default=20); s.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("identity"); s.add_argument("host"); s.add_argument("ports")
    s.add_argument("--conns", type=int, required=True); s.add_argument("--seed", type=int, default=1)
    s.add_argument("--send", action="store_true")
    s.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("hold"); s.add_argument("host"); s.add_argument("port", type=int)
    s.add_argument("--conns", type=int, required=True); s.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("sockopts"); s.add_argument("host"); s.add_argument("port", type=int)
    s = sub.add_parser("origdst"); s.add_argument("addr"); s.add_argument("port", type=int)
    s = sub.add_parser("stranger"); s.add_argument("host"); s.add_argument("port", type=int)
    a = p.parse_args()
    globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    main()
