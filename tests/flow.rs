//! The symmetric flow hash behind per-flow outer source ports.

mod common;

use zeek_udp_source::LinkType;
use zeek_udp_source::flow::flow_key;

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

#[test]
fn both_directions_hash_alike_and_flows_differ() {
    for vlan in [false, true] {
        let fwd = flow_key(
            LinkType::En10Mb,
            &tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, vlan),
        )
        .unwrap();
        let rev = flow_key(
            LinkType::En10Mb,
            &tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, vlan),
        )
        .unwrap();
        assert_eq!(fwd, rev);
        assert_eq!(fwd.hash(), rev.hash());
        let other = flow_key(
            LinkType::En10Mb,
            &tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1235, 80, vlan),
        )
        .unwrap();
        assert_ne!(fwd.hash(), other.hash());
    }
    let a = flow_key(LinkType::Raw, &udp6([1; 16], [2; 16], 5000, 53)).unwrap();
    let b = flow_key(LinkType::Raw, &udp6([2; 16], [1; 16], 53, 5000)).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(
        flow_key(LinkType::En10Mb, &[0u8; 10]),
        None,
        "too short: no flow"
    );
}
