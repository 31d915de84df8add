//! `allow=`: only listed senders feed the analysis; others are counted as
//! rejected and never delivered.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use zeek_udp_source::allow::Cidr;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::path::parse;
use zeek_udp_source::{Config, Encap, LinkType, Reject, Source};

#[test]
fn prefixes_match_as_expected() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let c = |s: &str| Cidr::parse(s).unwrap();
    assert!(c("10.0.0.0/8").contains(ip("10.255.1.2")));
    assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
    assert!(c("192.168.1.0/23").contains(ip("192.168.0.77")));
    assert!(!c("192.168.1.0/24").contains(ip("192.168.0.77")));
    assert!(c("0.0.0.0/0").contains(ip("203.0.113.9")));
    assert!(c("127.0.0.1").contains(ip("127.0.0.1")) && !c("127.0.0.1").contains(ip("127.0.0.2")));
    assert!(c("fd00::/8").contains(ip("fd12::1")) && !c("fd00::/8").contains(ip("fe80::1")));
    assert!(
        c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")),
        "v4-mapped senders count as IPv4"
    );
    assert!(!c("10.0.0.0/8").contains(ip("fd00::1")));
    for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "10.0.0.0/", "x"] {
        assert_eq!(Cidr::parse(bad), None, "{bad}");
    }
}

#[test]
fn allow_lists_in_the_path() {
    let p = parse("udp::0.0.0.0:4789:vxlan:allow=10.0.0.0/8,[fd00::/8],192.0.2.7").unwrap();
    assert_eq!(p.allow.len(), 3);
    assert!(
        p.to_string()
            .ends_with(":allow=10.0.0.0/8,[fd00::/8],192.0.2.7/32"),
        "{p}"
    );
    assert_eq!(
        parse(&p.to_string()).unwrap(),
        p,
        "the printed path parses back"
    );
    assert!(parse("127.0.0.1:4789").unwrap().allow.is_empty());
    for (path, want) in [
        (
            "127.0.0.1:4789:allow=",
            "allow list 'allow=' without a value",
        ),
        ("127.0.0.1:4789:allow", "allow list 'allow' without a value"),
        (
            "127.0.0.1:4789:allow=10.0.0.0/40",
            "bad allow list: '10.0.0.0/40' is not an address or prefix",
        ),
        (
            "127.0.0.1:4789:allow=x",
            "'x' is not an address or prefix: expected e.g. allow=10.0.0.0/8,[fd00::/8]",
        ),
        (
            "[::]:4789:allow=fd00::/8",
            "IPv6 addresses in allow= go in brackets, since ':' separates options: expected allow=[fd00::/8]",
        ),
        (
            "[::]:4789:allow=::1",
            "IPv6 addresses in allow= go in brackets, since ':' separates options: expected allow=[::1]",
        ),
        (
            "[::]:4789:allow=10.0.0.0/8,fd00::1:vxlan",
            "expected allow=10.0.0.0/8,[fd00::1]",
        ),
        (
            "127.0.0.1:4789:allow=10.0.0.0/8:allow=[::1]",
            "duplicate allow list 'allow=[::1]'",
        ),
    ] {
        let err = parse(path).expect_err(path).to_string();
        assert!(err.contains(want), "{path}: {err}");
    }
}

#[test]
fn ipv4_mapped_prefixes_are_ipv4_and_ipv6_prefixes_hold_mapped_senders() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let c = |s: &str| Cidr::parse(s).unwrap();
    assert_eq!(c("::ffff:10.0.0.0/104"), c("10.0.0.0/8"), "normalized");
    assert_eq!(c("::ffff:192.0.2.7"), c("192.0.2.7"));
    assert_eq!(c("::ffff:0:0/96").to_string(), "0.0.0.0/0");
    assert!(c("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
    // The receivers report a dual-stack socket's IPv4 senders as IPv4.
    for everyone in ["::/0", "::/80", "::ffff:0:0/95"] {
        assert!(c(everyone).contains(ip("192.0.2.1")), "{everyone}");
        assert!(c(everyone).holds_ipv4(), "{everyone}");
    }
    assert!(!c("fd00::/8").contains(ip("192.0.2.1")));
    assert!(!c("fd00::/8").holds_ipv4() && c("fd00::/8").holds_ipv6());
    assert!(c("10.0.0.0/8").holds_ipv4() && !c("10.0.0.0/8").holds_ipv6());
}

#[test]
fn allow_lists_that_can_never_match_are_refused() {
    for (path, listener) in [
        ("127.0.0.1:4789:allow=[fd00::/8]", "127.0.0.1 hears IPv4"),
        ("0.0.0.0:4789:allow=[::1],[fe80::/10]", "0.0.0.0 hears IPv4"),
        ("[::1]:4789:allow=127.0.0.1", "::1 hears IPv6"),
        ("[::1]:4789:allow=[::ffff:127.0.0.1]", "::1 hears IPv6"),
        ("[::ffff:127.0.0.1]:4789:allow=[::1]", "hears IPv4"),
    ] {
        let err = parse(path).expect_err(path).to_string();
        assert!(
            err.contains("can match: a listener on") && err.contains(listener),
            "{path}: {err}"
        );
    }
    for path in [
        "[::]:4789:allow=127.0.0.1",
        "[::]:4789:allow=[fd00::/8]",
        "0.0.0.0:4789:allow=[::/0]",
        "0.0.0.0:4789:allow=[fd00::/8],10.0.0.0/8",
    ] {
        assert!(parse(path).is_ok(), "{path}");
    }
}

#[test]
fn a_dual_stack_listener_matches_ipv4_senders_against_ipv6_prefixes() {
    for kind in receivers() {
        for allow in ["[::/0]", "[::ffff:127.0.0.0/104]", "[::ffff:0:0/96]"] {
            let mut path = parse(&format!("[::]:1:vxlan:allow={allow}")).unwrap();
            path.addr.set_port(0);
            let mut src = Source::open_path(path, &config(kind)).unwrap();
            let port = src.local_addr().unwrap().port();
            let _tx = send_all(([127, 0, 0, 1], port).into(), &[datagram(), datagram()]);
            let got = collect(&mut src, 2, Duration::from_secs(5));
            let s = src.stats();
            assert_eq!(
                (got.len(), s.rejected_total()),
                (2, 0),
                "{kind:?} {allow}: an IPv4 sender to [::]"
            );
            assert_accounted(&mut src);
        }
    }
}

fn datagram() -> Vec<u8> {
    let mut d = Vec::new();
    Encoder::new(Encap::Vxlan).encode(&eth_frame(1, 50), LinkType::En10Mb, &mut d);
    d
}

#[test]
fn senders_off_the_list_are_rejected_and_counted() {
    for kind in receivers() {
        for (listen, allow, delivered) in [
            ("127.0.0.1", "allow=127.0.0.0/8", true),
            ("127.0.0.1", "allow=10.0.0.0/8,[fd00::/8]", false),
            ("[::1]", "allow=[::1]", true),
            ("[::1]", "allow=127.0.0.1,[fd00::/8]", false),
        ] {
            // As in Zeek, which asks for no sender addresses: allow= gets
            // them anyway.
            let mut path = parse(&format!("{listen}:1:vxlan:{allow}")).unwrap();
            path.addr.set_port(0);
            let cfg = Config {
                peer_addresses: false,
                ..config(kind)
            };
            let mut src = Source::open_path(path, &cfg).unwrap();
            let _tx = send_all(src.local_addr().unwrap(), &[datagram(), datagram()]);
            let got = collect(&mut src, 2, Duration::from_secs(5));
            let what = format!("{kind:?} {listen} {allow}");
            let s = src.stats();
            assert_eq!(s.received, 2, "{what}");
            if delivered {
                assert_eq!((got.len(), s.rejected_total()), (2, 0), "{what}");
            } else {
                assert!(got.is_empty(), "{what}: nothing delivered");
                assert_eq!(s.rejected_for(Reject::SourceNotAllowed), 2, "{what}");
            }
            assert_accounted(&mut src);
        }
    }
}

#[test]
fn sender_addresses_only_when_asked_for() {
    for kind in receivers() {
        for asked in [true, false] {
            let mut path = parse("127.0.0.1:1:vxlan").unwrap();
            path.addr.set_port(0);
            let cfg = Config {
                peer_addresses: asked,
                ..config(kind)
            };
            let mut src = Source::open_path(path, &cfg).unwrap();
            let _tx = send_all(src.local_addr().unwrap(), &[datagram()]);
            wait_readable(src.wait_fd(), 1000);
            let packet = src.next_packet().unwrap().expect("a packet");
            let peer = packet.peer;
            assert_eq!(peer.is_some(), asked, "{kind:?}: {peer:?}");
            if let Some(peer) = peer {
                assert!(peer.ip().is_loopback(), "{kind:?}: {peer}");
            }
        }
    }
}
