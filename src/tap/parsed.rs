//! An inner packet's IP layer, found once for everything the tap asks of
//! it: the dedup hash, the TCP segment, the feed check.

use crate::link::LinkType;
use crate::wire::ip::TCP;
use crate::wire::{Ip, ethernet};

/// A packet's bytes, its length on the wire, and its IP layer.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// The captured bytes.
    pub data: &'a [u8],
    /// The length on the wire, never less than the captured length.
    pub wire_len: usize,
    /// The IP layer; `None` when the packet is not IP or its IP headers
    /// are malformed.
    pub ip: Option<Inner<'a>>,
}

/// An inner IP packet and what the tap asks of it, each read once.
#[derive(Clone, Copy, Debug)]
pub struct Inner<'a> {
    /// The checked view.
    pub view: Ip<'a>,
    /// The captured bytes from the IP header on, without what follows the
    /// packet's length (padding).
    pub bytes: &'a [u8],
    /// Header length (for IPv6 with the extension headers walked).
    pub header_len: usize,
    /// Header and payload on the wire.
    pub on_wire: usize,
    /// The TCP header, options included as far as captured, when this is
    /// TCP, not a fragment, its fixed 20 bytes were captured and its data
    /// offset is valid.
    pub tcp: Option<&'a [u8]>,
}

impl<'a> Parsed<'a> {
    /// Finds the IP layer of a packet of `link`.
    #[inline]
    pub fn new(link: LinkType, data: &'a [u8], wire_len: usize) -> Self {
        let wire_len = wire_len.max(data.len());
        let ip = ip_start(link, data).and_then(|at| Inner::new(&data[at..], wire_len - at));
        Parsed { data, wire_len, ip }
    }
}

impl<'a> Inner<'a> {
    #[inline]
    fn new(bytes: &'a [u8], wire_len: usize) -> Option<Self> {
        let view = Ip::new_checked(bytes, wire_len).ok()?;
        // One match on the version for all four (each accessor of the view
        // would match again).
        let (header_len, payload, payload_len, tcp) = match &view {
            Ip::V4(v) => (
                v.header_len(),
                v.payload(),
                v.payload_len(),
                v.protocol() == TCP && !v.is_fragment(),
            ),
            Ip::V6(v) => (
                v.header_len(),
                v.payload(),
                v.payload_len(),
                v.protocol() == TCP && !v.is_fragment(),
            ),
        };
        let tcp = match tcp {
            true => payload.get(..20).and_then(|fixed| {
                let len = usize::from(fixed[12] >> 4) * 4;
                (len >= 20).then(|| &payload[..len.min(payload.len())])
            }),
            false => None,
        };
        Some(Inner {
            view,
            bytes: &bytes[..header_len + payload.len()],
            header_len,
            on_wire: header_len + payload_len,
            tcp,
        })
    }

    /// The payload's length on the wire.
    pub fn payload_len(&self) -> usize {
        self.on_wire - self.header_len
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
pub(crate) mod tests {
    use super::*;
    use crate::tap::hash::tests::tcp4;

    #[test]
    fn the_ip_layer_is_found_behind_ethernet_or_at_once_and_never_in_ppp() {
        let p = tcp4(64, 1, 2, b"x");
        let eth = Parsed::new(LinkType::En10Mb, &p, 0);
        let ip = eth.ip.unwrap();
        assert_eq!((ip.bytes, eth.wire_len), (&p[14..], p.len()));
        assert_eq!((ip.header_len, ip.on_wire, ip.payload_len()), (20, 41, 21));
        assert_eq!(ip.tcp, Some(&p[34..54]));
        let raw = Parsed::new(LinkType::Raw, &p[14..], 0).ip.unwrap();
        assert_eq!(raw.bytes, ip.bytes);
        assert!(Parsed::new(LinkType::Ppp, &p, p.len()).ip.is_none());
        assert!(
            Parsed::new(LinkType::En10Mb, &p[..20], p.len())
                .ip
                .is_none()
        );
    }

    /// IPv6 with a Destination Options header, then TCP with a 12-byte
    /// timestamp option, then `payload`.
    pub(crate) fn tcp6(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        let len = (8 + 32 + payload.len()) as u16;
        p.extend(len.to_be_bytes());
        p.extend([60, 64]); // next: Destination Options; hop limit
        p.extend([1; 16]);
        p.extend([2; 16]);
        p.extend([6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP; PadN
        p.extend([0x9c, 0x40, 0, 80, 0, 0, 0, 7, 0, 0, 0, 9, 0x80, 0x10, 4, 0]);
        p.extend([0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6]);
        p.extend(payload);
        p
    }

    #[test]
    fn the_tcp_header_is_found_after_ipv6_extension_headers() {
        let p = tcp6(b"hello");
        let ip = Parsed::new(LinkType::Raw, &p, p.len()).ip.unwrap();
        assert_eq!((ip.header_len, ip.payload_len()), (48, 37));
        assert_eq!(ip.tcp, Some(&p[48..80]), "options included");
    }

    #[test]
    fn a_tcp_header_cut_short_keeps_what_was_captured() {
        let p = tcp6(b"hello");
        // The fixed 20 bytes and a part of the options captured: the header
        // is what there is; less than 20 bytes: no TCP header.
        let cut = Parsed::new(LinkType::Raw, &p[..72], p.len()).ip.unwrap();
        assert_eq!(cut.tcp, Some(&p[48..72]));
        assert_eq!(cut.payload_len(), 37, "lengths stay those on the wire");
        let short = Parsed::new(LinkType::Raw, &p[..60], p.len()).ip.unwrap();
        assert_eq!(short.tcp, None);
        // A data offset below 5 words is no TCP header.
        let mut bad = p.clone();
        bad[48 + 12] = 0x40;
        assert_eq!(
            Parsed::new(LinkType::Raw, &bad, bad.len()).ip.unwrap().tcp,
            None
        );
        // A fragment carries no header to read.
        let mut frag = p.clone();
        frag[6] = 44;
        frag[40] = 6;
        frag[42] = 0; // offset 0, more fragments
        frag[43] = 1;
        let f = Parsed::new(LinkType::Raw, &frag, frag.len()).ip.unwrap();
        assert_eq!(f.tcp, None);
    }
}
