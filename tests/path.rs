//! The path grammar: every path the C++ plugin accepts, with the same
//! meaning, and one clear error per malformed path.

use std::net::SocketAddr;

use zeek_udp_source::path::parse;
use zeek_udp_source::{Encap, LinkType};

fn ok(path: &str) -> (SocketAddr, Encap, LinkType) {
    let p = parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (p.addr, p.encap, p.link_type)
}

#[test]
fn good_paths() {
    use Encap::{Geneve, GeneveVxlan, Skip, Vxlan};
    use LinkType::{En10Mb, Ppp};
    let raw_dlt = LinkType::Raw;
    let table: &[(&str, &str, Encap, LinkType)] = &[
        ("127.0.0.1:4789", "127.0.0.1:4789", Vxlan, En10Mb),
        ("udp::127.0.0.1:4789", "127.0.0.1:4789", Vxlan, En10Mb),
        ("0.0.0.0:4789:vxlan", "0.0.0.0:4789", Vxlan, En10Mb),
        ("[::1]:6081:geneve", "[::1]:6081", Geneve, En10Mb),
        ("[::1]:6081:geneve:dlt=raw", "[::1]:6081", Geneve, raw_dlt),
        ("[::]:6081:geneve+vxlan", "[::]:6081", GeneveVxlan, En10Mb),
        ("[::1]:4711:dlt=raw", "[::1]:4711", Vxlan, raw_dlt),
        ("[::1]:4711:raw:dlt=raw", "[::1]:4711", Encap::Raw, raw_dlt),
        ("[::1]:4711:skip=13:dlt=ppp", "[::1]:4711", Skip(13), Ppp),
        ("10.1.2.3:65535:skip=0", "10.1.2.3:65535", Skip(0), En10Mb),
        ("127.0.0.1:1:dlt=en10mb:vxlan", "127.0.0.1:1", Vxlan, En10Mb),
        (
            "127.0.0.1:4789:VXLAN:DLT=RAW",
            "127.0.0.1:4789",
            Vxlan,
            raw_dlt,
        ),
        ("UDP::127.0.0.1:4789", "127.0.0.1:4789", Vxlan, En10Mb),
        ("udptunnel::127.0.0.1:4789", "127.0.0.1:4789", Vxlan, En10Mb),
        ("UDPTunnel::[::1]:6081:geneve", "[::1]:6081", Geneve, En10Mb),
    ];
    for (path, addr, encap, link) in table {
        assert_eq!(ok(path), (addr.parse().unwrap(), *encap, *link), "{path}");
    }
}

#[test]
fn ipv6_zone_by_name_and_index() {
    let (addr, _, _) = ok("[fe80::1%lo]:4789");
    let SocketAddr::V6(v6) = addr else {
        panic!("not v6")
    };
    assert_ne!(v6.scope_id(), 0, "lo resolves to its interface index");
    let (addr, _, _) = ok("[fe80::1%7]:4789");
    let SocketAddr::V6(v6) = addr else {
        panic!("not v6")
    };
    assert_eq!(v6.scope_id(), 7);
}

#[test]
fn bad_paths_name_the_token_and_what_was_expected() {
    let table: &[(&str, &str)] = &[
        ("", "empty path: expected <addr>:<port>[:<option>...]"),
        (
            "127.0.0.1",
            "missing port after '127.0.0.1': expected <addr>:<port>",
        ),
        (
            "127.0.0.1:",
            "bad port '': expected a number from 1 to 65535",
        ),
        (
            "[::1]",
            "missing port after '[::1]': expected <addr>:<port>",
        ),
        ("[::1]:", "bad port '': expected a number from 1 to 65535"),
        (
            "[::1]:-1",
            "bad port '-1': expected a number from 1 to 65535",
        ),
        ("[::1]:0", "bad port '0': expected a number from 1 to 65535"),
        (
            "[::1]:65536",
            "bad port '65536': expected a number from 1 to 65535",
        ),
        (
            "127.0.0.1:http",
            "bad port 'http': expected a number from 1 to 65535",
        ),
        (
            "192.168.300:1:4711",
            "bad IPv4 address '192.168.300': expected four dotted numbers",
        ),
        (
            "::1:4789",
            "bad IPv4 address '': an IPv6 address goes in brackets",
        ),
        (
            "[scramble]:4711",
            "bad IPv6 address 'scramble': expected e.g. [::], [::1]",
        ),
        ("[::1:4711", "IPv6 address '[::1:4711' has no closing ']'"),
        (
            "[::1]4711",
            "unexpected '4711' after IPv6 address '[::1]': expected ':<port>'",
        ),
        (
            "[fe80::1%nosuchif0]:4789",
            "unknown interface 'nosuchif0' in IPv6 address 'fe80::1%nosuchif0'",
        ),
        ("[fe80::1%]:4789", "empty zone in IPv6 address 'fe80::1%'"),
        (
            "[::1]:4879:vxlan:geneve",
            "duplicate encapsulation 'geneve': 'vxlan' was already given",
        ),
        (
            "[::1]:4879:skip=0:skip=4",
            "duplicate encapsulation 'skip=4': 'skip=0' was already given",
        ),
        (
            "[::1]:4879:raw:geneve+vxlan",
            "duplicate encapsulation 'geneve+vxlan': 'raw' was already given",
        ),
        (
            "[::1]:4879:dlt=raw:dlt=en10mb",
            "duplicate link type 'dlt=en10mb': 'dlt=raw' was already given",
        ),
        (
            "127.0.0.1:4789:foo",
            "unknown option 'foo': expected vxlan, geneve, geneve+vxlan, raw or skip=<N>, dlt=en10mb|raw|ppp, allow=<prefixes>, workers=<N>, dedup[=<window>] or reorder[=<window>]",
        ),
        (
            "127.0.0.1:4789:skip",
            "skip without a number in 'skip': expected skip=<N>",
        ),
        (
            "127.0.0.1:4789:skip=",
            "skip without a number in 'skip=': expected skip=<N>",
        ),
        (
            "127.0.0.1:4789:skip=x1",
            "bad skip count 'x1' in 'skip=x1': expected skip=<N> with N a whole number from 0 to 65535",
        ),
        (
            "127.0.0.1:4789:skip=-1",
            "bad skip count '-1' in 'skip=-1': expected skip=<N> with N a whole number from 0 to 65535",
        ),
        (
            "tcp::127.0.0.1:4789",
            "unknown prefix 'tcp::': expected udp:: or udptunnel:: (or none)",
        ),
        (
            "udp:127.0.0.1:4789",
            "prefix 'udp:' is not udp:: or udptunnel:: (a prefix ends in two colons)",
        ),
        (
            "udptunnel:[::1]:4789",
            "prefix 'udptunnel:' is not udp:: or udptunnel::",
        ),
        (
            "localhost:4789",
            "bad IPv4 address 'localhost': expected four dotted numbers",
        ),
        (
            "fd00::1:4789",
            "bad IPv4 address 'fd00': an IPv6 address goes in brackets",
        ),
        (
            "127.0.0.1:4789:skip=70000",
            "skip count in 'skip=70000' is larger than any datagram",
        ),
        (
            "127.0.0.1:4789:dlt=fddi",
            "unknown link type 'dlt=fddi': expected dlt=en10mb, dlt=raw or dlt=ppp",
        ),
        ("127.0.0.1:4789:dlt", "link type 'dlt' without a value"),
        (
            "127.0.0.1:4789::vxlan",
            "empty option (a doubled or trailing ':')",
        ),
        (
            "127.0.0.1:4789:vxlan:",
            "empty option (a doubled or trailing ':')",
        ),
    ];
    for (path, want) in table {
        let err = parse(path).expect_err(path).to_string();
        let prefix = format!("invalid path '{path}': {want}");
        assert!(
            err.starts_with(&prefix),
            "{path}:\n got  {err}\n want {prefix}..."
        );
    }
}

#[test]
fn messages_escape_what_they_echo() {
    for (path, want) in [
        (
            "127.0.0.1:4789:vx\nlan",
            "invalid path '127.0.0.1:4789:vx\\nlan': unknown option 'vx\\nlan'",
        ),
        (
            "127.0.0.1:4789:vxlan\u{202e}nal",
            "unknown option 'vxlan\\u{202e}nal'",
        ),
        (
            "10.0.0.1\u{2066}:4789",
            "bad IPv4 address '10.0.0.1\\u{2066}'",
        ),
        (
            "[::1]:4789:allow=1'2",
            "'1\\'2' is not an address or prefix",
        ),
        ("[::1]:4789:skip=\t", "bad skip count '\\t'"),
        (
            "t\rcp::127.0.0.1:4789",
            "invalid path 't\\rcp::127.0.0.1:4789'",
        ),
    ] {
        let err = parse(path).expect_err(path).to_string();
        assert!(err.contains(want), "{path:?}:\n got  {err}\n want {want}");
        assert!(
            !err.chars().any(|c| c.is_control()
                || ('\u{2066}'..='\u{2069}').contains(&c)
                || c == '\u{202e}'),
            "{path:?}: {err:?}"
        );
    }
}

#[test]
fn dedup_and_reorder_take_a_window_or_the_default() {
    use std::time::Duration;
    use zeek_udp_source::tap::{DEFAULT_DEDUP_WINDOW, DEFAULT_REORDER_WINDOW};
    let us = Duration::from_micros;
    for (path, dedup, reorder) in [
        ("127.0.0.1:4789", None, None),
        ("127.0.0.1:4789:dedup", Some(DEFAULT_DEDUP_WINDOW), None),
        ("127.0.0.1:4789:reorder", None, Some(DEFAULT_REORDER_WINDOW)),
        ("127.0.0.1:4789:dedup=500us", Some(us(500)), None),
        (
            "127.0.0.1:4789:DEDUP=2MS:Reorder=1s",
            Some(us(2000)),
            Some(us(1_000_000)),
        ),
        ("127.0.0.1:4789:reorder=0.25ms:vxlan", None, Some(us(250))),
    ] {
        let p = parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((p.dedup, p.reorder), (dedup, reorder), "{path}");
        // What Display writes parses back to the same path.
        let again = parse(&p.to_string()).unwrap();
        assert_eq!(again, p, "{path} -> {p}");
    }
    let p = parse("127.0.0.1:4789:dedup=1500us:reorder=2ms").unwrap();
    assert_eq!(
        p.to_string(),
        "127.0.0.1:4789:vxlan:dlt=en10mb:dedup=1500us:reorder=2ms"
    );
}

#[test]
fn bad_windows_say_what_a_window_is() {
    let expected = "expected dedup=<number><unit> with unit us, ms or s, from 1us to 1s, e.g. dedup=500us (or a bare dedup for the default)";
    for (path, want) in [
        (
            "127.0.0.1:4789:dedup=",
            "bad window in 'dedup=': the window is empty",
        ),
        (
            "127.0.0.1:4789:dedup=500",
            "bad window in 'dedup=500': the unit is missing",
        ),
        (
            "127.0.0.1:4789:dedup=5m",
            "bad window in 'dedup=5m': unknown unit 'm'",
        ),
        (
            "127.0.0.1:4789:dedup=ms",
            "bad window in 'dedup=ms': 'ms' does not start with a number",
        ),
        (
            "127.0.0.1:4789:dedup=1.2.3ms",
            "bad window in 'dedup=1.2.3ms': '1.2.3' is not a number",
        ),
        (
            "127.0.0.1:4789:dedup=0us",
            "bad window in 'dedup=0us': a window of 0 turns nothing on",
        ),
        (
            "127.0.0.1:4789:dedup=2s",
            "bad window in 'dedup=2s': longer than 1s",
        ),
        (
            "127.0.0.1:4789:dedup=99999999999999999999s",
            "longer than 1s",
        ),
        (
            "127.0.0.1:4789:dedup=0.0005ms",
            "windows are whole microseconds",
        ),
        (
            "127.0.0.1:4789:dedup:dedup=1ms",
            "duplicate option 'dedup=1ms': dedup may appear once",
        ),
        (
            "127.0.0.1:4789:reorder=-1ms",
            "bad window in 'reorder=-1ms': '-1ms' does not start with a number; expected reorder=<number><unit>",
        ),
    ] {
        let err = parse(path).expect_err(path).to_string();
        assert!(err.contains(want), "{path}:\n got  {err}\n want {want}");
        if want.starts_with("bad window in 'dedup") {
            assert!(err.ends_with(expected), "{path}: {err}");
        }
    }
    // Echoed input is escaped.
    let err = parse("127.0.0.1:4789:dedup=1\u{202e}ms")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'dedup=1\\u{202e}ms'"), "{err}");
    assert!(!err.contains('\u{202e}'), "{err}");
}
