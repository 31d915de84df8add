//! The identity of an inner packet for duplicate suppression: a seeded
//! 64-bit hash of the packet as it left its sender.
//!
//! What the hash ignores, and why:
//! - IP TTL / hop limit, and the IPv4 header checksum that covers it: a
//!   router between the two mirror points decrements it (Arkime skips the
//!   same bytes).
//! - The link layer (MAC addresses, VLAN tags, or none at all): the copy
//!   taken at the sender's interface and the one taken at the receiver's
//!   carry different MAC addresses, and a GENEVE copy may carry bare IP
//!   where a VXLAN copy carries Ethernet. The hash starts at the IP header.
//! - Padding after the IP packet (an Ethernet frame padded to 60 bytes).
//!
//! Everything else counts: DSCP/ECN, IP ID, options, the transport header
//! with its checksum, and the payload. The length on the wire and the
//! captured length count too, so a truncated copy never matches a whole
//! one. A packet that is not IP is hashed the same way from its first byte,
//! link layer included.
//!
//! How much is read. A TCP packet: its IP and TCP headers (options
//! included) and its lengths, not its payload. Anything else: the first
//! [`HEAD`] bytes from the IP header on (the headers and the start of the
//! payload) and the last [`TAIL`] captured bytes, not the middle of a long
//! payload. A copy made on the way is the same bytes, so what tells two
//! packets apart is their headers: IP ID, sequence and acknowledgment
//! numbers, TCP timestamps, and the transport checksum, which covers the
//! whole payload (TCP, UDP, ICMP, SCTP). Two TCP segments of one connection
//! that match in all of that within the window are one segment sent again
//! with the same checksum: a retransmission, of which the receiving host
//! keeps the first as well. A UDP checksum is optional and 16 bits, and two
//! datagrams of one flow often share length and ports, so UDP and the rest
//! are also told apart by the start of their payload (where sequence
//! numbers and IDs sit) and its end (an ESP packet's integrity check).
//! Reading more would cost the source what Zeek alone otherwise pays: the
//! cache lines of a payload the source never touches (Arkime hashes
//! headers only).
//!
//! The seed is random per source, so a sender cannot craft packets that
//! collide with someone else's to have them suppressed.

use std::hash::{BuildHasher, Hasher as _};

use super::parsed::{Inner, Parsed};
use crate::flow::FlowKey;
use crate::link::LinkType;
use crate::wire::Ip;

/// Bytes read from the start of the IP header of a packet that is not
/// TCP: the largest IPv4 header (60) and transport header and the start of
/// the payload. TCP headers longer than this (IPv6 extension headers) are
/// read the same way.
pub const HEAD: usize = 128;
/// Bytes read from the end of what was captured, past [`HEAD`].
pub const TAIL: usize = 16;
/// Masks that keep every bit.
const NO_MASK: [u64; 2] = [!0, !0];

/// A seeded hash of normalized inner packets.
#[derive(Clone, Copy, Debug)]
pub struct PacketHasher {
    k0: u64,
    k1: u64,
}

impl PacketHasher {
    /// Seeded from the process's random hash keys.
    pub fn random() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x7461_7020_6b65_7973);
        let k0 = h.finish();
        h.write_u64(k0);
        Self::with_seed(k0, h.finish())
    }

    /// A fixed seed (tests).
    pub fn with_seed(k0: u64, k1: u64) -> Self {
        PacketHasher {
            // Odd and large, so the product mixes every bit.
            k0: (k0 ^ 0xa076_1d64_78bd_642f) | 1 << 63 | 1,
            k1: k1 ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The hash of a packet of `link` whose captured bytes are `data`,
    /// `wire_len` long on the wire.
    pub fn packet(&self, link: LinkType, data: &[u8], wire_len: usize) -> u64 {
        self.parsed(&Parsed::new(link, data, wire_len))
    }

    /// The hash of a packet whose IP layer has been found.
    pub fn parsed(&self, p: &Parsed<'_>) -> u64 {
        match &p.ip {
            Some(ip) => self.ip(ip),
            None => self.sampled(!self.k1, p.data, NO_MASK, p.wire_len),
        }
    }

    fn ip(&self, ip: &Inner<'_>) -> u64 {
        // TTL and checksum are masked out of the words as they are read,
        // not cleared in a copy (a copy, and a byte store followed by a
        // word load of it, cost more than the whole hash).
        let masks = match ip.view {
            // Bytes 8 (TTL) and 10-11 (checksum): bits 0-7 and 16-31 of
            // the little-endian word at 8. The views have checked that
            // these headers are all there.
            Ip::V4(_) => [!0, !0xffff_00ff],
            // Byte 7 (hop limit): bits 56-63 of the word at 0.
            Ip::V6(_) => [!(0xff << 56), !0],
        };
        let captured = ip.bytes.len();
        match ip.tcp.map(|tcp| ip.header_len + tcp.len()) {
            // TCP: the headers and the lengths; the payload through the
            // checksum (see the module doc).
            Some(end) if end <= HEAD => {
                let h = self.absorb(self.k1, &ip.bytes[..end], masks);
                self.lengths(h, captured, ip.on_wire)
            }
            _ => self.sampled(self.k1, ip.bytes, masks, ip.on_wire),
        }
    }

    /// The first [`HEAD`] bytes of `bytes` with `masks` applied, the last
    /// [`TAIL`] bytes of the rest, the captured length and `wire_len`.
    fn sampled(&self, seed: u64, bytes: &[u8], masks: [u64; 2], wire_len: usize) -> u64 {
        let (head, rest) = bytes.split_at(bytes.len().min(HEAD));
        let mut h = self.absorb(seed, head, masks);
        if !rest.is_empty() {
            h = self.absorb(h, &rest[rest.len().saturating_sub(TAIL)..], NO_MASK);
        }
        self.lengths(h, bytes.len(), wire_len)
    }

    /// Folds the captured and the wire length into `h`: both in one
    /// multiplication (each is keyed by the mix).
    fn lengths(&self, h: u64, captured: usize, wire_len: usize) -> u64 {
        self.mix(h ^ captured as u64, wire_len as u64)
    }

    /// 32 bytes at a time in two independent lanes of 16 (so that two
    /// multiplications run at once), then 16, then what is left as two
    /// words, then the length. The first two words read are ANDed with
    /// `masks`: bytes 0-15 when there are 16 bytes or more, which an IP
    /// header always has (shorter input is hashed unmasked).
    fn absorb(&self, h: u64, bytes: &[u8], masks: [u64; 2]) -> u64 {
        // The second lane starts from the key alone: started from `h`
        // too, the two would cancel when they meet and lose `h`.
        let mut lanes = [h, self.k1.rotate_left(32)];
        let mut m = masks;
        let mut blocks = bytes.chunks_exact(32);
        for b in &mut blocks {
            lanes[0] = self.mix(lanes[0] ^ (word(b, 0) & m[0]), word(b, 8) & m[1]);
            lanes[1] = self.mix(lanes[1] ^ word(b, 16), word(b, 24));
            m = NO_MASK;
        }
        let mut rest = blocks.remainder();
        if rest.len() >= 16 {
            lanes[0] = self.mix(lanes[0] ^ (word(rest, 0) & m[0]), word(rest, 8) & m[1]);
            rest = &rest[16..];
        }
        let (a, b) = short(rest);
        let h = self.mix(lanes[0] ^ a, lanes[1] ^ b);
        self.round(h, bytes.len() as u64)
    }

    /// The fingerprint of a flow, which the flow tables key by: its
    /// addresses, ports and protocol, seeded.
    #[inline]
    pub fn flow(&self, key: &FlowKey) -> u64 {
        let ((a, pa), (b, pb)) = (key.a, key.b);
        let rest = u64::from(pa) | u64::from(pb) << 16 | u64::from(key.proto) << 32;
        // Two independent products, then one that joins them.
        let x = self.mix(a as u64, (a >> 64) as u64);
        let y = self.mix(b as u64 ^ rest, (b >> 64) as u64);
        self.mix(x, y)
    }

    /// wyhash's mix of two words, each keyed: 16 bytes per multiplication.
    fn mix(&self, a: u64, b: u64) -> u64 {
        let p = u128::from(a ^ self.k0) * u128::from(b ^ self.k1);
        (p as u64) ^ ((p >> 64) as u64)
    }

    /// One multiply-fold round (wyhash's mix): the word enters the state,
    /// then the 128-bit product with the odd secret key, high half folded
    /// into the low.
    fn round(&self, h: u64, w: u64) -> u64 {
        let p = u128::from(h ^ w) * u128::from(self.k0);
        (p as u64) ^ ((p >> 64) as u64)
    }
}

/// Fewer than 16 bytes as two words, read the way wyhash reads them: two
/// loads that overlap rather than a byte-by-byte copy. Different bytes of
/// one length give different words; the length is hashed after them.
fn short(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    let u32_at =
        |at: usize| u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
    match n {
        8.. => (word(b, 0), word(b, n - 8)),
        4..=7 => (u32_at(0), u32_at(n - 4)),
        1..=3 => (
            u64::from(b[0]) << 16 | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]),
            0,
        ),
        0 => (0, 0),
    }
}

/// The little-endian word at `at` of a block at least `at + 8` long.
fn word(block: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&block[at..at + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4/TCP packet in Ethernet with this TTL and payload.
    pub fn tcp4(ttl: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], ttl)
            .tcp(40000, 80, seq, 1024)
            .ack(ack);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn h() -> PacketHasher {
        PacketHasher::with_seed(1, 2)
    }

    #[test]
    fn ttl_checksum_link_layer_and_padding_are_ignored() {
        let a = tcp4(64, 1, 2, b"hello");
        let b = tcp4(63, 1, 2, b"hello");
        assert_ne!(a, b, "TTL and checksum differ");
        let hash = |p: &[u8]| h().packet(LinkType::En10Mb, p, p.len());
        assert_eq!(hash(&a), hash(&b));
        // Other MAC addresses, a VLAN tag, padding, or bare IP: the same packet.
        let mut macs = a.clone();
        macs[..12].copy_from_slice(&[9; 12]);
        assert_eq!(hash(&macs), hash(&a));
        let mut tagged = a[..12].to_vec();
        tagged.extend([0x81, 0x00, 0x00, 0x07]);
        tagged.extend(&a[12..]);
        assert_eq!(hash(&tagged), hash(&a));
        let mut padded = a.clone();
        padded.extend([0; 6]);
        assert_eq!(hash(&padded), hash(&a));
        let raw = &a[14..];
        assert_eq!(h().packet(LinkType::Raw, raw, raw.len()), hash(&a));
    }

    #[test]
    fn payload_headers_and_truncation_count() {
        let hash = |p: &[u8]| h().packet(LinkType::En10Mb, p, p.len());
        let a = tcp4(64, 1, 2, b"hello");
        assert_ne!(hash(&a), hash(&tcp4(64, 1, 2, b"hellp")), "payload");
        assert_ne!(hash(&a), hash(&tcp4(64, 2, 2, b"hello")), "sequence");
        let mut tos = a.clone();
        tos[15] = 4;
        assert_ne!(hash(&a), hash(&tos), "DSCP/ECN");
        // Long payloads: a change anywhere, with the checksum it brings.
        let long: Vec<u8> = (0..2001u32).map(|i| (i * 7) as u8).collect();
        let base = hash(&tcp4(64, 1, 2, &long));
        for at in [0, 20, 100, 1999, 2000] {
            let mut other = long.clone();
            other[at] ^= 1;
            assert_ne!(hash(&tcp4(64, 1, 2, &other)), base, "byte {at}");
        }
        let cut = h().packet(LinkType::En10Mb, &a[..40], a.len());
        assert_ne!(cut, hash(&a), "a truncated copy is another packet");
        assert_ne!(
            PacketHasher::with_seed(3, 4).packet(LinkType::En10Mb, &a, a.len()),
            hash(&a),
            "the seed changes every hash"
        );
    }

    /// Swaps two 16-bit words of `p`: the one's complement sum, so the
    /// transport checksum, stays the same, and only those bytes change.
    fn swap_words(p: &[u8], at: usize, other: usize) -> Vec<u8> {
        let mut q = p.to_vec();
        let (x, y) = (q[at..at + 2].to_vec(), q[other..other + 2].to_vec());
        q[at..at + 2].copy_from_slice(&y);
        q[other..other + 2].copy_from_slice(&x);
        assert_ne!(p, &q[..]);
        q
    }

    #[test]
    fn a_tcp_payload_counts_through_the_checksum_alone() {
        let hash = |p: &[u8]| h().packet(LinkType::En10Mb, p, p.len());
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let a = tcp4(64, 1, 2, &payload);
        let start = 14 + 20 + 20;
        for (x, y) in [(0, 100), (400, 500), (990, 996)] {
            let b = swap_words(&a, start + x, start + y);
            assert_eq!(hash(&a), hash(&b), "payload bytes {x} and {y}");
        }
        // The same change with its checksum, as a sender makes it.
        let mut other = payload.clone();
        other[450] ^= 1;
        assert_ne!(hash(&tcp4(64, 1, 2, &other)), hash(&a));
        // TCP options count: they are header.
        let opts = {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 1, 1024)
                .ack(2)
                .options(&[etherparse::TcpOptionElement::Timestamp(5, 6)])
                .unwrap();
            let mut out = Vec::new();
            b.write(&mut out, &payload).unwrap();
            out
        };
        let at = 14 + 20 + 20 + 4; // TSval's high bytes, swapped with data
        assert_ne!(hash(&opts), hash(&swap_words(&opts, at, at + 200)));
    }

    #[test]
    fn udp_is_told_apart_by_its_payload_head_and_tail_not_its_middle() {
        let hash = |p: &[u8]| h().packet(LinkType::Raw, p, p.len());
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let udp = {
            let b = etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64).udp(5000, 514);
            let mut out = Vec::new();
            b.write(&mut out, &payload).unwrap();
            out
        };
        let start = 40 + 8;
        // Equal checksums all: the head and the tail count, the middle not.
        let head = swap_words(&udp, start + 2, start + 400);
        assert_ne!(hash(&udp), hash(&head), "the head is read");
        let middle = swap_words(&udp, start + 300, start + 400);
        assert_eq!(hash(&udp), hash(&middle), "the middle is not");
        let tail = swap_words(&udp, start + 400, start + 996);
        assert_ne!(hash(&udp), hash(&tail), "the tail is read");
    }

    #[test]
    fn ipv6_hop_limit_is_ignored_and_non_ip_is_hashed_whole() {
        let v6 = |hops: u8| {
            let b = etherparse::PacketBuilder::ipv6([1; 16], [2; 16], hops).udp(1, 2);
            let mut out = Vec::new();
            b.write(&mut out, b"x").unwrap();
            out
        };
        let hash = |p: &[u8]| h().packet(LinkType::Raw, p, p.len());
        assert_eq!(hash(&v6(64)), hash(&v6(3)));
        let arp = [0xffu8; 42];
        let mut other = arp;
        other[0] = 0;
        let hash = |p: &[u8]| h().packet(LinkType::En10Mb, p, p.len());
        assert_ne!(hash(&arp), hash(&other));
        assert_eq!(hash(&arp), hash(&arp.clone()));
    }
}
