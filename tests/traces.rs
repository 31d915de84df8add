//! Replays the UDP payloads of the real tunnel captures in ../shared/traces
//! at a listener and checks the inner packets against an independent
//! reference and against what tcpdump shows inside each file.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use zeek_udp_source::trace;
use zeek_udp_source::{LinkType, Reject};

fn traces_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces");
    dir.is_dir().then_some(dir)
}

/// Largest payload each receiver takes whole by default (recvmmsg buffer;
/// io_uring's 16 KiB buffer less its header, address and control data).
const RECV_BUFFER: [usize; 2] = [9216 + 32, 16384 - 16 - 128 - 64];

/// What a file holds, as `tcpdump -nn -v` shows it.
struct Facts {
    file: &'static str,
    encap: &'static str,
    vxlan_vni: Option<u32>,
    geneve_vni: Option<u32>,
    /// (class, type, data length) of the options of the first packet.
    first_options: &'static [(u16, u8, usize)],
    /// What follows the tunnel header.
    inner: Inner,
}

#[derive(Clone, Copy, PartialEq)]
enum Inner {
    /// An Ethernet frame with this EtherType.
    Ethernet(u16),
    /// A bare IP packet (GENEVE protocol type 0x0800/0x86dd).
    Ip,
    /// A bare payload of this EtherType: the source adds an Ethernet header.
    Bare(u16),
}

const FILES: &[Facts] = &[
    Facts {
        file: "vxlan.pcap",
        encap: "vxlan",
        vxlan_vni: Some(123),
        geneve_vni: None,
        first_options: &[],
        inner: Inner::Ethernet(0x0806),
    },
    Facts {
        file: "vxlan-encapsulated-http.pcap",
        encap: "vxlan",
        vxlan_vni: Some(1),
        geneve_vni: None,
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "vxlan-encapsulated-igmp-v2.pcap",
        encap: "vxlan",
        vxlan_vni: Some(4242),
        geneve_vni: None,
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "vxlan-inner-tcp-bad-checksum.pcap",
        encap: "vxlan",
        vxlan_vni: Some(42),
        geneve_vni: None,
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "vxlan-triple-v2.pcap",
        encap: "vxlan",
        vxlan_vni: Some(1),
        geneve_vni: None,
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "geneve.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(0),
        first_options: &[(0x0000, 0x00, 4)],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "geneve-47101.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(0x1092),
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "geneve-arp.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(1),
        first_options: &[],
        inner: Inner::Bare(0x0806),
    },
    Facts {
        file: "geneve-ipv6.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(0x123456),
        first_options: &[],
        inner: Inner::Ip,
    },
    Facts {
        file: "geneve-many-options.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(0xc012e),
        first_options: &[(0x100, 1, 16), (0x100, 2, 36), (0x100, 3, 12)],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "geneve-tagged-udp-packet.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(0x64),
        first_options: &[(0xff72, 0x7f, 56)],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "geneve-inner-tcp-bad-checksum.pcap",
        encap: "geneve",
        vxlan_vni: None,
        geneve_vni: Some(0x2a),
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
    Facts {
        file: "geneve-vxlan-dns-truncated.pcap",
        encap: "geneve+vxlan",
        vxlan_vni: Some(4242),
        geneve_vni: Some(0x1092),
        first_options: &[],
        inner: Inner::Ethernet(0x0800),
    },
];

/// A second, deliberately naive decapsulator to compare against.
fn reference_inner(encap: &str, d: &[u8]) -> Vec<u8> {
    let geneve_len = |d: &[u8]| 8 + usize::from(d[0] & 0x3f) * 4;
    match encap {
        "vxlan" => d[8..].to_vec(),
        "geneve" => d[geneve_len(d)..].to_vec(),
        "geneve+vxlan" => {
            let ip = &d[geneve_len(d)..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            ip[ihl + 8 + 8..].to_vec()
        }
        _ => unreachable!(),
    }
}

/// The outer UDP payloads at their length on the wire: where the capture
/// cut a frame short, the bytes it lost come back as zeros (as `udpsrc
/// replay --passthrough` sends them), so the inner length fields hold.
fn at_wire_length(path: &std::path::Path) -> Vec<Vec<u8>> {
    trace::read(path)
        .unwrap()
        .iter()
        .filter_map(|p| {
            let sliced = etherparse::LaxSlicedPacket::from_ethernet(&p.data).ok()?;
            let etherparse::TransportSlice::Udp(udp) = sliced.transport? else {
                return None;
            };
            let mut d = udp.payload().to_vec();
            d.resize(d.len().max(usize::from(udp.length()) - 8), 0);
            Some(d)
        })
        .collect()
}

#[test]
fn replayed_traces_give_their_inner_frames() {
    let Some(dir) = traces_dir() else {
        common::skipped(module_path!(), "../shared/traces not found");
        return;
    };
    for kind in receivers() {
        for facts in FILES {
            let sent = at_wire_length(&dir.join(facts.file));
            assert!(!sent.is_empty(), "{}: no UDP in trace", facts.file);
            let mut src = open(kind, "127.0.0.1", facts.encap);
            let _tx = send_all(src.local_addr().unwrap(), &sent);
            let got = collect(&mut src, sent.len() as u64, Duration::from_secs(5));
            let what = format!("{kind:?} {}", facts.file);
            assert_eq!(got.len(), sent.len(), "{what}: every datagram delivered");
            for (i, (g, d)) in got.iter().zip(&sent).enumerate() {
                let mut want = reference_inner(facts.encap, d);
                if let Inner::Bare(ethertype) = facts.inner {
                    let mut framed = vec![0u8; 12];
                    framed.extend_from_slice(&ethertype.to_be_bytes());
                    framed.extend_from_slice(&want);
                    want = framed;
                }
                // Datagrams larger than the receive buffer arrive truncated.
                assert_eq!(g.wire_len, want.len(), "{what} #{i}: inner wire length");
                assert!(
                    g.data == want[..g.data.len()],
                    "{what} #{i}: inner bytes differ"
                );
                assert_eq!(
                    g.data.len() < want.len(),
                    d.len() > RECV_BUFFER[kind as usize],
                    "{what} #{i}: truncated iff larger than the buffer"
                );
                assert_eq!(
                    (g.vxlan_vni, g.geneve_vni),
                    (facts.vxlan_vni, facts.geneve_vni),
                    "{what}"
                );
                let link = if facts.inner == Inner::Ip {
                    LinkType::Raw
                } else {
                    LinkType::En10Mb
                };
                assert_eq!(
                    g.link_type, link,
                    "{what}: link type from the GENEVE protocol type"
                );
            }
            let first = &got[0];
            let opts: Vec<(u16, u8, usize)> = first
                .geneve_options
                .iter()
                .map(|(c, t, d)| (*c, *t, d.len()))
                .collect();
            assert_eq!(
                opts, facts.first_options,
                "{what}: options of the first packet"
            );
            match facts.inner {
                Inner::Ethernet(t) | Inner::Bare(t) => {
                    let ethertype = u16::from_be_bytes([first.data[12], first.data[13]]);
                    assert_eq!(ethertype, t, "{what}: inner EtherType");
                }
                Inner::Ip => assert_eq!(first.data[0] >> 4, 6, "{what}: bare IPv6"),
            }
            assert_accounted(&mut src);
        }
    }
}

/// Sends the outer UDP payloads of `file` as they were captured and
/// checks that every one is rejected for `reason`.
fn captured_datagrams_are_rejected(file: &str, encap: &str, reason: Reject) {
    let Some(dir) = traces_dir() else {
        common::skipped(module_path!(), "../shared/traces not found");
        return;
    };
    let sent = common::outer_udp_payloads(&dir.join(file));
    assert!(!sent.is_empty());
    for kind in receivers() {
        let mut src = open(kind, "127.0.0.1", encap);
        let _tx = send_all(src.local_addr().unwrap(), &sent);
        let got = collect(&mut src, sent.len() as u64, Duration::from_secs(5));
        assert!(got.is_empty(), "{kind:?}");
        let s = src.stats();
        assert_eq!(s.rejected_for(reason), sent.len() as u64, "{kind:?}: {s:?}");
    }
}

#[test]
fn truncated_geneve_capture_is_rejected_not_delivered() {
    // The capture's datagram holds a GENEVE header and an option, no packet.
    captured_datagrams_are_rejected("geneve-truncated.pcapng", "geneve", Reject::EmptyInner);
}

#[test]
fn truncated_geneve_vxlan_capture_sent_as_captured_is_rejected_for_its_lengths() {
    // Cut by the capture's snap length: the IP header after GENEVE claims
    // more bytes than such a datagram holds.
    captured_datagrams_are_rejected(
        "geneve-vxlan-dns-truncated.pcap",
        "geneve+vxlan",
        Reject::InnerIpLength,
    );
}

#[test]
fn library_finds_the_same_udp_payloads_as_etherparse() {
    let Some(dir) = traces_dir() else {
        common::skipped(module_path!(), "../shared/traces not found");
        return;
    };
    for facts in FILES {
        let path = dir.join(facts.file);
        let ours: Vec<Vec<u8>> = trace::read(&path)
            .unwrap()
            .iter()
            .filter_map(|p| p.outer_udp().map(|udp| udp.payload().to_vec()))
            .collect();
        assert_eq!(ours, common::outer_udp_payloads(&path), "{}", facts.file);
    }
}
