//! A symmetric hash of an inner packet's flow: both directions of a
//! connection hash alike, so a replayed trace can give each flow one outer
//! UDP source port (RFC 7348 section 5, RFC 8926 section 3.3) and
//! SO_REUSEPORT balancing stays flow-consistent.

use crate::link::LinkType;
use crate::wire::ethernet;

/// The endpoints of a packet's flow, as far as they could be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    /// Lower endpoint (address bytes, port), so both directions agree.
    pub a: ([u8; 16], u16),
    /// Higher endpoint.
    pub b: ([u8; 16], u16),
    /// IP protocol number.
    pub proto: u8,
}

/// The flow of a packet of this link type, or `None` when it is not IP.
pub fn flow_key(link: LinkType, packet: &[u8]) -> Option<FlowKey> {
    let ip = match link {
        LinkType::Raw => packet,
        LinkType::En10Mb => ethernet::ip_payload(packet)?,
        LinkType::Ppp => return None,
    };
    let (src, dst, proto, l4) = match ip.first()? >> 4 {
        4 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s[12..].copy_from_slice(&ip[12..16]);
            d[12..].copy_from_slice(&ip[16..20]);
            let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
            let l4 = if first_fragment { ip.get(ihl..) } else { None };
            (s, d, ip[9], l4)
        }
        6 if ip.len() >= 40 => {
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (s, d, ip[6], ip.get(40..))
        }
        _ => return None,
    };
    let (sport, dport) = match (proto, l4) {
        (6 | 17 | 132, Some(l4)) if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        _ => (0, 0),
    };
    let (a, b) = if (src, sport) <= (dst, dport) {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    Some(FlowKey { a, b, proto })
}

impl FlowKey {
    /// A 32-bit FNV-1a hash of the key; equal for both directions.
    pub fn hash(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u32::from(*b);
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        eat(&self.a.0);
        eat(&self.a.1.to_be_bytes());
        eat(&self.b.0);
        eat(&self.b.1.to_be_bytes());
        eat(&[self.proto]);
        h
    }
}
