//! Every reject reason, first on the decapsulator alone, then over a real
//! socket with both receivers, where each must be counted.

mod common;

use std::time::Duration;

use common::*;
use zeek_udp_source::decap::Decapsulator;
use zeek_udp_source::{Encap, LinkType, Reject};

/// A minimal IPv4/UDP header (20 + 8 bytes) with the given protocol and
/// fragment offset, as sits between GENEVE and VXLAN.
fn ipv4_udp(proto: u8, frag_offset: u16) -> Vec<u8> {
    let f = frag_offset.to_be_bytes();
    let mut h = vec![
        0x45, 0, 0, 0, 0, 0, f[0], f[1], 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    h.extend_from_slice(&[0xc0, 0, 0x12, 0xb5, 0, 0, 0, 0]);
    h
}

const GENEVE_IP: [u8; 8] = [0, 0, 0x08, 0x00, 0, 0, 7, 0];
const VXLAN_OK: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 9, 0];

/// (encapsulation, datagram, expected reason)
fn cases() -> Vec<(Encap, Vec<u8>, Reject)> {
    let frame = eth_frame(1, 20);
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        (Encap::Vxlan, vec![], Reject::EmptyDatagram),
        (Encap::Raw, vec![], Reject::EmptyDatagram),
        (Encap::Vxlan, vec![0x08, 0, 0], Reject::VxlanTooShort),
        (
            Encap::Vxlan,
            cat(&[&[0, 0, 0, 0, 0, 0, 1, 0], &frame]),
            Reject::VxlanNoIFlag,
        ),
        (Encap::Vxlan, VXLAN_OK.to_vec(), Reject::EmptyInner),
        (Encap::Geneve, vec![0, 0, 0x65], Reject::GeneveTooShort),
        (
            Encap::Geneve,
            cat(&[&[0x40, 0, 0x65, 0x58, 0, 0, 1, 0], &frame]),
            Reject::GeneveVersion,
        ),
        (
            Encap::Geneve,
            cat(&[&[0x80, 0, 0x65, 0x58, 0, 0, 1, 0], &frame]),
            Reject::GeneveVersion,
        ),
        // 63 words of options announced, 20 bytes present.
        (
            Encap::Geneve,
            cat(&[&[0x3f, 0, 0x65, 0x58, 0, 0, 1, 0], &[0; 20]]),
            Reject::GeneveOptionsTooLong,
        ),
        (
            Encap::Geneve,
            vec![0, 0, 0x65, 0x58, 0, 0, 1, 0],
            Reject::EmptyInner,
        ),
        (Encap::GeneveVxlan, GENEVE_IP.to_vec(), Reject::InnerIpBad),
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &[0x45, 0, 0, 0]]),
            Reject::InnerIpBad,
        ),
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &[0x55; 40]]),
            Reject::InnerIpBad,
        ),
        // IHL of 15 words (60 bytes) in a 28-byte packet.
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &[&[0x4f][..], &ipv4_udp(17, 0)[1..]].concat()]),
            Reject::InnerIpBad,
        ),
        // IPv4 header without room for the UDP header.
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &ipv4_udp(17, 0)[..24]]),
            Reject::InnerIpBad,
        ),
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &ipv4_udp(6, 0), &VXLAN_OK, &frame]),
            Reject::InnerNotUdp,
        ),
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &ipv4_udp(17, 100), &VXLAN_OK, &frame]),
            Reject::InnerNotUdp,
        ),
        (
            Encap::GeneveVxlan,
            cat(&[
                &GENEVE_IP,
                &ipv4_udp(17, 0),
                &[0, 0, 0, 0, 0, 0, 9, 0],
                &frame,
            ]),
            Reject::VxlanNoIFlag,
        ),
        (
            Encap::GeneveVxlan,
            cat(&[&GENEVE_IP, &ipv4_udp(17, 0), &VXLAN_OK[..4]]),
            Reject::VxlanTooShort,
        ),
        (Encap::Skip(10), vec![1; 10], Reject::SkipBeyondDatagram),
        (Encap::Skip(10), vec![1; 9], Reject::SkipBeyondDatagram),
    ]
}

#[test]
fn every_reason_is_named_and_covered() {
    let covered: Vec<Reject> = cases().iter().map(|c| c.2).collect();
    // The allowlist is about the sender, not the datagram: tests/allow.rs;
    // unread_at_shutdown is about the moment: tests/roundtrip.rs.
    for reason in Reject::ALL
        .into_iter()
        .filter(|r| ![Reject::SourceNotAllowed, Reject::UnreadAtShutdown].contains(r))
    {
        assert!(covered.contains(&reason), "no case for {reason:?}");
        assert!(!reason.name().is_empty() && !reason.describe().is_empty());
    }
    let mut names: Vec<&str> = Reject::ALL.iter().map(|r| r.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Reject::COUNT, "names are unique");
}

#[test]
fn decapsulator_rejects_each_case() {
    for (encap, datagram, reason) in cases() {
        let got = Decapsulator::new(encap, LinkType::En10Mb).decap(&datagram);
        assert_eq!(got, Err(reason), "{encap} {datagram:02x?}");
    }
}

#[test]
fn garbage_never_panics() {
    // A deterministic xorshift stream of lengths and bytes; structured
    // prefixes make the generator reach deeper than pure noise would.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let prefixes: [&[u8]; 4] = [
        &[],
        &VXLAN_OK,
        &GENEVE_IP,
        &[0x01, 0, 0x65, 0x58, 0, 0, 0, 0],
    ];
    let encaps = [
        Encap::Vxlan,
        Encap::Geneve,
        Encap::GeneveVxlan,
        Encap::Raw,
        Encap::Skip(3),
    ];
    for i in 0..200_000 {
        let len = (rnd() % 96) as usize;
        let mut d: Vec<u8> = prefixes[i % 4].to_vec();
        d.extend((0..len).map(|_| rnd() as u8));
        for encap in encaps {
            if let Ok(inner) = Decapsulator::new(encap, LinkType::En10Mb).decap(&d) {
                assert!(inner.offset < d.len());
                assert!(inner.geneve_options.end <= d.len());
            }
        }
    }
}

#[test]
fn rejects_are_counted_over_sockets() {
    for kind in receivers() {
        let all = cases();
        for encap in [
            Encap::Vxlan,
            Encap::Geneve,
            Encap::GeneveVxlan,
            Encap::Skip(10),
            Encap::Raw,
        ] {
            let bad: Vec<_> = all.iter().filter(|c| c.0 == encap).collect();
            let mut src = open(kind, "127.0.0.1", &encap.token());
            let to = src.local_addr().unwrap();
            // One good packet after the bad ones proves the source carried on.
            let good = match encap {
                Encap::Raw | Encap::Skip(_) => {
                    let mut d = vec![0; if encap == Encap::Raw { 0 } else { 10 }];
                    d.extend(eth_frame(7, 30));
                    d
                }
                _ => {
                    let mut d = Vec::new();
                    let enc = zeek_udp_source::encap::Encoder::new(encap);
                    enc.encode(&eth_frame(7, 30), LinkType::En10Mb, &mut d);
                    d
                }
            };
            let mut datagrams: Vec<Vec<u8>> = bad.iter().map(|c| c.1.clone()).collect();
            datagrams.push(good);
            let sent = datagrams.len() as u64;
            let _tx = send_all(to, &datagrams);
            let got = collect(&mut src, sent, Duration::from_secs(5));
            assert_eq!(
                got.len(),
                1,
                "{kind:?} {encap}: only the good packet is delivered"
            );
            assert_eq!(got[0].data, eth_frame(7, 30));
            let s = src.stats();
            assert_eq!(s.received, sent, "{kind:?} {encap}");
            assert_eq!(s.delivered, 1);
            for c in &bad {
                let expected = bad.iter().filter(|o| o.2 == c.2).count() as u64;
                assert_eq!(s.rejected_for(c.2), expected, "{kind:?} {encap} {:?}", c.2);
            }
            assert_accounted(&mut src);
        }
    }
}

#[test]
fn control_data_with_hostile_lengths_is_ignored() {
    // Found by the `ancillary` fuzz target: a cmsg_len near usize::MAX
    // overflowed the bounds check.
    let mut control = vec![0u8; 32];
    control[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
    assert_eq!(zeek_udp_source::cmsg::parse(&control), Default::default());
    control[..8].copy_from_slice(&(u64::MAX - 7).to_ne_bytes());
    assert_eq!(zeek_udp_source::cmsg::parse(&control), Default::default());
    // A well-formed SCM_TIMESTAMPNS message still parses.
    let mut ok = vec![0u8; 32];
    ok[..8].copy_from_slice(&32u64.to_ne_bytes());
    ok[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
    ok[12..16].copy_from_slice(&libc::SCM_TIMESTAMPNS.to_ne_bytes());
    ok[16..24].copy_from_slice(&7i64.to_ne_bytes());
    ok[24..32].copy_from_slice(&9i64.to_ne_bytes());
    let ts = zeek_udp_source::cmsg::parse(&ok).timestamp.expect("parsed");
    assert_eq!((ts.sec, ts.nsec), (7, 9));
}
