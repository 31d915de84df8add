//! UDP (RFC 768): a checked view that honours the length field, as the IP
//! views do (see [`super::ip`] on captured bytes, wire length and padding).

use super::{Bounded, Malformed, be16};

/// A checked UDP header and the captured part of its payload.
#[derive(Clone, Copy, Debug)]
pub struct Udp<'a> {
    /// Header and payload, cut at the length field.
    datagram: Bounded<'a>,
}

impl<'a> Udp<'a> {
    /// Header length.
    pub const HEADER_LEN: usize = 8;

    /// Checks that the header is captured and that the length covers it and
    /// stays within `wire_len`, the IP payload's length on the wire (a
    /// length of 0 is taken as `wire_len`).
    pub fn new_checked(captured: &'a [u8], wire_len: usize) -> Result<Self, Malformed> {
        if captured.len() < Self::HEADER_LEN {
            return Err(Malformed::Header);
        }
        let len = usize::from(be16(captured, 4));
        let datagram = Bounded::new(captured, wire_len, len, Self::HEADER_LEN)?;
        Ok(Udp { datagram })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.datagram.bytes, 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.datagram.bytes, 2)
    }

    /// Header and payload on the wire: the length field, or where it is 0,
    /// the wire length given.
    pub fn total_len(&self) -> usize {
        self.datagram.len
    }

    /// The captured part of the payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.datagram.payload(Self::HEADER_LEN)
    }

    /// The payload's length on the wire.
    pub fn payload_len(&self) -> usize {
        self.datagram.payload_len(Self::HEADER_LEN)
    }

    /// Writes a header with length field `total_len` (header included) and
    /// checksum 0 (none).
    pub fn emit(src_port: u16, dst_port: u16, total_len: u16, out: &mut Vec<u8>) {
        let (s, d) = (src_port.to_be_bytes(), dst_port.to_be_bytes());
        let len = total_len.to_be_bytes();
        out.extend_from_slice(&[s[0], s[1], d[0], d[1], len[0], len[1], 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(len: u16, payload: usize) -> Vec<u8> {
        let mut d = Vec::new();
        Udp::emit(1234, 4789, len, &mut d);
        d.resize(8 + payload, 0xbb);
        d
    }

    #[test]
    fn length_against_wire_capture_and_header() {
        let d = udp(108, 100);
        let u = Udp::new_checked(&d, d.len()).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (1234, 4789));
        assert_eq!((u.payload().len(), u.payload_len()), (100, 100));
        let u = Udp::new_checked(&d[..50], 108).unwrap();
        assert_eq!((u.payload().len(), u.payload_len()), (42, 100));
        let d = udp(18, 100);
        let u = Udp::new_checked(&d, 108).unwrap();
        assert_eq!(u.payload(), &[0xbb; 10], "the rest is padding");
        let d = udp(0, 20);
        let u = Udp::new_checked(&d, 28).unwrap();
        assert_eq!(u.payload_len(), 20, "0 is no length");
        for (d, wire, want) in [
            (udp(108, 50), 58, Malformed::Length),
            (udp(7, 50), 58, Malformed::Length),
            (udp(8, 0)[..7].to_vec(), 7, Malformed::Header),
        ] {
            let r = Udp::new_checked(&d, wire);
            assert_eq!(r.map(|_| ()), Err(want), "{d:02x?}");
        }
    }
}
