#!/usr/bin/env python3
# A misbehaving peer for tools.sh: after one echoed exchange it injects, on
# loopback, a TCP segment 3 bytes beyond what it really sent, carrying urgent
# data. The receiving kernel records the urgent byte at once (POLLPRI) while
# nothing past the gap is readable. Then it stays silent and prints how the
# connection ended: "closed" (ktproxy's idle timeout) or "open" (it did not).
# Usage: urgent_beyond_gap.py SERVER PORT   (root: raw sockets)
import socket
import struct
import sys


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


server, port = sys.argv[1], int(sys.argv[2])
sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sniffer.bind(("lo", 0))
sniffer.settimeout(5)
c = socket.create_connection((server, port), timeout=5)
local_ip, local_port = c.getsockname()[:2]
c.send(b"hello")
# The segment that carried "hello" (the connect was redirected to ktproxy on
# loopback): its destination port and sequence numbers.
while True:
    ip = sniffer.recv(65535)[14:]
    if ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
        continue
    tcp = ip[(ip[0] & 15) * 4:]
    sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
    if sport == local_port and tcp[(tcp[12] >> 4) * 4:] == b"hello":
        peer_ip = socket.inet_ntoa(ip[16:20])
        break
if c.recv(100) != b"hello":
    sys.exit("no echo")
payload = b"XY!"
flags = 0x10 | 0x08 | 0x20  # ACK PSH URG, urgent pointer 3: "!" is urgent
hdr = struct.pack("!HHIIBBHHH", local_port, dport, seq + 5 + 3, ack, 5 << 4, flags, 65535, 0, 3)
pseudo = struct.pack("!4s4sBBH", socket.inet_aton(local_ip), socket.inet_aton(peer_ip), 0, socket.IPPROTO_TCP,
                     len(hdr) + len(payload))
hdr = hdr[:16] + struct.pack("!H", checksum(pseudo + hdr + payload)) + hdr[18:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
raw.sendto(hdr + payload, (peer_ip, 0))
c.settimeout(8)
try:
    print("closed" if c.recv(100) == b"" else "data")
except ConnectionResetError:
    print("closed")
except socket.timeout:
    print("open")
