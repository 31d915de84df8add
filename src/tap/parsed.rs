//! An inner packet's IP layer, found once for everything the tap asks of
//! it: the dedup hash, the TCP segment, the feed check.

use crate::link::LinkType;
use crate::wire::{Ip, ethernet};

/// A packet's bytes, its length on the wire, and its checked IP view.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// The captured bytes.
    pub data: &'a [u8],
    /// The length on the wire, never less than the captured length.
    pub wire_len: usize,
    /// Where the IP header starts in `data`, and its checked view; `None`
    /// when the packet is not IP or its IP headers are malformed.
    pub ip: Option<(usize, Ip<'a>)>,
}

impl<'a> Parsed<'a> {
    /// Finds the IP layer of a packet of `link`.
    pub fn new(link: LinkType, data: &'a [u8], wire_len: usize) -> Self {
        let wire_len = wire_len.max(data.len());
        let ip = ip_start(link, data).and_then(|at| {
            let ip = Ip::new_checked(&data[at..], wire_len - at).ok()?;
            Some((at, ip))
        });
        Parsed { data, wire_len, ip }
    }
}

/// Where the IP header starts in a packet of `link`, if it is IP.
fn ip_start(link: LinkType, data: &[u8]) -> Option<usize> {
    match link {
        LinkType::Raw => Some(0),
        LinkType::En10Mb => ethernet::ip_payload(data).map(|ip| data.len() - ip.len()),
        LinkType::Ppp => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::hash::tests::tcp4;

    #[test]
    fn the_ip_layer_is_found_behind_ethernet_or_at_once_and_never_in_ppp() {
        let p = tcp4(64, 1, 2, b"x");
        let eth = Parsed::new(LinkType::En10Mb, &p, 0);
        assert_eq!(
            (eth.ip.map(|(at, _)| at), eth.wire_len),
            (Some(14), p.len())
        );
        assert_eq!(
            Parsed::new(LinkType::Raw, &p[14..], 0).ip.map(|i| i.0),
            Some(0)
        );
        assert!(Parsed::new(LinkType::Ppp, &p, p.len()).ip.is_none());
        assert!(
            Parsed::new(LinkType::En10Mb, &p[..20], p.len())
                .ip
                .is_none()
        );
    }
}
