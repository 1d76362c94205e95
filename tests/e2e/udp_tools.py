#!/usr/bin/python3
"""UDP test tools for tests/e2e/udp.sh and dns.sh.

echo ADDR PORT [ADDR PORT ...]: a UDP echo server (one socket per address);
  each reply is the datagram followed by "|from=HOST:PORT" (the source it saw).
client HOST PORT COUNT MODE: COUNT datagrams (payload: sequence number and a
  SHA-256 checksum of random bytes) in windows of 32, MODE connected,
  unconnected or mapped (AF_INET6 socket, v4-mapped destination). Checks each
  reply's checksum and, for unconnected/mapped, that recvfrom() names
  HOST:PORT. Reordering is tolerated; prints "sent=N ok=N lost=N bad=N
  badsrc=N peer=ADDR" and exits 1 unless ok == COUNT.
sendto HOST PORT: one sendto(), prints "ok" or the errno name.
dnsmany HOST COUNT NAME: COUNT short-lived sockets, each one A query for NAME
  and its answer; prints "answered=N".
socks5udp HOST PORT MODE: a SOCKS5 server (no auth) for UDP ASSOCIATE only,
  answering each datagram itself (an echo, "|from=relay:0" appended).
  MODE hostile: before each good answer (IPv4) it sends the same answer with a
  short header, FRAG=1, another sender's address and a domain sender.
  MODE refuse: UDP ASSOCIATE is answered REP=7 (command not supported);
  prints "refused" each time.
  MODE close: a datagram "close" closes the control connection.
  Prints "association N" per association, flushed.
"""
import errno
import hashlib
import os
import socket
import struct
import sys
import time


def echo(pairs):
    import selectors
    sel = selectors.DefaultSelector()
    for host, port in pairs:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((host, int(port)))
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            while True:
                try:
                    data, peer = s.recvfrom(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                s.sendto(data + b"|from=%s:%d" % (peer[0].encode(), peer[1]), peer)


def client(host, port, count, mode):
    port = int(port)
    count = int(count)
    if mode == "mapped":
        fam, dst = socket.AF_INET6, ("::ffff:" + host, port)
    else:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        dst = (host, port)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    peer = "-"
    if mode == "connected":
        s.connect(dst)
        peer = "%s:%d" % s.getpeername()[:2]
    s.settimeout(2)
    want = {}
    ok = bad = badsrc = 0
    seq = 0
    window = 32
    deadline = time.time() + 120
    while (seq < count or want) and time.time() < deadline:
        while seq < count and len(want) < window:
            body = os.urandom(64 + seq % 512)
            msg = b"%d:%s:" % (seq, hashlib.sha256(body).hexdigest().encode()) + body
            want[seq] = msg
            if mode == "connected":
                s.send(msg)
            else:
                s.sendto(msg, dst)
            seq += 1
        try:
            data, src = s.recvfrom(70000)
        except socket.timeout:
            break  # what is still in `want` is lost
        msg, _, _seen = data.rpartition(b"|from=")
        try:
            n_s, digest, body = msg.split(b":", 2)
            n = int(n_s)
        except ValueError:
            bad += 1
            continue
        if hashlib.sha256(body).hexdigest().encode() != digest or want.pop(n, None) != msg:
            bad += 1
            continue
        if src[1] != port or src[0] not in (dst[0], "::ffff:" + dst[0]):
            badsrc += 1
        ok += 1
    print("sent=%d ok=%d lost=%d bad=%d badsrc=%d peer=%s" % (seq, ok, len(want), bad, badsrc, peer))
    return 0 if ok == count and bad == 0 and badsrc == 0 else 1


def socks5udp(host, port, mode):
    import threading
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, int(port)))
    lsock.listen(16)
    count = [0]

    def session(c):
        c.settimeout(30)
        try:
            greet = c.recv(300)
            if not greet.startswith(b"\x05"):
                return
            c.sendall(b"\x05\x00")
            req = c.recv(300)
            if len(req) < 4 or req[1] != 3:
                return
            if mode == "refuse":
                c.sendall(b"\x05\x07\x00\x01" + bytes(6))
                print("refused", flush=True)
                return
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((host, 0))
            c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(host) + struct.pack("!H", u.getsockname()[1]))
            count[0] += 1
            print("association %d" % count[0], flush=True)
            u.settimeout(0.2)
            c.setblocking(False)
            while True:
                try:
                    if c.recv(10) == b"":
                        return
                except BlockingIOError:
                    pass
                try:
                    d, peer = u.recvfrom(70000)
                except socket.timeout:
                    continue
                hlen = {1: 10, 4: 22}.get(d[3] if len(d) > 3 else 0, 0)
                if not hlen or len(d) < hlen:
                    continue
                hdr, payload = d[:hlen], d[hlen:]
                if payload == b"close":
                    c.close()
                    u.close()
                    return
                answer = payload + b"|from=relay:0"
                if mode == "hostile" and hlen == 10:
                    addr, dport = hdr[4:8], struct.unpack("!H", hdr[8:10])[0]
                    u.sendto(b"\x00\x00", peer)
                    u.sendto(b"\x00\x00\x01" + hdr[3:] + answer, peer)
                    u.sendto(hdr[:8] + struct.pack("!H", (dport + 1) & 0xFFFF) + answer, peer)
                    u.sendto(b"\x00\x00\x00\x01" + bytes([addr[0] ^ 1]) + addr[1:] + hdr[8:10] + answer, peer)
                    u.sendto(b"\x00\x00\x00\x03\x04name" + hdr[8:10] + answer, peer)
                    u.sendto(b"\x00\x01\x00" + hdr[3:] + answer, peer)
                u.sendto(hdr + answer, peer)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = lsock.accept()
        threading.Thread(target=session, args=(c,), daemon=True).start()


def sendto(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (host, int(port)))
        print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))


def dns_query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def dnsmany(host, count, name):
    answered = 0
    for i in range(int(count)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        qid = i & 0xFFFF
        try:
            s.sendto(dns_query(qid, name), (host, 53))
            data, src = s.recvfrom(4096)
            if src == (host, 53) and struct.unpack("!H", data[:2])[0] == qid:
                answered += 1
        except OSError:
            pass
        s.close()
    print("answered=%d" % answered)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "echo":
        echo(list(zip(args[0::2], args[1::2])))
    elif cmd == "client":
        sys.exit(client(*args))
    elif cmd == "sendto":
        sendto(*args)
    elif cmd == "dnsmany":
        dnsmany(*args)
    elif cmd == "socks5udp":
        socks5udp(*args)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
