//! Ethernet II, with up to [`MAX_TAGS`] 802.1Q/802.1ad tags, down to IP.

use super::be16;

/// EtherType of IPv4.
pub const IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const IPV6: u16 = 0x86dd;
/// EtherTypes of a VLAN tag: 802.1Q, 802.1ad (the outer tag of QinQ).
pub const TAGS: [u16; 2] = [0x8100, 0x88a8];
/// A bound on VLAN tags: QinQ's two. The balancing program unrolls as many.
pub const MAX_TAGS: usize = 2;
/// Length of the header without tags.
pub const HEADER_LEN: usize = 14;

/// The IPv4 or IPv6 packet in an Ethernet frame, or `None` when the frame
/// carries something else or is cut short.
pub fn ip_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    for _ in 0..=MAX_TAGS {
        let ethertype = be16(frame.get(at..at + 2)?, 0);
        match ethertype {
            IPV4 | IPV6 => return frame.get(at + 2..),
            t if TAGS.contains(&t) => at += 4,
            _ => return None,
        }
    }
    None
}
