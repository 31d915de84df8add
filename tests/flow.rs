//! The one inner-flow key: symmetric, from the checked IP views, with ports
//! outside fragments only.

mod common;

use zeek_udp_source::LinkType;
use zeek_udp_source::flow::{FlowKey, flow_key};

fn tcp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, vlan: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let eth = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
    if vlan {
        eth.single_vlan(7.try_into().unwrap())
            .ipv4(src, dst, 64)
            .tcp(sp, dp, 1, 100)
            .write(&mut f, &[1, 2, 3])
            .unwrap();
    } else {
        eth.ipv4(src, dst, 64)
            .tcp(sp, dp, 1, 100)
            .write(&mut f, &[1, 2, 3])
            .unwrap();
    }
    f
}

fn udp6(src: [u8; 16], dst: [u8; 16], sp: u16, dp: u16) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ipv6(src, dst, 64)
        .udp(sp, dp)
        .write(&mut f, &[9; 10])
        .unwrap();
    f
}

/// The key of a whole packet (captured = wire).
fn key(link: LinkType, packet: &[u8]) -> Option<FlowKey> {
    flow_key(link, packet, packet.len())
}

#[test]
fn both_directions_hash_alike_and_flows_differ() {
    for vlan in [false, true] {
        let fwd = key(
            LinkType::En10Mb,
            &tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, vlan),
        )
        .unwrap();
        let rev = key(
            LinkType::En10Mb,
            &tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, vlan),
        )
        .unwrap();
        assert_eq!(fwd, rev);
        assert_eq!(fwd.hash(), rev.hash());
        let other = key(
            LinkType::En10Mb,
            &tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1235, 80, vlan),
        )
        .unwrap();
        assert_ne!(fwd.hash(), other.hash());
    }
    let a = key(LinkType::Raw, &udp6([1; 16], [2; 16], 5000, 53)).unwrap();
    let b = key(LinkType::Raw, &udp6([2; 16], [1; 16], 53, 5000)).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(
        key(LinkType::En10Mb, &[0u8; 10]),
        None,
        "too short: no flow"
    );
}

#[test]
fn every_fragment_has_the_flow_of_the_others() {
    let whole = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, false);
    let mut first = whole.clone();
    first[14 + 6] = 0x20; // more fragments follow
    let mut later = whole.clone();
    later[14 + 6..14 + 8].copy_from_slice(&[0, 3]); // offset 24, the last
    later[14 + 20..].fill(0x5a); // data, not a TCP header
    let (first, later) = (
        key(LinkType::En10Mb, &first).unwrap(),
        key(LinkType::En10Mb, &later).unwrap(),
    );
    assert_eq!(first, later);
    assert_eq!((first.a.1, first.b.1), (0, 0), "no ports in fragments");
    let whole = key(LinkType::En10Mb, &whole).unwrap();
    assert_eq!((whole.a.1, whole.b.1), (1234, 80));
}

#[test]
fn ipv6_ports_are_found_after_extension_headers() {
    let plain = udp6([1; 16], [2; 16], 5000, 53);
    // A Destination Options header between the fixed header and UDP.
    let mut ext = plain.clone();
    ext[6] = 60;
    ext.splice(40..40, [17, 0, 1, 4, 0, 0, 0, 0]);
    let len = u16::from_be_bytes([ext[4], ext[5]]) + 8;
    ext[4..6].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        key(LinkType::Raw, &ext),
        key(LinkType::Raw, &plain),
        "the same UDP flow"
    );
}

#[test]
fn length_fields_are_checked_against_the_wire_not_the_capture() {
    let whole = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, false);
    let want = key(LinkType::En10Mb, &whole);
    // A capture cut after the ports is the same flow.
    assert_eq!(flow_key(LinkType::En10Mb, &whole[..38], whole.len()), want);
    // Told those 38 bytes are all there was, the IP length lies.
    assert_eq!(flow_key(LinkType::En10Mb, &whole[..38], 38), None);
    // Ethernet padding after the IP packet is no part of it.
    let mut padded = whole.clone();
    padded.extend([0; 20]);
    assert_eq!(key(LinkType::En10Mb, &padded), want);
}
