//! Zero-copy views over tunnel headers, in the style of smoltcp's `wire`:
//! each view is checked once when made, then its accessors cannot fail.

pub mod ethernet;
pub mod geneve;
pub mod ip;
pub mod udp;
pub mod vxlan;

pub use geneve::{Geneve, GeneveOption, GeneveOptions};
pub use ip::{Ip, Ipv4, Ipv6};
pub use udp::Udp;
pub use vxlan::Vxlan;

/// Why bytes are not a usable IP packet or UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The header is not all captured, or holds an impossible value (a
    /// version, a header length, an extension header past the payload).
    Header,
    /// A length field claims more than the packet's length on the wire, or
    /// less than its own header.
    Length,
}

/// Reads a big-endian 24-bit value (a VNI) at `at`; the caller has checked the length.
fn be24(b: &[u8], at: usize) -> u32 {
    u32::from(b[at]) << 16 | u32::from(b[at + 1]) << 8 | u32::from(b[at + 2])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A packet's captured bytes, cut at its length (what follows is padding),
/// and that length on the wire: what the IP and UDP views stand on.
#[derive(Clone, Copy, Debug)]
struct Bounded<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> Bounded<'a> {
    /// Checks a length field `len` that must hold the `header_len` bytes of
    /// its header (which must be captured) and stay within `wire_len`; a
    /// `len` beyond the captured bytes is a truncated capture, and fine.
    ///
    /// A `len` of 0 is no length: the packet runs to the end of the wire,
    /// as Wireshark reads an IPv4 total length of 0 (a capture of TSO
    /// traffic, on the sending host) and RFC 2675 a UDP or IPv6 length of 0
    /// (a jumbogram).
    fn new(
        captured: &'a [u8],
        wire_len: usize,
        len: usize,
        header_len: usize,
    ) -> Result<Self, Malformed> {
        if header_len > captured.len() {
            return Err(Malformed::Header);
        }
        let wire_len = wire_len.max(captured.len());
        let len = if len == 0 { wire_len } else { len };
        if len > wire_len || len < header_len {
            return Err(Malformed::Length);
        }
        Ok(Bounded {
            bytes: &captured[..len.min(captured.len())],
            len,
        })
    }

    /// The captured part of what follows a header of `header_len` bytes.
    fn payload(&self, header_len: usize) -> &'a [u8] {
        &self.bytes[header_len..]
    }

    /// Its length on the wire.
    fn payload_len(&self, header_len: usize) -> usize {
        self.len - header_len
    }
}
