#!/usr/bin/env python3
"""Writes a pcap of tunnel datagrams for the soak in benches/zeek.sh: good
packets mixed with every malformed case the given encapsulation can meet.

    benches/mix.py <out.pcap> <vxlan|geneve|geneve+vxlan|skip>

Each record is Ethernet/IPv4/UDP; `udpsrc replay --passthrough` sends the UDP
payloads. Prints, one per line, the reject reasons the mix contains."""
import struct
import sys


def inner(i):
    """A 64-byte Ethernet/IPv4/UDP frame (checksums left zero)."""
    payload = bytes(18)
    udp = struct.pack("!HHHH", 10000 + i % 5000, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 0, (i >> 8) & 255, i & 255]), bytes([10, 1, 0, 1]))
    return bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0]) + ip + udp


VXLAN = bytes([0x08, 0, 0, 0, 0, 0, 7, 0])
GENEVE_ETH = bytes([0, 0, 0x65, 0x58, 0, 0, 9, 0])
GENEVE_IP = bytes([0, 0, 0x08, 0x00, 0, 0, 9, 0])


def ipv4_udp(proto=17, frag=0, total=0):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, frag, 64, proto, 0,
                       bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + struct.pack("!HHHH", 49152, 4789, 0, 0)


def mix(encap, i):
    """(datagram, reason or None) for the i-th record: 4 good, then one bad."""
    f = inner(i)
    good = {
        "vxlan": VXLAN + f,
        "geneve": GENEVE_ETH + f,
        "geneve+vxlan": GENEVE_IP + ipv4_udp() + VXLAN + f,
        "skip": bytes(16) + f,
    }[encap]
    bad = {
        "vxlan": [(b"", "udp_empty_datagram"), (VXLAN[:5], "vxlan_too_short"),
                  (bytes(8) + f, "vxlan_unset_I_flag"), (VXLAN, "tunnel_without_inner_packet")],
        "geneve": [(GENEVE_ETH[:5], "geneve_too_short"), (bytes([0x40]) + GENEVE_ETH[1:] + f, "geneve_invalid_version"),
                   (bytes([0x3F]) + GENEVE_ETH[1:] + f[:20], "geneve_options_too_long"),
                   (GENEVE_ETH, "tunnel_without_inner_packet"), (b"", "udp_empty_datagram")],
        "geneve+vxlan": [(GENEVE_IP + bytes([0x45, 0, 0]), "geneve_vxlan_bad_inner_ip"),
                         (GENEVE_IP + ipv4_udp(proto=6) + VXLAN + f, "geneve_vxlan_inner_not_udp"),
                         (GENEVE_IP + ipv4_udp(frag=100) + VXLAN + f, "geneve_vxlan_inner_not_udp"),
                         (GENEVE_IP + ipv4_udp() + bytes(8) + f, "vxlan_unset_I_flag")],
        "skip": [(bytes(16), "skip_beyond_datagram"), (bytes(3), "skip_beyond_datagram")],
    }[encap]
    if i % 5 < 4:
        return good, None
    return bad[(i // 5) % len(bad)]


def main():
    out, encap = sys.argv[1], sys.argv[2]
    reasons = set()
    with open(out, "wb") as w:
        w.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(1000):
            d, reason = mix(encap, i)
            if reason:
                reasons.add(reason)
            udp = struct.pack("!HHHH", 40000 + i % 64, 4789, 8 + len(d), 0) + d
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                             bytes([192, 0, 2, 9]), bytes([192, 0, 2, 10]))
            frame = bytes([2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 8, 0]) + ip + udp
            w.write(struct.pack("<IIII", 1700000000, i, len(frame), len(frame)) + frame)
    print("\n".join(sorted(reasons)))


main()
