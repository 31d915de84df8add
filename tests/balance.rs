//! workers=N: every inner flow goes to one socket of the SO_REUSEPORT group,
//! whichever direction and outer source port, and flows spread evenly.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use zeek_udp_source::balance::{program, run, worker};
use zeek_udp_source::decap::Decapsulator;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::flow::flow_key;
use zeek_udp_source::wire::ip::MAX_EXT_HEADERS;
use zeek_udp_source::{Encap, LinkType, Source};

/// A pseudo-random flow: (src ip, dst ip, sport, dport, tcp?), v4 or v6.
fn flow(i: u32, v6: bool) -> (Vec<u8>, Vec<u8>, u16, u16, bool) {
    let h = i.wrapping_mul(2_654_435_761);
    let (a, b) = if v6 {
        let mut a = [0xfd_u8; 16];
        let mut b = [0xfe_u8; 16];
        a[12..].copy_from_slice(&h.to_be_bytes());
        b[12..].copy_from_slice(&(h ^ 0x5555).to_be_bytes());
        (a.to_vec(), b.to_vec())
    } else {
        (
            h.to_be_bytes().to_vec(),
            (h ^ 0x00ff_ff00).to_be_bytes().to_vec(),
        )
    };
    (
        a,
        b,
        1024 + (h % 60000) as u16,
        [80, 443, 53, 8080][i as usize % 4],
        i % 3 != 0,
    )
}

/// The flow's packet in one direction, as Ethernet (optionally VLAN-tagged).
fn frame(f: &(Vec<u8>, Vec<u8>, u16, u16, bool), reverse: bool, vlan: bool) -> Vec<u8> {
    let (src, dst, sp, dp) = if reverse {
        (&f.1, &f.0, f.3, f.2)
    } else {
        (&f.0, &f.1, f.2, f.3)
    };
    let eth = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
    let mut out = Vec::new();
    macro_rules! l4 {
        ($ip:expr) => {
            if f.4 {
                $ip.tcp(sp, dp, 1, 100).write(&mut out, &[1, 2, 3]).unwrap()
            } else {
                $ip.udp(sp, dp).write(&mut out, &[1, 2, 3]).unwrap()
            }
        };
    }
    if src.len() == 4 {
        l4!(eth.ipv4(src[..].try_into().unwrap(), dst[..].try_into().unwrap(), 64));
    } else {
        l4!(eth.ipv6(src[..].try_into().unwrap(), dst[..].try_into().unwrap(), 64));
    }
    if vlan {
        // An 802.1Q tag (VLAN 9) before the EtherType.
        out.splice(12..12, [0x81, 0x00, 0x00, 0x09]);
    }
    out
}

fn encode(encap: Encap, inner: &[u8], link: LinkType, v6_outer: bool) -> Vec<u8> {
    let mut enc = Encoder::new(encap);
    if v6_outer {
        enc.inner_tunnel = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
    }
    let mut d = Vec::new();
    enc.encode(inner, link, &mut d);
    d
}

#[test]
fn the_program_is_symmetric_and_even_for_every_encapsulation() {
    let workers = 4;
    let cases: Vec<(&str, Encap, LinkType, bool, bool, bool)> = vec![
        // (name, encap, path link type, inner v6, vlan, raw ip inside)
        (
            "vxlan v4",
            Encap::Vxlan,
            LinkType::En10Mb,
            false,
            false,
            false,
        ),
        (
            "vxlan v6",
            Encap::Vxlan,
            LinkType::En10Mb,
            true,
            false,
            false,
        ),
        (
            "vxlan v4 vlan",
            Encap::Vxlan,
            LinkType::En10Mb,
            false,
            true,
            false,
        ),
        (
            "geneve eth",
            Encap::Geneve,
            LinkType::En10Mb,
            false,
            false,
            false,
        ),
        (
            "geneve ip v4",
            Encap::Geneve,
            LinkType::En10Mb,
            false,
            false,
            true,
        ),
        (
            "geneve ip v6",
            Encap::Geneve,
            LinkType::En10Mb,
            true,
            false,
            true,
        ),
        (
            "geneve+vxlan",
            Encap::GeneveVxlan,
            LinkType::En10Mb,
            false,
            false,
            false,
        ),
        ("raw dlt=raw", Encap::Raw, LinkType::Raw, true, false, true),
        (
            "skip=8",
            Encap::Skip(8),
            LinkType::En10Mb,
            false,
            false,
            false,
        ),
    ];
    for (name, encap, link, v6, vlan, raw) in cases {
        let prog = program(encap, link, workers);
        let mut per_worker = vec![0u32; workers as usize];
        let flows = 2000;
        for i in 0..flows {
            let f = flow(i, v6);
            let pick = |reverse: bool, outer_v6: bool| {
                let mut inner = frame(&f, reverse, vlan);
                let inner_link = if raw {
                    inner.drain(..if vlan { 18 } else { 14 });
                    LinkType::Raw
                } else {
                    LinkType::En10Mb
                };
                run(&prog, &encode(encap, &inner, inner_link, outer_v6))
            };
            let w = pick(false, false);
            assert_eq!(
                w,
                pick(true, true),
                "{name}: flow {i} goes one way, comes back another"
            );
            assert!(w < workers);
            per_worker[w as usize] += 1;
        }
        let mean = flows / workers;
        for n in &per_worker {
            assert!(
                n.abs_diff(mean) * 5 <= mean,
                "{name}: {per_worker:?} is not within 20% of even"
            );
        }
    }
}

/// IPv6 extension headers of these types (8 bytes each) in front of what
/// follows the fixed header of an Ethernet/IPv6 frame.
fn with_ipv6_ext(frame: &[u8], types: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (ip, next) = (14, frame[14 + 6]);
    let mut chain: Vec<u8> = Vec::new();
    for (i, _) in types.iter().enumerate() {
        chain.extend([*types.get(i + 1).unwrap_or(&next), 0, 0, 0, 0, 0, 0, 7]);
    }
    f[ip + 6] = types[0];
    let len = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) + chain.len() as u16;
    f[ip + 4..ip + 6].copy_from_slice(&len.to_be_bytes());
    f.splice(ip + 40..ip + 40, chain);
    f
}

/// The inner frames of a flow in one direction, in every shape the program
/// reads: VLAN tags, fragments, extension headers, no ports, not IP.
fn shapes(f: &(Vec<u8>, Vec<u8>, u16, u16, bool), reverse: bool) -> Vec<(&'static str, Vec<u8>)> {
    let plain = frame(f, reverse, false);
    let mut out = vec![
        ("plain", plain.clone()),
        ("802.1Q", frame(f, reverse, true)),
    ];
    let mut qinq = frame(f, reverse, true);
    qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x05]);
    out.push(("QinQ", qinq));
    if f.0.len() == 4 {
        let mut first = plain.clone();
        first[14 + 6] = 0x20;
        out.push(("first fragment", first));
        let mut later = plain.clone();
        later[14 + 6..14 + 8].copy_from_slice(&[0, 2]);
        later[14 + 20..].fill(0x5a);
        out.push(("later fragment", later));
        let mut icmp = plain.clone();
        icmp[14 + 9] = 1;
        out.push(("ICMP", icmp));
    } else {
        out.push(("hop-by-hop, dest opts", with_ipv6_ext(&plain, &[0, 60])));
        out.push(("IPv6 fragment", with_ipv6_ext(&plain, &[44])));
        let bound = [60; MAX_EXT_HEADERS];
        out.push((
            "extension headers to the bound",
            with_ipv6_ext(&plain, &bound),
        ));
        let beyond = [60; MAX_EXT_HEADERS + 1];
        out.push(("beyond the bound", with_ipv6_ext(&plain, &beyond)));
    }
    let mut arp = plain;
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    out.push(("ARP", arp));
    out
}

#[test]
fn the_program_picks_the_worker_the_flow_key_names() {
    let workers = 5;
    // (encap, path link type, inner as raw IP, IPv6 tunnel for geneve+vxlan)
    let setups = [
        (Encap::Vxlan, LinkType::En10Mb, false, false),
        (Encap::Geneve, LinkType::En10Mb, false, false),
        (Encap::Geneve, LinkType::En10Mb, true, false),
        (Encap::GeneveVxlan, LinkType::En10Mb, false, false),
        (Encap::GeneveVxlan, LinkType::En10Mb, false, true),
        (Encap::Raw, LinkType::Raw, true, false),
        (Encap::Raw, LinkType::En10Mb, false, false),
        (Encap::Skip(8), LinkType::En10Mb, false, false),
    ];
    let mut spread = HashSet::new();
    for (encap, link, raw, v6_tunnel) in setups {
        let prog = program(encap, link, workers);
        let decap = Decapsulator::new(encap, link);
        for i in 0..200 {
            let f = flow(i, i % 2 == 0);
            for (what, mut inner) in shapes(&f, i % 3 == 0) {
                let inner_link = if raw {
                    // Drop Ethernet and its tags: not IP then is not IP either.
                    let ip = zeek_udp_source::wire::ethernet::ip_payload(&inner).unwrap_or(&[]);
                    inner = ip.to_vec();
                    LinkType::Raw
                } else {
                    LinkType::En10Mb
                };
                if inner.is_empty() {
                    continue;
                }
                let d = encode(encap, &inner, inner_link, v6_tunnel);
                let got = decap.decap(&d).unwrap();
                let packet = &d[got.captured(d.len())];
                let key = flow_key(got.link_type, packet, got.wire_len);
                let want = worker(key.as_ref(), workers);
                assert_eq!(run(&prog, &d), want, "{encap} {link:?} {what}, flow {i}");
                spread.insert(want);
            }
        }
    }
    assert_eq!(spread.len(), workers as usize, "every worker is picked");
}

#[test]
fn every_fragment_of_a_packet_goes_to_one_worker() {
    let prog = program(Encap::Vxlan, LinkType::En10Mb, 8);
    let mut apart = 0;
    for i in 0..100 {
        let f = flow(i, false);
        let shapes = shapes(&f, false);
        let pick = |name: &str| {
            let (_, inner) = shapes.iter().find(|s| s.0 == name).unwrap();
            run(&prog, &encode(Encap::Vxlan, inner, LinkType::En10Mb, false))
        };
        apart += usize::from(pick("first fragment") != pick("later fragment"));
    }
    assert_eq!(apart, 0, "fragments of a packet split over workers");
}

#[test]
fn what_cannot_be_parsed_goes_to_worker_0() {
    let prog = program(Encap::Vxlan, LinkType::En10Mb, 8);
    assert_eq!(run(&prog, &[]), 0);
    assert_eq!(
        run(&prog, &[0x08, 0, 0, 0, 0, 0, 1, 0]),
        0,
        "no inner frame"
    );
    let mut arp = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    arp.extend([0xff; 12]);
    arp.extend([0x08, 0x06]);
    arp.extend([0; 28]);
    assert_eq!(run(&prog, &arp), 0, "not IP");
}

#[test]
fn the_kernel_keeps_each_flow_on_one_socket_of_the_group() {
    for kind in receivers() {
        let workers = 4;
        // An explicit port: an ephemeral one (0) is never shared.
        let text = format!("127.0.0.1:{}:vxlan:workers=4", unique_port());
        let path = zeek_udp_source::path::parse(&text).unwrap();
        let mut sources: Vec<Source> = (0..workers)
            .map(|_| Source::open_path(path.clone(), &config(kind)).unwrap())
            .collect();
        // Each direction from its own sender: outer source ports differ.
        let (fwd, rev) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let flows = 400u32;
        for i in 0..flows {
            let f = flow(i, i % 2 == 0);
            fwd.send_to(
                &encode(
                    Encap::Vxlan,
                    &frame(&f, false, false),
                    LinkType::En10Mb,
                    false,
                ),
                path.addr,
            )
            .unwrap();
            rev.send_to(
                &encode(
                    Encap::Vxlan,
                    &frame(&f, true, false),
                    LinkType::En10Mb,
                    false,
                ),
                path.addr,
            )
            .unwrap();
        }
        let mut where_: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
        let mut total = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while total < 2 * flows as usize && std::time::Instant::now() < deadline {
            let before = total;
            for (w, src) in sources.iter_mut().enumerate() {
                while let Some(p) = src.next_packet().unwrap() {
                    let key = flow_key(LinkType::En10Mb, p.data, p.wire_len).unwrap();
                    where_
                        .entry(format!("{key:?}").into_bytes())
                        .or_default()
                        .insert(w);
                    total += 1;
                }
            }
            if total == before {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(total, 2 * flows as usize, "{kind:?}: everything arrived");
        assert_eq!(where_.len(), flows as usize);
        let mut per_worker = vec![0u32; workers];
        for (flow, ws) in &where_ {
            assert_eq!(
                ws.len(),
                1,
                "{kind:?}: a flow split over workers {ws:?}: {}",
                String::from_utf8_lossy(flow)
            );
            per_worker[*ws.iter().next().unwrap()] += 1;
        }
        let mean = flows / workers as u32;
        for n in &per_worker {
            assert!(
                n.abs_diff(mean) * 5 <= mean,
                "{kind:?}: {per_worker:?} not within 20% of even"
            );
        }
    }
}

#[test]
fn workers_in_the_path() {
    use zeek_udp_source::path::parse;
    let p = parse("udp::0.0.0.0:4789:geneve:workers=8").unwrap();
    assert_eq!(p.workers, Some(8));
    assert_eq!(parse(&p.to_string()).unwrap(), p);
    for (path, want) in [
        (
            "127.0.0.1:4789:workers=0",
            "bad worker count in 'workers=0'",
        ),
        (
            "127.0.0.1:4789:workers=x",
            "bad worker count in 'workers=x'",
        ),
        (
            "127.0.0.1:4789:workers=2:workers=3",
            "duplicate worker count 'workers=3'",
        ),
    ] {
        let err = parse(path).expect_err(path).to_string();
        assert!(err.contains(want), "{path}: {err}");
    }
}
