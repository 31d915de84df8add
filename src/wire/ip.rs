//! IPv4 and IPv6 (RFC 791, RFC 8200): checked views that honour the length
//! fields.
//!
//! A view is made from the bytes at hand (`captured`) and the packet's
//! length on the wire (`wire_len`, at least `captured.len()`), because the
//! two differ when a capture was cut short:
//!
//! - a length field larger than the captured bytes but within `wire_len`
//!   is a truncated capture: the view is fine, its payload is what was
//!   captured of it;
//! - a length field larger than `wire_len` is a lie: [`Malformed::Length`];
//! - a length field shorter than the bytes at hand ends the packet there:
//!   what follows is padding and no part of the payload;
//! - a length field of 0 is no length: the packet runs to `wire_len`.

use super::{Bounded, Malformed, be16};

/// Protocol number of TCP.
pub const TCP: u8 = 6;
/// Protocol number of UDP.
pub const UDP: u8 = 17;
/// Protocol number of SCTP.
pub const SCTP: u8 = 132;
/// IPv6 extension headers the walk steps over (RFC 8200 section 4).
pub const HOP_BY_HOP: u8 = 0;
/// IPv6 Routing header.
pub const ROUTING: u8 = 43;
/// IPv6 Fragment header.
pub const FRAGMENT: u8 = 44;
/// IPv6 Destination Options header.
pub const DEST_OPTS: u8 = 60;
/// A bound on the IPv6 extension headers walked, so hostile chains cost
/// little; the balancing program unrolls its walk this many times.
pub const MAX_EXT_HEADERS: usize = 8;

/// An IPv4 or IPv6 packet, by its version nibble.
#[derive(Clone, Copy, Debug)]
pub enum Ip<'a> {
    /// IPv4.
    V4(Ipv4<'a>),
    /// IPv6.
    V6(Ipv6<'a>),
}

impl<'a> Ip<'a> {
    /// Checks an IPv4 or IPv6 packet; see [`Ipv4::new_checked`] and
    /// [`Ipv6::new_checked`].
    pub fn new_checked(captured: &'a [u8], wire_len: usize) -> Result<Self, Malformed> {
        match captured.first().map(|b| b >> 4) {
            Some(4) => Ipv4::new_checked(captured, wire_len).map(Ip::V4),
            Some(6) => Ipv6::new_checked(captured, wire_len).map(Ip::V6),
            _ => Err(Malformed::Header),
        }
    }

    /// The upper-layer protocol (for IPv6, after the extension headers).
    pub fn protocol(&self) -> u8 {
        match self {
            Ip::V4(v4) => v4.protocol(),
            Ip::V6(v6) => v6.protocol(),
        }
    }

    /// Fragment offset, in 8-byte units: not 0 for a later fragment.
    pub fn fragment_offset(&self) -> u16 {
        match self {
            Ip::V4(v4) => v4.fragment_offset(),
            Ip::V6(v6) => v6.fragment_offset(),
        }
    }

    /// The payload starts with a UDP header: the protocol is UDP and this is
    /// not a later fragment.
    pub fn has_udp_header(&self) -> bool {
        self.protocol() == UDP && self.fragment_offset() == 0
    }

    /// Part of a fragmented packet (the first fragment too).
    pub fn is_fragment(&self) -> bool {
        match self {
            Ip::V4(v4) => v4.is_fragment(),
            Ip::V6(v6) => v6.is_fragment(),
        }
    }

    /// Source and destination as numbers (the addresses read big-endian):
    /// IPv4 addresses in the low 32 bits, so that both fold into one flow
    /// hash alike, and compare as their bytes do.
    #[inline]
    pub fn addresses(&self) -> (u128, u128) {
        match self {
            Ip::V4(v4) => (
                u32::from_be_bytes(v4.src()).into(),
                u32::from_be_bytes(v4.dst()).into(),
            ),
            Ip::V6(v6) => (u128::from_be_bytes(v6.src()), u128::from_be_bytes(v6.dst())),
        }
    }

    /// Header length (for IPv6 with the extension headers walked).
    pub fn header_len(&self) -> usize {
        match self {
            Ip::V4(v4) => v4.header_len(),
            Ip::V6(v6) => v6.header_len(),
        }
    }

    /// The captured part of the payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        match self {
            Ip::V4(v4) => v4.payload(),
            Ip::V6(v6) => v6.payload(),
        }
    }

    /// The payload's length on the wire.
    pub fn payload_len(&self) -> usize {
        match self {
            Ip::V4(v4) => v4.payload_len(),
            Ip::V6(v6) => v6.payload_len(),
        }
    }
}

/// A checked IPv4 header and the captured part of what follows it.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4<'a> {
    /// Header and payload, cut at the total length.
    packet: Bounded<'a>,
}

impl<'a> Ipv4<'a> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Checks the version, that the header is captured and that the total
    /// length covers the header and stays within `wire_len`.
    pub fn new_checked(captured: &'a [u8], wire_len: usize) -> Result<Self, Malformed> {
        if captured.len() < Self::MIN_HEADER_LEN || captured[0] >> 4 != 4 {
            return Err(Malformed::Header);
        }
        let header_len = usize::from(captured[0] & 0x0f) * 4;
        if header_len < Self::MIN_HEADER_LEN || header_len > captured.len() {
            return Err(Malformed::Header);
        }
        let len = usize::from(be16(captured, 2));
        let packet = Bounded::new(captured, wire_len, len, header_len)?;
        Ok(Ipv4 { packet })
    }

    /// Header length, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.packet.bytes[0] & 0x0f) * 4
    }

    /// Header and payload on the wire: the total length, or where it is 0,
    /// the wire length given.
    pub fn total_len(&self) -> usize {
        self.packet.len
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.packet.bytes[9]
    }

    /// Fragment offset, in 8-byte units.
    pub fn fragment_offset(&self) -> u16 {
        be16(self.packet.bytes, 6) & 0x1fff
    }

    /// A fragment: more fragments follow, or this one does not start the packet.
    pub fn is_fragment(&self) -> bool {
        be16(self.packet.bytes, 6) & 0x3fff != 0
    }

    /// Source address.
    pub fn src(&self) -> [u8; 4] {
        self.address(12)
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 4] {
        self.address(16)
    }

    fn address(&self, at: usize) -> [u8; 4] {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.packet.bytes[at..at + 4]);
        a
    }

    /// The captured part of the payload, without any padding after it.
    pub fn payload(&self) -> &'a [u8] {
        self.packet.payload(self.header_len())
    }

    /// The payload's length on the wire.
    pub fn payload_len(&self) -> usize {
        self.packet.payload_len(self.header_len())
    }
}

/// A checked IPv6 header, its extension headers (walked once, at most
/// [`MAX_EXT_HEADERS`]) and the captured part of what follows them.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6<'a> {
    /// Headers and payload, cut at the payload length.
    packet: Bounded<'a>,
    /// Where the walk stopped: the upper-layer header, for a first fragment.
    upper: usize,
    /// The protocol there: an upper layer, or an extension header past the bound.
    protocol: u8,
    /// The Fragment header's offset field, if there is one.
    fragment: Option<u16>,
}

impl<'a> Ipv6<'a> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;

    /// Checks the version, that the fixed and extension headers are
    /// captured and lie within the payload length, and that the payload
    /// length stays within `wire_len`.
    pub fn new_checked(captured: &'a [u8], wire_len: usize) -> Result<Self, Malformed> {
        if captured.len() < Self::HEADER_LEN || captured[0] >> 4 != 6 {
            return Err(Malformed::Header);
        }
        let len = match be16(captured, 4) {
            0 => 0,
            payload => Self::HEADER_LEN + usize::from(payload),
        };
        let packet = Bounded::new(captured, wire_len, len, Self::HEADER_LEN)?;
        let mut view = Ipv6 {
            packet,
            upper: Self::HEADER_LEN,
            protocol: captured[6],
            fragment: None,
        };
        view.walk()?;
        Ok(view)
    }

    /// Steps over extension headers to the upper layer. A later fragment
    /// ends the walk: what follows its Fragment header is no header.
    fn walk(&mut self) -> Result<(), Malformed> {
        for _ in 0..MAX_EXT_HEADERS {
            let len = match self.protocol {
                HOP_BY_HOP | ROUTING | DEST_OPTS => {
                    let ext = self.packet.bytes.get(self.upper..self.upper + 2);
                    (usize::from(ext.ok_or(Malformed::Header)?[1]) + 1) * 8
                }
                FRAGMENT => 8,
                _ => return Ok(()),
            };
            let ext = self
                .packet
                .bytes
                .get(self.upper..self.upper + len)
                .ok_or(Malformed::Header)?;
            if self.protocol == FRAGMENT {
                self.fragment = Some(be16(ext, 2) >> 3);
            }
            self.protocol = ext[0];
            self.upper += len;
            if self.fragment_offset() != 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Header length: the fixed header and the extension headers walked.
    pub fn header_len(&self) -> usize {
        self.upper
    }

    /// Fixed header and payload on the wire: from the payload length, or
    /// where it is 0, the wire length given.
    pub fn total_len(&self) -> usize {
        self.packet.len
    }

    /// The protocol after the extension headers walked.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Fragment offset, in 8-byte units (0 without a Fragment header).
    pub fn fragment_offset(&self) -> u16 {
        self.fragment.unwrap_or(0)
    }

    /// A Fragment header was met.
    pub fn is_fragment(&self) -> bool {
        self.fragment.is_some()
    }

    /// Source address.
    pub fn src(&self) -> [u8; 16] {
        self.address(8)
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 16] {
        self.address(24)
    }

    fn address(&self, at: usize) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.packet.bytes[at..at + 16]);
        a
    }

    /// The captured part of what follows the headers walked, without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.packet.payload(self.upper)
    }

    /// The payload's length on the wire.
    pub fn payload_len(&self) -> usize {
        self.packet.payload_len(self.upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header (no options) with this total length and protocol, then
    /// `payload` bytes.
    fn v4(total: u16, proto: u8, payload: usize) -> Vec<u8> {
        let t = total.to_be_bytes();
        let mut p = vec![0x45, 0, t[0], t[1], 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        p.resize(20 + payload, 0xaa);
        p
    }

    /// An IPv6 header with this payload length and next header, then `rest`.
    fn v6(payload_len: u16, next: u8, rest: &[u8]) -> Vec<u8> {
        let l = payload_len.to_be_bytes();
        let mut p = vec![0x60, 0, 0, 0, l[0], l[1], next, 64];
        p.extend([1; 16]);
        p.extend([2; 16]);
        p.extend_from_slice(rest);
        p
    }

    /// An extension header of 8 bytes with this next header.
    fn ext(next: u8) -> [u8; 8] {
        [next, 0, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn ipv4_length_beyond_the_wire_is_refused_and_beyond_the_capture_is_not() {
        let p = v4(100, UDP, 80);
        // Whole: the payload is all 80 bytes.
        let ip = Ipv4::new_checked(&p, p.len()).unwrap();
        assert_eq!((ip.payload().len(), ip.payload_len()), (80, 80));
        // Captured 40 of 100: a truncated capture, still a packet.
        let ip = Ipv4::new_checked(&p[..40], 100).unwrap();
        assert_eq!((ip.payload().len(), ip.payload_len()), (20, 80));
        // 60 bytes on the wire claiming 100: a lie.
        let r = Ipv4::new_checked(&p[..60], 60);
        assert_eq!(r.map(|_| ()), Err(Malformed::Length));
        // A total length inside the header.
        let p = v4(19, UDP, 10);
        let r = Ipv4::new_checked(&p, 30);
        assert_eq!(r.map(|_| ()), Err(Malformed::Length));
    }

    #[test]
    fn ipv4_shorter_length_leaves_padding_out_and_zero_means_the_wire() {
        let p = v4(30, UDP, 40);
        let ip = Ipv4::new_checked(&p, p.len()).unwrap();
        assert_eq!(ip.payload(), &[0xaa; 10]);
        assert_eq!(ip.payload_len(), 10);
        let p = v4(0, UDP, 40);
        let ip = Ipv4::new_checked(&p, 100).unwrap();
        assert_eq!((ip.total_len(), ip.payload().len()), (100, 40));
    }

    #[test]
    fn ipv4_bad_headers() {
        let p = v4(40, UDP, 20);
        for (bytes, what) in [
            (p[..19].to_vec(), "cut"),
            ([&[0x44][..], &p[1..]].concat(), "IHL 4"),
            ([&[0x46][..], &p[1..20]].concat(), "options not captured"),
            ([&[0x55][..], &p[1..]].concat(), "version 5"),
        ] {
            let r = Ip::new_checked(&bytes, 40);
            assert_eq!(r.map(|_| ()), Err(Malformed::Header), "{what}");
        }
    }

    #[test]
    fn ipv4_fragments() {
        let mut p = v4(28, UDP, 8);
        let ip = Ip::new_checked(&p, 28).unwrap();
        assert!(!ip.is_fragment() && ip.has_udp_header());
        p[6] = 0x20; // more fragments: the first fragment
        let ip = Ip::new_checked(&p, 28).unwrap();
        assert!(ip.is_fragment() && ip.has_udp_header());
        p[7] = 1; // offset 8
        let ip = Ip::new_checked(&p, 28).unwrap();
        assert!(ip.is_fragment() && !ip.has_udp_header());
    }

    #[test]
    fn ipv6_walks_extension_headers_to_the_upper_layer() {
        let rest = [&ext(DEST_OPTS)[..], &ext(UDP), &[7; 12]].concat();
        let p = v6(rest.len() as u16, HOP_BY_HOP, &rest);
        let ip = Ip::new_checked(&p, p.len()).unwrap();
        assert_eq!((ip.protocol(), ip.header_len()), (UDP, 56));
        assert_eq!((ip.payload(), ip.payload_len()), (&[7; 12][..], 12));
        assert!(!ip.is_fragment());
        assert_eq!(
            ip.addresses(),
            (u128::from_be_bytes([1; 16]), u128::from_be_bytes([2; 16]))
        );
    }

    #[test]
    fn ipv6_fragments_first_and_later() {
        let first = [UDP, 0, 0, 0, 0, 0, 0, 9];
        let p = v6(16, FRAGMENT, &[&first[..], &[7; 8]].concat());
        let ip = Ip::new_checked(&p, p.len()).unwrap();
        assert!(ip.is_fragment() && ip.has_udp_header());
        assert_eq!(ip.header_len(), 48);
        let later = [UDP, 0, 0, 0x08, 0, 0, 0, 9]; // offset 1
        let p = v6(16, FRAGMENT, &[&later[..], &[7; 8]].concat());
        let ip = Ip::new_checked(&p, p.len()).unwrap();
        assert!(ip.is_fragment() && !ip.has_udp_header());
        assert_eq!((ip.fragment_offset(), ip.protocol()), (1, UDP));
    }

    #[test]
    fn ipv6_walk_is_bounded_and_stays_inside_the_payload() {
        let mut rest = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            rest.extend(ext(DEST_OPTS));
        }
        let p = v6(rest.len() as u16, DEST_OPTS, &rest);
        let ip = Ip::new_checked(&p, p.len()).unwrap();
        assert_eq!(ip.protocol(), DEST_OPTS, "walk stops at the bound");
        assert_eq!(ip.header_len(), 40 + 8 * MAX_EXT_HEADERS);
        // An extension header past the payload length, though captured.
        let p = v6(4, DEST_OPTS, &ext(UDP));
        let r = Ip::new_checked(&p, p.len());
        assert_eq!(r.map(|_| ()), Err(Malformed::Header));
    }

    #[test]
    fn ipv6_payload_length_against_wire_and_capture() {
        let p = v6(100, UDP, &[7; 100]);
        let r = Ip::new_checked(&p[..60], 60);
        assert_eq!(r.map(|_| ()), Err(Malformed::Length));
        let ip = Ip::new_checked(&p[..60], 140).unwrap();
        assert_eq!((ip.payload().len(), ip.payload_len()), (20, 100));
        let p = v6(10, UDP, &[7; 30]);
        let ip = Ip::new_checked(&p, p.len()).unwrap();
        assert_eq!(ip.payload(), &[7; 10]);
        let p = v6(0, UDP, &[7; 30]);
        let ip = Ip::new_checked(&p, 70).unwrap();
        assert_eq!(ip.payload_len(), 30, "0 is no length");
    }
}
