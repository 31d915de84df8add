//! Every decapsulator on hostile datagrams: the first byte picks the
//! encapsulation, the rest is the datagram. No panic; what is delivered lies
//! inside the datagram, and its GENEVE options iterate without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zeek_udp_source::decap::Decapsulator;
use zeek_udp_source::wire::GeneveOptions;
use zeek_udp_source::{Encap, LinkType};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else { return };
    let encap = match pick % 5 {
        0 => Encap::Vxlan,
        1 => Encap::Geneve,
        2 => Encap::GeneveVxlan,
        3 => Encap::Raw,
        _ => Encap::Skip(u16::from(pick)),
    };
    if let Ok(inner) = Decapsulator::new(encap, LinkType::En10Mb).decap(datagram) {
        assert!(inner.offset < datagram.len());
        let opts = &datagram[inner.geneve_options.clone()];
        for o in GeneveOptions::new(opts) {
            assert!(o.data.len() % 4 == 0);
        }
    }
});
