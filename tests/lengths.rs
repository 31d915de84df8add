//! geneve+vxlan over real sockets: the IP and UDP length fields between
//! GENEVE and VXLAN are checked against the datagram's wire length, and a
//! datagram whose lengths lie is counted under a reason of its own.

mod common;

use std::time::Duration;

use common::*;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Encap, LinkType, Reject};

/// A geneve+vxlan datagram around `frame`, with an IPv4 tunnel header.
fn datagram(frame: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    Encoder::new(Encap::GeneveVxlan).encode(frame, LinkType::En10Mb, &mut d);
    d
}

/// Offsets in that datagram: GENEVE (8 bytes), IPv4 (20), then UDP.
const IP_TOTAL_LEN: usize = 8 + 2;
const UDP_LEN: usize = 8 + 20 + 4;

#[test]
fn length_fields_beyond_the_datagram_are_rejected_and_counted() {
    // 100 bytes that claim 1400.
    let mut ip_lie = datagram(&eth_frame(1, 100));
    ip_lie.truncate(100);
    ip_lie[IP_TOTAL_LEN..IP_TOTAL_LEN + 2].copy_from_slice(&1400u16.to_be_bytes());
    // The IP length is true, the UDP length is 1 byte more than it leaves.
    let mut udp_lie = datagram(&eth_frame(2, 40));
    let claim = (udp_lie.len() - UDP_LEN + 4 + 1) as u16;
    udp_lie[UDP_LEN..UDP_LEN + 2].copy_from_slice(&claim.to_be_bytes());
    let good = eth_frame(3, 40);
    for kind in receivers() {
        let mut src = open(kind, "127.0.0.1", "geneve+vxlan");
        let sent = [ip_lie.clone(), udp_lie.clone(), datagram(&good)];
        let _tx = send_all(src.local_addr().unwrap(), &sent);
        let got = collect(&mut src, sent.len() as u64, Duration::from_secs(5));
        let data: Vec<&[u8]> = got.iter().map(|g| &g.data[..]).collect();
        assert_eq!(data, [&good[..]], "{kind:?}: only the true one delivered");
        let s = src.stats();
        assert_eq!(s.rejected_for(Reject::InnerIpLength), 1, "{kind:?}: {s:?}");
        assert_eq!(s.rejected_for(Reject::InnerUdpLength), 1, "{kind:?}: {s:?}");
        assert_accounted(&mut src);
    }
}

#[test]
fn padding_after_the_length_fields_is_not_part_of_the_frame() {
    let frame = eth_frame(4, 60);
    let mut padded = datagram(&frame);
    padded.extend_from_slice(&[0xee; 16]);
    for kind in receivers() {
        let mut src = open(kind, "127.0.0.1", "geneve+vxlan");
        let _tx = send_all(src.local_addr().unwrap(), std::slice::from_ref(&padded));
        let got = collect(&mut src, 1, Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{kind:?}: delivered");
        assert_eq!(got[0].data, frame, "{kind:?}: without the padding");
        assert_eq!(got[0].wire_len, frame.len(), "{kind:?}");
        assert_accounted(&mut src);
    }
}

#[test]
fn a_datagram_longer_than_its_buffer_is_delivered_truncated() {
    let frame = eth_frame(5, 3000);
    for kind in receivers() {
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1:geneve+vxlan").unwrap();
        path.addr.set_port(0);
        let mut config = config(kind);
        config.recvmmsg_buffer_size = 1024;
        config.uring.buffer_shift = 10;
        let mut src = zeek_udp_source::Source::open_path(path, &config).unwrap();
        let _tx = send_all(src.local_addr().unwrap(), &[datagram(&frame)]);
        let got = collect(&mut src, 1, Duration::from_secs(5));
        assert_eq!(
            got.len(),
            1,
            "{kind:?}: delivered, not rejected: {:?}",
            src.stats()
        );
        let data = &got[0].data;
        assert!(data.len() < frame.len(), "{kind:?}: truncated");
        assert_eq!(data[..], frame[..data.len()], "{kind:?}");
        assert_eq!(got[0].wire_len, frame.len(), "{kind:?}");
        assert_eq!(src.stats().truncated, 1, "{kind:?}");
        assert_accounted(&mut src);
    }
}
