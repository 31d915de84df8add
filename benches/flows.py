#!/usr/bin/env python3
"""Writes a realistic multi-flow trace for benches/zeek.sh --trace: a classic
pcap (Ethernet, microsecond timestamps) of many concurrent TCP connections
carrying HTTP/1.1, and DNS over UDP, all packets distinct.

    benches/flows.py <out.pcap> [--connections 2000] [--packets 300000]
                     [--dns 500] [--concurrency 200] [--rate 20000] [--seed 1]

Each TCP connection is a whole conversation as a tap next to the client sees
it: SYN (with an MSS option), SYN-ACK, ACK; one to three HTTP requests on
the connection (GET mostly, some POSTs with a body the server ACKs), each
answered by a response with a Content-Length whose size is drawn from a
heavy-tailed (log-normal) distribution, sent in MSS-size (1460-byte) segments
that the client ACKs every second segment (delayed ACK) and at the end of the
response; then FIN, FIN-ACK, ACK. Every ACK comes after the data it
acknowledges, so nothing is missing or out of order (Zeek's history
`ShADadFf`, `missed_bytes` 0), and every IP and TCP checksum is right. A DNS
exchange is a query (A record) and its answer, from its own source port.

Connections and DNS exchanges start in random order and run interleaved:
--concurrency of them are open at any time, and each packet comes from one
of the open ones picked at random. Timestamps increase strictly, on average
1/--rate s apart (they matter for `zeek -r`; `udpsrc replay --pps` paces by
its own clock). The response sizes are scaled so that the trace holds about
--packets packets. No two packets of the trace are identical: every packet
carries its direction's next IP ID and its own sequence numbers.

Prints what it wrote: packets, connections, DNS exchanges, the frame size
mix, and the connections Zeek should log."""
import argparse
import random
import struct
import sys
from array import array

MSS = 1460
ETH_IP = b"\x08\x00"


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data):
    """The Internet checksum of data, as bytes in network order (RFC 1071:
    summing native-order words and storing the result natively is the same
    as doing it all in network order)."""
    if len(data) % 2:
        data += b"\0"
    return struct.pack("=H", ~fold(sum(array("H", data))) & 0xFFFF)


def mac(ip):
    return b"\x02\x00" + ip


class Host:
    """One end: address, MAC, IP ID counter, TTL as seen at the tap."""

    def __init__(self, ip, ttl, rng):
        self.ip = ip
        self.mac = mac(ip)
        self.ttl = ttl
        self.ipid = rng.randrange(65536)

    def ip_packet(self, peer, proto, l4):
        self.ipid = (self.ipid + 1) & 0xFFFF
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), self.ipid, 0x4000,
                          self.ttl, proto, 0, self.ip, peer.ip)
        hdr = hdr[:10] + checksum(hdr) + hdr[12:]
        return peer.mac + self.mac + ETH_IP + hdr + l4


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class Tcp:
    """Builds the segments of one connection, tracking both directions'
    sequence numbers."""

    def __init__(self, client, cport, server, sport, rng):
        self.ends = {0: (client, cport), 1: (server, sport)}
        self.seq = {0: rng.randrange(1 << 32), 1: rng.randrange(1 << 32)}
        self.win = {0: 65535, 1: 29200}

    def seg(self, d, flags, payload=b"", opts=b""):
        (src, sp), (dst, dp) = self.ends[d], self.ends[1 - d]
        ack = self.seq[1 - d] if flags & ACK else 0
        doff = (20 + len(opts)) // 4
        hdr = struct.pack("!HHIIBBHHH", sp, dp, self.seq[d], ack, doff << 4, flags,
                          self.win[d], 0, 0) + opts
        pseudo = struct.pack("!4s4sBBH", src.ip, dst.ip, 0, 6, len(hdr) + len(payload))
        hdr = hdr[:16] + checksum(pseudo + hdr + payload) + hdr[18:]
        self.seq[d] = (self.seq[d] + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return src.ip_packet(dst, 6, hdr + payload)


class Pool:
    """Message bodies: slices of a fixed block of random bytes."""

    def __init__(self, rng, size=1 << 21):
        self.data = rng.randbytes(size)

    def body(self, start, n):
        out = bytearray()
        while n:
            off = start % (len(self.data) - MSS)
            take = min(n, MSS)
            out += self.data[off:off + take]
            start += take
            n -= take
        return bytes(out)


def segments(n):
    """Data segments of an n-byte message."""
    return (n + MSS - 1) // MSS


def tcp_packets(exchanges):
    """Packets of a connection given its (request bytes, response bytes)."""
    n = 3 + 3  # handshake, teardown
    for message in (m for exchange in exchanges for m in exchange):
        s = segments(message)
        n += s + (s + 1) // 2 if s > 1 else 1
    return n


def http_connection(client, server, cport, sport, exchanges, pool, rng):
    """Yields the frames of one HTTP connection."""
    t = Tcp(client, cport, server, sport, rng)
    mss = b"\x02\x04" + struct.pack("!H", MSS)
    yield t.seg(0, SYN, opts=mss)
    yield t.seg(1, SYN | ACK, opts=mss)
    yield t.seg(0, ACK)
    for req_head, req_body, resp_body in exchanges:
        request = req_head + pool.body(rng.randrange(1 << 30), req_body)
        yield from stream(t, 0, request)
        yield from stream(t, 1, resp_body)
    yield t.seg(0, FIN | ACK)
    yield t.seg(1, FIN | ACK)
    yield t.seg(0, ACK)


def stream(t, d, message):
    """Sends message from direction d in MSS segments; the other side ACKs
    every second segment and the last one (a one-segment message is
    acknowledged by the reply)."""
    if callable(message):
        message = message()
    n = segments(len(message))
    for i in range(n):
        chunk = message[i * MSS:(i + 1) * MSS]
        last = i == n - 1
        yield t.seg(d, ACK | (PSH if last else 0), chunk)
        if n > 1 and (i % 2 == 1 or last):
            yield t.seg(1 - d, ACK)


def dns_exchange(client, resolver, cport, qid, name, answer):
    """Yields a DNS query for name's A record and its answer."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    question = qname + struct.pack("!HH", 1, 1)
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
    reply = (struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
             + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + answer)
    for src, dst, sp, dp, msg in ((client, resolver, cport, 53, query),
                                  (resolver, client, 53, cport, reply)):
        udp = struct.pack("!HHHH", sp, dp, 8 + len(msg), 0) + msg
        pseudo = struct.pack("!4s4sBBH", src.ip, dst.ip, 0, 17, len(udp))
        c = checksum(pseudo + udp)
        if c == b"\0\0":
            c = b"\xff\xff"
        yield src.ip_packet(dst, 17, udp[:6] + c + udp[8:])


def request_head(rng, server, method, body):
    path = "/%s/%d.%s" % (rng.choice(["static", "api/v2", "img", "assets", "download"]),
                          rng.randrange(10 ** 6), rng.choice(["html", "js", "png", "json", "bin"]))
    lines = ["%s %s HTTP/1.1" % (method, path),
             "Host: www%d.example.com" % server.ip[3],
             "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
             "Accept: */*",
             "Accept-Language: en-US,en;q=0.5",
             "Connection: keep-alive"]
    if rng.random() < 0.5:
        lines.append("Cookie: session=%016x" % rng.getrandbits(64))
    if method == "POST":
        lines += ["Content-Type: application/octet-stream", "Content-Length: %d" % body]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_head(n):
    return ("HTTP/1.1 200 OK\r\nServer: nginx/1.26.2\r\nDate: Sun, 06 Dec 2026 05:00:00 GMT\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            "Connection: keep-alive\r\n\r\n" % n).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--connections", type=int, default=2000, help="TCP (HTTP) connections")
    ap.add_argument("--packets", type=int, default=300000, help="about this many packets in all")
    ap.add_argument("--dns", type=int, default=500, help="DNS exchanges (UDP, 2 packets each)")
    ap.add_argument("--concurrency", type=int, default=200, help="flows open at a time")
    ap.add_argument("--rate", type=float, default=20000, help="mean packets per second of the timestamps")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.connections < 1 or a.dns < 0 or a.concurrency < 1 or a.rate <= 0:
        ap.error("--connections and --concurrency must be at least 1, --dns at least 0, --rate positive")
    if a.connections > 60000:
        ap.error("--connections: at most 60000 (a client port each)")
    rng = random.Random(a.seed)
    pool = Pool(rng)

    # The connections' shapes: requests (1-3, some POSTs) and response sizes.
    clients = [Host(bytes([10, 1, i // 250, 1 + i % 250]), 64, rng) for i in range(500)]
    servers = [Host(bytes([198, 51, 100, 1 + i]), 57, rng) for i in range(40)]
    resolver = Host(bytes([10, 0, 0, 53]), 64, rng)
    shapes = []
    for c in range(a.connections):
        k = rng.choices([1, 2, 3], [60, 25, 15])[0]
        reqs = []
        for _ in range(k):
            post = rng.random() < 0.1
            reqs.append((post, rng.randrange(200, 20000) if post else 0, rng.lognormvariate(0, 1.8)))
        shapes.append(reqs)

    # Scale the response sizes so that the packets add up to about --packets.
    budget = a.packets - 2 * a.dns

    def sizes(scale):
        return [[(post, body, max(0, int(w * scale))) for post, body, w in reqs] for reqs in shapes]

    def count(scale):
        return sum(tcp_packets([(400 + b, 200 + s) for _, b, s in reqs]) for reqs in sizes(scale))

    lo, hi = 0.0, 1.0
    while count(hi) < budget and hi < 1e12:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
    plan = sizes(hi)

    # Flows in random order; --concurrency of them open at once.
    flows = []
    used = set()

    def fresh_port(client):
        """An ephemeral port no earlier flow of `client` has used."""
        while True:
            cport = rng.randrange(32768, 61000)
            if (client.ip, cport) not in used:
                used.add((client.ip, cport))
                return cport

    for c, reqs in enumerate(plan):
        client = clients[c % len(clients)]
        server = servers[rng.randrange(len(servers))]
        cport = fresh_port(client)
        sport = 80 if rng.random() < 0.8 else 8080
        exchanges = []
        for post, body, resp in reqs:
            head = request_head(rng, server, "POST" if post else "GET", body)
            exchanges.append((head, body, (lambda n=resp, o=rng.randrange(1 << 30): response_head(n) + pool.body(o, n))))
        flows.append(("tcp", client, server, cport, sport, exchanges))
    for q in range(a.dns):
        client = clients[rng.randrange(len(clients))]
        cport = fresh_port(client)
        flows.append(("dns", client, cport, q))
    rng.shuffle(flows)

    def start(f):
        if f[0] == "tcp":
            _, client, server, cport, sport, exchanges = f
            return http_connection(client, server, cport, sport, exchanges, pool, rng)
        _, client, cport, q = f
        return dns_exchange(client, resolver, cport, rng.randrange(65536),
                            "host%d.svc%d.example.net" % (q, q % 7), bytes([203, 0, 113, 1 + q % 250]))

    pending = iter(flows)
    active = []
    for f in pending:
        active.append(start(f))
        if len(active) == a.concurrency:
            break
    gap_us = 1e6 / a.rate
    t_us = 1_780_000_000 * 10 ** 6
    n = nbytes = 0
    mix = [0, 0, 0]  # frames <= 100 bytes, 101-1000, > 1000
    with open(a.out, "wb") as w:
        w.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        while active:
            i = rng.randrange(len(active))
            frame = next(active[i], None)
            if frame is None:
                nxt = next(pending, None)
                if nxt is None:
                    active[i] = active[-1]
                    active.pop()
                else:
                    active[i] = start(nxt)
                continue
            t_us += 1 + int(rng.expovariate(1.0) * gap_us)
            w.write(struct.pack("<IIII", t_us // 10 ** 6, t_us % 10 ** 6, len(frame), len(frame)))
            w.write(frame)
            n += 1
            nbytes += len(frame)
            mix[0 if len(frame) <= 100 else 1 if len(frame) <= 1000 else 2] += 1
    print(f"{a.out}: {n} packets, {nbytes} bytes of frames (mean {nbytes / n:.0f}), "
          f"{a.connections} HTTP connections ({sum(len(r) for r in plan)} requests), "
          f"{a.dns} DNS exchanges; frames <= 100 B {100 * mix[0] / n:.1f}%, "
          f"101-1000 B {100 * mix[1] / n:.1f}%, > 1000 B {100 * mix[2] / n:.1f}%; "
          f"zeek -r should log {a.connections + a.dns} connections, missed_bytes 0")


if __name__ == "__main__":
    sys.exit(main())
