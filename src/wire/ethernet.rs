//! Ethernet II, with any number of 802.1Q/802.1ad tags, down to IP.

/// The IPv4 or IPv6 packet in an Ethernet frame, or `None` when the frame
/// carries something else or is cut short.
pub fn ip_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return frame.get(at + 2..),
            _ => return None,
        }
    }
}
