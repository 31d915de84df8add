//! Inner packets survive the trip through a real socket byte for byte, with
//! their VNIs, GENEVE options, link type and kernel timestamps, for both
//! receivers and both address families.

mod common;

use std::time::Duration;

use common::*;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::wire::{GeneveOption, GeneveOptions};
use zeek_udp_source::{Encap, LinkType, ReceiverKind, Reject};

const N: u32 = 300;

fn options() -> Vec<u8> {
    let mut opts = Vec::new();
    GeneveOption::emit(0x0103, 0x80, &[1, 2, 3, 4, 5, 6, 7, 8], &mut opts);
    GeneveOption::emit(0xffff, 0x01, &[0xaa; 4], &mut opts);
    GeneveOption::emit(0x0000, 0x7f, &[], &mut opts);
    opts
}

fn expected_options() -> Vec<(u16, u8, Vec<u8>)> {
    vec![
        (0x0103, 0x80, vec![1, 2, 3, 4, 5, 6, 7, 8]),
        (0xffff, 0x01, vec![0xaa; 4]),
        (0x0000, 0x7f, vec![]),
    ]
}

/// Sends N inner packets in `encap` and checks what comes out.
fn round_trip(kind: ReceiverKind, listen: &str, encap: Encap, inner_ip: bool) {
    let dlt = if inner_ip { "dlt=raw" } else { "dlt=en10mb" };
    let mut src = open(kind, listen, &format!("{}:{dlt}", encap.token()));
    let to = src.local_addr().unwrap();
    let mut enc = Encoder::new(encap);
    enc.vxlan_vni = 0x00ab_cdef;
    enc.geneve_vni = 4711;
    enc.geneve_options = options();
    if listen.starts_with('[') {
        enc.inner_tunnel = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
    }
    let inner: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let len = [20, 500, 1400][i as usize % 3];
            if inner_ip {
                ipv6_packet(i, len)
            } else {
                eth_frame(i, len)
            }
        })
        .collect();
    let link = if inner_ip {
        LinkType::Raw
    } else {
        LinkType::En10Mb
    };
    let datagrams: Vec<Vec<u8>> = inner
        .iter()
        .map(|p| {
            let mut d = Vec::new();
            enc.encode(p, link, &mut d);
            d
        })
        .collect();
    let before = now();
    let _tx = send_all(to, &datagrams);
    let got = collect(&mut src, N as u64, Duration::from_secs(10));
    let what = format!("{kind:?} {listen} {encap} inner_ip={inner_ip}");
    assert_eq!(got.len(), N as usize, "{what}: all delivered");
    let mut last = before;
    for (g, want) in got.iter().zip(&inner) {
        assert_eq!(&g.data, want, "{what}: byte-exact inner packet");
        assert_eq!(g.wire_len, want.len());
        assert_eq!(g.link_type, link, "{what}: link type");
        let (vx, gn) = match encap {
            Encap::Vxlan => (Some(0x00ab_cdef), None),
            Encap::Geneve => (None, Some(4711)),
            Encap::GeneveVxlan => (Some(0x00ab_cdef), Some(4711)),
            _ => (None, None),
        };
        assert_eq!((g.vxlan_vni, g.geneve_vni), (vx, gn), "{what}: VNIs");
        let opts = if gn.is_some() {
            expected_options()
        } else {
            vec![]
        };
        assert_eq!(g.geneve_options, opts, "{what}: GENEVE options");
        assert!(g.timestamp >= last, "{what}: timestamps never go back");
        assert!(
            g.timestamp.sec >= before.sec - 1 && g.timestamp.sec <= now().sec + 1,
            "{what}: timestamp near wall clock"
        );
        last = g.timestamp;
        let peer = g.peer.expect("peer address");
        assert!(peer.ip().is_loopback(), "{what}: peer {peer}");
    }
    let s = src.stats();
    assert_eq!(
        (s.received, s.delivered, s.rejected_total()),
        (N as u64, N as u64, 0),
        "{what}"
    );
    assert_accounted(&mut src);
}

#[test]
fn vxlan() {
    for kind in receivers() {
        round_trip(kind, "127.0.0.1", Encap::Vxlan, false);
        round_trip(kind, "[::1]", Encap::Vxlan, false);
    }
}

#[test]
fn geneve_with_ethernet_and_with_ip() {
    for kind in receivers() {
        for listen in ["127.0.0.1", "[::1]"] {
            round_trip(kind, listen, Encap::Geneve, false);
            round_trip(kind, listen, Encap::Geneve, true);
        }
    }
}

#[test]
fn geneve_vxlan_over_ipv4_and_ipv6() {
    // The listen family also picks the family of the IP header inside.
    for kind in receivers() {
        round_trip(kind, "127.0.0.1", Encap::GeneveVxlan, false);
        round_trip(kind, "[::1]", Encap::GeneveVxlan, false);
    }
}

#[test]
fn raw_and_skip() {
    for kind in receivers() {
        round_trip(kind, "127.0.0.1", Encap::Raw, true);
        round_trip(kind, "[::1]", Encap::Skip(13), false);
    }
}

#[test]
fn geneve_protocol_type_overrides_the_path_link_type() {
    // The path says en10mb; GENEVE says IPv6: the packet is raw IP.
    for kind in receivers() {
        let mut src = open(kind, "127.0.0.1", "geneve");
        let mut d = Vec::new();
        Encoder::new(Encap::Geneve).encode(&ipv6_packet(1, 40), LinkType::Raw, &mut d);
        let _tx = send_all(src.local_addr().unwrap(), &[d]);
        let got = collect(&mut src, 1, Duration::from_secs(5));
        assert_eq!(got[0].link_type, LinkType::Raw, "{kind:?}");
    }
}

#[test]
fn dual_stack_listener_takes_ipv4() {
    for kind in receivers() {
        let mut src = open(kind, "[::]", "vxlan");
        let port = src.local_addr().unwrap().port();
        let mut d = Vec::new();
        Encoder::new(Encap::Vxlan).encode(&eth_frame(3, 64), LinkType::En10Mb, &mut d);
        let _tx = send_all(format!("127.0.0.1:{port}").parse().unwrap(), &[d]);
        let got = collect(&mut src, 1, Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{kind:?}");
        assert!(
            got[0].peer.unwrap().is_ipv4(),
            "v4-mapped peers come back as IPv4"
        );
    }
}

#[test]
fn oversized_datagrams_arrive_truncated_and_counted() {
    for kind in receivers() {
        let mut cfg = config(kind);
        cfg.recvmmsg_buffer_size = 1000;
        cfg.uring.buffer_shift = 10; // 1024 bytes including headers
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1:vxlan").unwrap();
        path.addr.set_port(0);
        let mut src = zeek_udp_source::Source::open_path(path, &cfg).unwrap();
        let big = eth_frame(9, 3000);
        let mut d = Vec::new();
        Encoder::new(Encap::Vxlan).encode(&big, LinkType::En10Mb, &mut d);
        let _tx = send_all(src.local_addr().unwrap(), &[d.clone()]);
        let got = collect(&mut src, 1, Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{kind:?}");
        let g = &got[0];
        assert_eq!(
            g.wire_len,
            big.len(),
            "{kind:?}: wire length is the real one"
        );
        assert!(
            g.data.len() < g.wire_len && g.data.len() < 1000,
            "{kind:?}: captured {}",
            g.data.len()
        );
        assert_eq!(
            &g.data[..],
            &big[..g.data.len()],
            "{kind:?}: the captured prefix is intact"
        );
        let s = src.stats();
        assert_eq!(s.truncated, 1, "{kind:?}");
        assert_eq!(
            s.bytes,
            d.len() as u64,
            "{kind:?}: bytes count the datagram as sent"
        );
    }
}

/// A GENEVE source on a free port whose key is option 0x0103:0x80.
fn open_geneve_keyed(kind: ReceiverKind) -> zeek_udp_source::Source {
    let mut path = zeek_udp_source::path::parse("127.0.0.1:1:geneve").unwrap();
    path.addr.set_port(0);
    let cfg = zeek_udp_source::Config {
        geneve_key_option: Some((0x0103, 0x80)),
        ..config(kind)
    };
    zeek_udp_source::Source::open_path(path, &cfg).unwrap()
}

#[test]
fn a_configured_geneve_option_yields_its_value() {
    use zeek_udp_source::wire::geneve::parse_option_id;
    assert_eq!(parse_option_id("0x0103:0x80"), Some((0x0103, 0x80)));
    assert_eq!(parse_option_id("259:128"), Some((0x0103, 0x80)));
    for bad in ["", "0x0103", "0x10000:1", "1:256", "a:b"] {
        assert_eq!(parse_option_id(bad), None, "{bad}");
    }
    for kind in receivers() {
        let mut src = open_geneve_keyed(kind);
        let mut with = Encoder::new(Encap::Geneve);
        GeneveOption::emit(0xffff, 1, &[9; 4], &mut with.geneve_options);
        GeneveOption::emit(
            0x0103,
            0x80,
            &[0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56],
            &mut with.geneve_options,
        );
        let without = Encoder::new(Encap::Geneve);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        with.encode(&eth_frame(1, 40), LinkType::En10Mb, &mut a);
        without.encode(&eth_frame(2, 40), LinkType::En10Mb, &mut b);
        let _tx = send_all(src.local_addr().unwrap(), &[a, b]);
        let got = collect(&mut src, 2, Duration::from_secs(5));
        let values: Vec<Option<u64>> = got.iter().map(|g| g.geneve_option_value).collect();
        assert_eq!(
            values,
            vec![Some(0x1234), None],
            "{kind:?}: first 8 data bytes, big-endian"
        );
    }
}

#[test]
fn settings_out_of_range_are_refused_before_anything_is_allocated() {
    for (cfg, want) in [
        (
            zeek_udp_source::Config {
                recvmmsg_buffer_size: 1 << 62,
                ..config(ReceiverKind::Recvmmsg)
            },
            "bad setting PacketSource::UDP::recvmmsg_buffer_size: 4611686018427387904 bytes is outside 1..=65536",
        ),
        (
            zeek_udp_source::Config {
                recvmmsg_batch: usize::MAX / 8,
                ..config(ReceiverKind::Recvmmsg)
            },
            "PacketSource::UDP::recvmmsg_buffers:",
        ),
        (
            zeek_udp_source::Config {
                recvmmsg_buffer_size: usize::MAX,
                udp_gro: true,
                ..config(ReceiverKind::Recvmmsg)
            },
            "PacketSource::UDP::recvmmsg_buffer_size:",
        ),
    ] {
        let err = zeek_udp_source::Source::open("127.0.0.1:4789", &cfg)
            .err()
            .expect("refused");
        assert!(err.to_string().contains(want), "{err}\nwanted: {want}");
    }
}

#[test]
fn shutdown_counts_every_datagram_still_queued() {
    const SENT: usize = 300;
    for kind in receivers() {
        let mut src = open(kind, "127.0.0.1", "vxlan");
        let datagrams: Vec<Vec<u8>> = (0..SENT as u32).map(vxlan_datagram).collect();
        let _tx = send_all(src.local_addr().unwrap(), &datagrams);
        // Take some, and keep the last one lent out.
        let mut taken = 0;
        while taken < 50 {
            match src.next_packet().unwrap() {
                Some(_) if taken == 49 => taken += 1,
                Some(_) => {
                    taken += 1;
                    src.done();
                }
                None => wait_readable(src.wait_fd(), 1000),
            }
        }
        src.shutdown();
        src.shutdown();
        assert!(
            src.next_packet().unwrap().is_none(),
            "{kind:?}: nothing after"
        );
        let s = src.stats();
        assert_eq!(
            s.received + s.kernel_drops,
            SENT as u64,
            "{kind:?}: sent = received + kernel drops: {s:?}"
        );
        assert_eq!(
            s.received,
            s.delivered + s.rejected_total(),
            "{kind:?}: {s:?}"
        );
        assert_eq!(s.delivered, 50, "{kind:?}");
        assert_eq!(
            s.rejected_for(Reject::UnreadAtShutdown),
            s.received - 50,
            "{kind:?}: {s:?}"
        );
    }
}

/// Dropping an io_uring source while datagrams keep arriving cancels its
/// receive and reaps the last completion before the buffers go (a receive
/// left running would write into unmapped or reused memory).
#[test]
fn io_uring_sources_close_cleanly_while_datagrams_arrive() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
    let port = Arc::new(AtomicU16::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (port, stop) = (port.clone(), stop.clone());
        std::thread::spawn(move || {
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let d = vxlan_datagram(1);
            while !stop.load(Ordering::Relaxed) {
                let p = port.load(Ordering::Relaxed);
                if p != 0 {
                    // The port may be closed between load and send.
                    let _ = tx.send_to(&d, ("127.0.0.1", p));
                }
            }
        })
    };
    for round in 0..5 {
        let mut src = open(ReceiverKind::IoUring, "127.0.0.1", "vxlan");
        port.store(src.local_addr().unwrap().port(), Ordering::Relaxed);
        let got = collect(&mut src, 20, Duration::from_secs(10));
        assert!(got.len() >= 20, "round {round}: {}", got.len());
        drop(src);
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}

fn setsockopt(fd: i32, level: i32, opt: i32, value: i32) {
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {level}/{opt}");
}

fn vxlan_datagram(seq: u32) -> Vec<u8> {
    let mut d = Vec::new();
    Encoder::new(Encap::Vxlan).encode(&eth_frame(seq, 40), LinkType::En10Mb, &mut d);
    d
}

/// recvmmsg's wait_fd is the socket itself, so a test can change what the
/// kernel attaches to each datagram.
#[test]
fn a_datagram_without_a_timestamp_gets_the_time_it_was_read() {
    let mut src = open(ReceiverKind::Recvmmsg, "127.0.0.1", "vxlan");
    setsockopt(src.wait_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
    let before = now();
    let _tx = send_all(src.local_addr().unwrap(), &[vxlan_datagram(1)]);
    let got = collect(&mut src, 1, Duration::from_secs(5));
    let after = now();
    assert_eq!(got.len(), 1);
    let ts = got[0].timestamp;
    assert!(
        before <= ts && ts <= after,
        "{ts:?} is not between {before:?} and {after:?}"
    );
}

#[test]
fn truncated_control_data_is_counted_and_the_datagram_delivered() {
    let mut src = open(ReceiverKind::Recvmmsg, "127.0.0.1", "vxlan");
    // Timestamp and IP_PKTINFO fill the control buffer; IP_TTL overflows it.
    setsockopt(src.wait_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    setsockopt(src.wait_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
    let _tx = send_all(
        src.local_addr().unwrap(),
        &[vxlan_datagram(1), vxlan_datagram(2)],
    );
    let got = collect(&mut src, 2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "delivered");
    let s = src.stats();
    assert_eq!((s.delivered, s.control_truncated), (2, 2), "{s:?}");
    assert!(
        got[0].timestamp.sec > 1_600_000_000,
        "{:?}",
        got[0].timestamp
    );
}

/// skip=N past what the buffer captured but inside the datagram: the inner
/// packet is there, only cut, so both receivers deliver it truncated, and
/// only a skip past the datagram's end is skip_beyond_datagram.
#[test]
fn skip_past_the_capture_but_inside_the_datagram_is_delivered_truncated() {
    let datagram: Vec<u8> = (0..12000u32).map(|i| (i % 251) as u8).collect();
    for kind in receivers() {
        // Small buffers (as tests/roundtrip's oversized test), then the
        // defaults, where recvmmsg captures 9248 bytes and io_uring more.
        for small in [true, false] {
            for (skip, delivered) in [
                (1500usize, true),
                (10000, true),
                (11999, true),
                (12000, false),
            ] {
                let mut cfg = config(kind);
                if small {
                    cfg.recvmmsg_buffer_size = 1000;
                    cfg.uring.buffer_shift = 10;
                }
                let mut path =
                    zeek_udp_source::path::parse(&format!("127.0.0.1:1:skip={skip}")).unwrap();
                path.addr.set_port(0);
                let mut src = zeek_udp_source::Source::open_path(path, &cfg).unwrap();
                let _tx = send_all(src.local_addr().unwrap(), std::slice::from_ref(&datagram));
                let got = collect(&mut src, 1, Duration::from_secs(5));
                let s = src.stats();
                let what = format!("{kind:?} small={small} skip={skip}: {s:?}");
                if !delivered {
                    assert!(got.is_empty(), "{what}");
                    assert_eq!(s.rejected_for(Reject::SkipBeyondDatagram), 1, "{what}");
                    continue;
                }
                assert_eq!(got.len(), 1, "{what}");
                assert_eq!(s.rejected_total(), 0, "{what}");
                assert_eq!(got[0].wire_len, 12000 - skip, "{what}");
                assert_eq!(
                    got[0].data[..],
                    datagram[skip..skip + got[0].data.len()],
                    "{what}"
                );
            }
        }
    }
}

/// GENEVE carrying a bare EtherType (ARP) gets a synthesized Ethernet
/// header in front of the inner packet; the GENEVE options right before it
/// must come out intact, and so must the configured option's value.
#[test]
fn a_synthesized_ethernet_header_leaves_the_geneve_options_intact() {
    use zeek_udp_source::wire::Geneve;
    let arp: Vec<u8> = (0..28u8).collect();
    let mut options = Vec::new();
    GeneveOption::emit(0x0103, 0x80, &[1, 2, 3, 4, 5, 6, 7, 8], &mut options);
    GeneveOption::emit(0xffff, 1, &[9; 4], &mut options);
    for opts in [options.clone(), options[..12].to_vec(), Vec::new()] {
        let mut d = Vec::new();
        Geneve::emit(7, 0x0806, &opts, &mut d);
        d.extend_from_slice(&arp);
        for kind in receivers() {
            let mut src = open_geneve_keyed(kind);
            let _tx = send_all(src.local_addr().unwrap(), std::slice::from_ref(&d));
            let got = collect(&mut src, 1, Duration::from_secs(5));
            let what = format!("{kind:?} options {}", opts.len());
            assert_eq!(got.len(), 1, "{what}");
            let g = &got[0];
            let mut framed = vec![0u8; 12];
            framed.extend_from_slice(&[0x08, 0x06]);
            framed.extend_from_slice(&arp);
            assert_eq!(g.data, framed, "{what}");
            assert_eq!(g.wire_len, framed.len(), "{what}");
            let want: Vec<(u16, u8, Vec<u8>)> = GeneveOptions::new(&opts)
                .map(|o| (o.class, o.kind, o.data.to_vec()))
                .collect();
            assert_eq!(g.geneve_options, want, "{what}");
            let value = (!opts.is_empty()).then_some(0x0102_0304_0506_0708);
            assert_eq!(g.geneve_option_value, value, "{what}");
        }
    }
}
