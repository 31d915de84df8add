//! Every decapsulator on hostile datagrams: the first byte picks the
//! encapsulation, the second how much longer than the bytes the datagram
//! was on the wire (a capture cut short), the rest is the datagram. No
//! panic; what is delivered lies inside the datagram and its wire length,
//! and its GENEVE options iterate without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zeek_udp_source::decap::Decapsulator;
use zeek_udp_source::wire::GeneveOptions;
use zeek_udp_source::{Encap, LinkType};

fuzz_target!(|data: &[u8]| {
    let [pick, lost, datagram @ ..] = data else { return };
    let encap = match pick % 5 {
        0 => Encap::Vxlan,
        1 => Encap::Geneve,
        2 => Encap::GeneveVxlan,
        3 => Encap::Raw,
        _ => Encap::Skip(u16::from(*pick)),
    };
    let wire_len = datagram.len() + usize::from(*lost) * 64;
    let decap = Decapsulator::new(encap, LinkType::En10Mb);
    if let Ok(inner) = decap.decap_captured(datagram, wire_len) {
        let bytes = inner.captured(datagram.len());
        assert!(!bytes.is_empty() && bytes.end <= datagram.len());
        assert!(bytes.len() <= inner.wire_len && inner.offset + inner.wire_len <= wire_len);
        let opts = &datagram[inner.geneve_options.clone()];
        for o in GeneveOptions::new(opts) {
            assert!(o.data.len() % 4 == 0);
        }
    }
});
