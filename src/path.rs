//! The interface path: what follows `udp::` in `zeek -i udp::...`.
//!
//! Grammar: `<addr>:<port>[:<option>]*`, where `<addr>` is an IPv4 address or
//! a bracketed IPv6 address (optionally with a `%zone`), and each option is a
//! keyword or `key=value`. Options are separated by `:`; a colon inside `[...]`
//! does not separate, so later options can carry IPv6 values.
//!
//! Everything the C++ plugin zeek/zeek-packet-source-udp accepts is accepted
//! with the same meaning. Keywords are matched case-insensitively.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use crate::allow::Cidr;
use crate::link::LinkType;

/// How the UDP payload wraps the packet that Zeek should see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// RFC 7348 VXLAN: 8-byte header, Ethernet inside.
    Vxlan,
    /// RFC 8926 GENEVE: header plus options; the protocol type says what follows.
    Geneve,
    /// GENEVE carrying IP/UDP/VXLAN, as AWS GWLB delivers VPC Traffic Mirroring.
    GeneveVxlan,
    /// The UDP payload is the packet (same as `skip=0`).
    Raw,
    /// Drop this many leading bytes of the UDP payload.
    Skip(u16),
}

impl Encap {
    /// The token that selects this encapsulation in a path.
    pub fn token(&self) -> String {
        match self {
            Encap::Vxlan => "vxlan".into(),
            Encap::Geneve => "geneve".into(),
            Encap::GeneveVxlan => "geneve+vxlan".into(),
            Encap::Raw => "raw".into(),
            Encap::Skip(n) => format!("skip={n}"),
        }
    }
}

impl Encap {
    /// Parses an encapsulation token (`vxlan`, `geneve`, `geneve+vxlan`,
    /// `raw`, `skip=<N>`), case-insensitively.
    pub fn parse_token(tok: &str) -> Option<Encap> {
        let lower = tok.to_ascii_lowercase();
        match lower.as_str() {
            "vxlan" => Some(Encap::Vxlan),
            "geneve" => Some(Encap::Geneve),
            "geneve+vxlan" => Some(Encap::GeneveVxlan),
            "raw" => Some(Encap::Raw),
            _ => lower
                .strip_prefix("skip=")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(Encap::Skip),
        }
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

/// A parsed interface path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePath {
    /// The address and port to bind.
    pub addr: SocketAddr,
    /// The tunnel encapsulation to strip.
    pub encap: Encap,
    /// The link type of the inner packet (GENEVE may override it per packet).
    pub link_type: LinkType,
    /// `allow=`: the only senders accepted; empty accepts everyone.
    pub allow: Vec<Cidr>,
    /// `workers=N`: spread flows over the N sockets sharing the port by the
    /// inner packet's flow (see [`crate::balance`]).
    pub workers: Option<u32>,
    /// `dedup[=<window>]`: suppress later copies of an inner packet within
    /// this window (see [`crate::tap`]).
    pub dedup: Option<Duration>,
    /// `reorder[=<window>]`: repair reordering within this window (see
    /// [`crate::tap`]).
    pub reorder: Option<Duration>,
}

/// A path that could not be parsed. The message names the offending token
/// and says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid path '{}': {problem}", shown(.path))]
pub struct PathError {
    /// The whole path as given.
    pub path: String,
    /// What was wrong with it.
    pub problem: String,
}

const ENCAPS: &str = "vxlan, geneve, geneve+vxlan, raw or skip=<N>";
const EXAMPLE: &str = "e.g. udp::0.0.0.0:4789:vxlan or udp::[::1]:6081:geneve:dlt=raw";

/// The prefixes the plugin registers (`zeek -i udp::...` or
/// `zeek -i udptunnel::...`); Zeek strips them, people may not.
pub const PREFIXES: [&str; 2] = ["udp", "udptunnel"];

/// A path or token as a message may show it: control and bidi characters,
/// quotes and backslashes escaped, so the message stays one line and reads
/// as what was given. Every message that echoes input goes through here.
pub fn shown(text: &str) -> String {
    text.escape_debug().to_string()
}

/// Parses a path, with or without a `udp::` or `udptunnel::` prefix.
pub fn parse(path: &str) -> Result<SourcePath, PathError> {
    strip_prefix(path)
        .and_then(parse_body)
        .map_err(|problem| PathError {
            path: path.to_string(),
            problem,
        })
}

fn strip_prefix(path: &str) -> Result<&str, String> {
    if let Some((prefix, body)) = path.split_once("::") {
        if PREFIXES.iter().any(|p| p.eq_ignore_ascii_case(prefix)) {
            return Ok(body);
        }
        if is_prefix_word(prefix) {
            return Err(format!(
                "unknown prefix '{}::': expected udp:: or udptunnel:: (or none), {EXAMPLE}",
                shown(prefix)
            ));
        }
    }
    // `udp:127.0.0.1:4789`: a word, one colon, then an address.
    if let Some((word, rest)) = path.split_once(':') {
        let address_follows = rest.starts_with('[')
            || rest
                .split_once(':')
                .is_some_and(|(a, _)| a.parse::<Ipv4Addr>().is_ok());
        if is_prefix_word(word) && address_follows {
            return Err(format!(
                "prefix '{}:' is not udp:: or udptunnel:: (a prefix ends in two colons), {EXAMPLE}",
                shown(word)
            ));
        }
    }
    Ok(path)
}

/// Looks like a prefix, not an address: a word with a letter that is no
/// hex digit (so `fd00` in an unbracketed IPv6 address is not one).
fn is_prefix_word(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && word.bytes().any(|b| !b.is_ascii_hexdigit())
}

fn parse_body(body: &str) -> Result<SourcePath, String> {
    if body.is_empty() {
        return Err(format!(
            "empty path: expected <addr>:<port>[:<option>...], {EXAMPLE}"
        ));
    }
    let (ip, rest) = split_addr(body)?;
    let (port_tok, opts) = match rest.split_once(':') {
        Some((p, o)) => (p, Some(o)),
        None => (rest, None),
    };
    let port = parse_port(port_tok)?;
    let addr = match ip {
        Host::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
        Host::V6(ip, scope) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)),
    };
    let mut options = Options::default();
    if let Some(opts) = opts {
        let tokens = split_options(opts);
        for (i, tok) in tokens.iter().enumerate() {
            options
                .apply(tok)
                .map_err(|e| unbracketed_allow(tok, &tokens[i + 1..]).unwrap_or(e))?;
        }
    }
    let allow = options.allow.unwrap_or_default();
    check_allow_can_match(addr, &allow)?;
    Ok(SourcePath {
        addr,
        encap: options.encap.unwrap_or(Encap::Vxlan),
        link_type: options.link_type.unwrap_or(LinkType::En10Mb),
        allow,
        workers: options.workers,
        dedup: options.dedup,
        reorder: options.reorder,
    })
}

/// `allow=::1` or `allow=fd00::/8`: the option split at the address's
/// colons. If the value with the options after it reads as an allow list,
/// say so, rather than complaining about the pieces.
fn unbracketed_allow(tok: &str, after: &[&str]) -> Option<String> {
    let (key, value) = tok.split_once('=')?;
    if !key.eq_ignore_ascii_case("allow") {
        return None;
    }
    let mut candidate = value.to_string();
    let mut found = None;
    for next in after {
        candidate.push(':');
        candidate.push_str(next);
        if crate::allow::parse_list(&candidate).is_ok() {
            found = Some(candidate.clone());
        }
    }
    let list: Vec<String> = found?
        .split(',')
        .map(|item| match item.contains(':') {
            true => format!("[{item}]"),
            false => item.to_string(),
        })
        .collect();
    Some(format!(
        "IPv6 addresses in allow= go in brackets, since ':' separates options: expected allow={}",
        shown(&list.join(","))
    ))
}

/// Refuses an allow list none of whose entries can hold a sender to
/// `addr`: an IPv4 listener hears IPv4 senders only, an IPv6 one bound to
/// a specific address IPv6 only, `[::]` both (its IPv4 senders are
/// matched as IPv4; see [`Cidr::contains`]).
fn check_allow_can_match(addr: SocketAddr, allow: &[Cidr]) -> Result<(), String> {
    let (hears_v4, hears_v6) = match addr {
        SocketAddr::V4(_) => (true, false),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (true, true),
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => (true, false),
        SocketAddr::V6(_) => (false, true),
    };
    let can_match = |c: &Cidr| (hears_v4 && c.holds_ipv4()) || (hears_v6 && c.holds_ipv6());
    if allow.is_empty() || allow.iter().any(can_match) {
        return Ok(());
    }
    let (family, other) = if hears_v4 {
        ("IPv4", "an IPv4 prefix")
    } else {
        ("IPv6", "an IPv6 prefix")
    };
    let list: Vec<String> = allow.iter().map(|c| c.to_string()).collect();
    Err(format!(
        "no entry of allow={} can match: a listener on {} hears {family} senders only; list {other}, or listen on [::] for both families",
        list.join(","),
        addr.ip()
    ))
}

/// A listen address before the port is known; IPv6 keeps its zone index.
enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr, u32),
}

/// Splits `<addr>` off the front; returns the address and what follows its `:`.
fn split_addr(body: &str) -> Result<(Host, &str), String> {
    if let Some(after) = body.strip_prefix('[') {
        let Some((inner, rest)) = after.split_once(']') else {
            return Err(format!(
                "IPv6 address '{}' has no closing ']': expected [<ipv6>]:<port>, e.g. [::1]:6081",
                shown(body)
            ));
        };
        let (ip, scope) = parse_v6(inner)?;
        if rest.is_empty() {
            return Err(missing_port(body));
        }
        let Some(rest) = rest.strip_prefix(':') else {
            return Err(format!(
                "unexpected '{}' after IPv6 address '[{}]': expected ':<port>'",
                shown(rest),
                shown(inner)
            ));
        };
        return Ok((Host::V6(ip, scope), rest));
    }
    let Some((addr, rest)) = body.split_once(':') else {
        return Err(missing_port(body));
    };
    match addr.parse::<Ipv4Addr>() {
        Ok(ip) => Ok((Host::V4(ip), rest)),
        Err(_) if addr.parse::<Ipv6Addr>().is_ok() || body.matches(':').count() > 2 => {
            Err(format!(
                "bad IPv4 address '{}': an IPv6 address goes in brackets, e.g. [::1]:6081",
                shown(addr)
            ))
        }
        Err(_) => Err(format!(
            "bad IPv4 address '{}': expected four dotted numbers such as 0.0.0.0 or 127.0.0.1",
            shown(addr)
        )),
    }
}

fn missing_port(body: &str) -> String {
    format!(
        "missing port after '{}': expected <addr>:<port>, {EXAMPLE}",
        shown(body)
    )
}

fn parse_v6(inner: &str) -> Result<(Ipv6Addr, u32), String> {
    let (ip_str, zone) = match inner.split_once('%') {
        Some((ip, zone)) => (ip, Some(zone)),
        None => (inner, None),
    };
    let ip: Ipv6Addr = ip_str.parse().map_err(|_| {
        format!(
            "bad IPv6 address '{}': expected e.g. [::], [::1] or [fe80::1%eth0]",
            shown(inner)
        )
    })?;
    let scope = match zone {
        None => 0,
        Some(zone) => parse_zone(zone, inner)?,
    };
    Ok((ip, scope))
}

fn parse_zone(zone: &str, inner: &str) -> Result<u32, String> {
    if zone.is_empty() {
        return Err(format!(
            "empty zone in IPv6 address '{}': expected an interface name or index after '%'",
            shown(inner)
        ));
    }
    if let Ok(index) = zone.parse::<u32>() {
        return Ok(index);
    }
    let name = std::ffi::CString::new(zone).map_err(|_| {
        format!(
            "bad zone '{}' in IPv6 address '{}'",
            shown(zone),
            shown(inner)
        )
    })?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!(
            "unknown interface '{}' in IPv6 address '{}': expected the name of a local interface (see `ip link`)",
            shown(zone),
            shown(inner)
        ));
    }
    Ok(index)
}

fn parse_port(tok: &str) -> Result<u16, String> {
    let bad = || {
        format!(
            "bad port '{}': expected a number from 1 to 65535",
            shown(tok)
        )
    };
    if tok.is_empty() || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match tok.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(bad()),
    }
}

/// Splits options at `:` outside of brackets.
fn split_options(opts: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in opts.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                out.push(&opts[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&opts[start..]);
    out
}

/// Options seen so far; each kind may appear once.
#[derive(Default)]
struct Options {
    encap: Option<Encap>,
    encap_token: String,
    link_type: Option<LinkType>,
    link_token: String,
    allow: Option<Vec<Cidr>>,
    workers: Option<u32>,
    dedup: Option<Duration>,
    reorder: Option<Duration>,
}

impl Options {
    fn apply(&mut self, tok: &str) -> Result<(), String> {
        let lower = tok.to_ascii_lowercase();
        let t = shown(tok);
        let (key, value) = match lower.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (lower.as_str(), None),
        };
        match (key, value) {
            ("vxlan", None) => self.set_encap(Encap::Vxlan, tok),
            ("geneve", None) => self.set_encap(Encap::Geneve, tok),
            ("geneve+vxlan", None) => self.set_encap(Encap::GeneveVxlan, tok),
            ("raw", None) => self.set_encap(Encap::Raw, tok),
            ("skip", v) => self.set_encap(Encap::Skip(parse_skip(tok, v)?), tok),
            ("dlt", Some(v)) => self.set_link(parse_dlt(tok, v)?, tok),
            ("allow", None | Some("")) => Err(format!(
                "allow list '{t}' without a value: expected e.g. allow=10.0.0.0/8,[fd00::/8]"
            )),
            ("allow", Some(v)) if self.allow.is_some() => Err(format!(
                "duplicate allow list '{t}': give every prefix in one allow=, separated by commas ({})",
                shown(v)
            )),
            ("allow", Some(_)) => {
                // The value keeps its case: addresses are not keywords.
                let value = &tok[tok.find('=').map_or(0, |i| i + 1)..];
                let list =
                    crate::allow::parse_list(value).map_err(|e| format!("bad allow list: {e}"))?;
                self.allow = Some(list);
                Ok(())
            }
            ("workers", Some(v)) if self.workers.is_some() => Err(format!(
                "duplicate worker count '{t}': workers= may appear once ({})",
                shown(v)
            )),
            ("workers", Some(v)) => match v.parse::<u32>() {
                Ok(n @ 1..=1024) if v.bytes().all(|b| b.is_ascii_digit()) => {
                    self.workers = Some(n);
                    Ok(())
                }
                _ => Err(format!(
                    "bad worker count in '{t}': expected workers=<N> with N from 1 to 1024, the number of Zeek workers sharing the port"
                )),
            },
            ("dedup", v) => set_window(&mut self.dedup, "dedup", tok, v),
            ("reorder", v) => set_window(&mut self.reorder, "reorder", tok, v),
            ("dlt", None) => Err(format!(
                "link type '{t}' without a value: expected dlt=en10mb, dlt=raw or dlt=ppp"
            )),
            ("", None) => Err(format!(
                "empty option (a doubled or trailing ':'): expected {ENCAPS} or dlt=<type>"
            )),
            _ => Err(format!(
                "unknown option '{t}': expected {ENCAPS}, dlt=en10mb|raw|ppp, allow=<prefixes>, workers=<N>, dedup[=<window>] or reorder[=<window>]"
            )),
        }
    }

    fn set_encap(&mut self, encap: Encap, tok: &str) -> Result<(), String> {
        if self.encap.is_some() {
            let t = shown(tok);
            return Err(format!(
                "duplicate encapsulation '{t}': '{}' was already given; use at most one of {ENCAPS}",
                self.encap_token
            ));
        }
        self.encap = Some(encap);
        self.encap_token = shown(tok);
        Ok(())
    }

    fn set_link(&mut self, link: LinkType, tok: &str) -> Result<(), String> {
        if self.link_type.is_some() {
            let t = shown(tok);
            return Err(format!(
                "duplicate link type '{t}': '{}' was already given; use at most one dlt=",
                self.link_token
            ));
        }
        self.link_type = Some(link);
        self.link_token = shown(tok);
        Ok(())
    }
}

/// The longest window `dedup=` and `reorder=` take: beyond it dedup would
/// swallow genuine retransmissions (a retransmission timeout is 200 ms or
/// more) and reorder would hold packets for longer than any mirror skews them.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);

fn set_window(
    slot: &mut Option<Duration>,
    name: &str,
    tok: &str,
    value: Option<&str>,
) -> Result<(), String> {
    let t = shown(tok);
    if slot.is_some() {
        return Err(format!("duplicate option '{t}': {name} may appear once"));
    }
    let window = match value {
        None => crate::tap::default_window(name),
        Some(v) => parse_window(v).map_err(|why| {
            format!(
                "bad window in '{t}': {why}; expected {name}=<number><unit> with unit us, ms or s, from 1us to 1s, e.g. {name}=500us (or a bare {name} for the default)"
            )
        })?,
    };
    *slot = Some(window);
    Ok(())
}

/// `500us`, `1ms`, `0.5ms`, `1s`: a whole number of microseconds from 1 µs
/// to [`MAX_WINDOW`].
pub fn parse_window(value: &str) -> Result<Duration, String> {
    if value.is_empty() {
        return Err("the window is empty".into());
    }
    let digits_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("'{}' does not start with a number", shown(value)));
    }
    let scale_ns: u64 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "" => return Err("the unit is missing".into()),
        _ => return Err(format!("unknown unit '{}'", shown(unit))),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 9 {
        return Err(format!("'{}' is not a number", shown(number)));
    }
    // Whole part capped well above the largest valid window, so no overflow.
    let whole: u64 = whole.parse::<u64>().unwrap_or(u64::MAX).min(1 << 20);
    let frac_ns = match frac.is_empty() {
        true => 0,
        // frac has at most 9 digits: as nanoseconds of the unit, then scaled.
        false => {
            let padded = format!("{frac:0<9}");
            padded.parse::<u64>().unwrap_or(0) * scale_ns / 1_000_000_000
        }
    };
    let ns = whole * scale_ns + frac_ns;
    if ns % 1_000 != 0 {
        return Err("windows are whole microseconds".into());
    }
    let window = Duration::from_nanos(ns);
    if window.is_zero() {
        return Err("a window of 0 turns nothing on (leave the option out instead)".into());
    }
    if window > MAX_WINDOW {
        return Err("longer than 1s".into());
    }
    Ok(window)
}

/// A window as a path writes it: `1s`, `5ms` or `500us`.
pub fn window_token(window: Duration) -> String {
    let us = window.as_micros();
    match us {
        _ if us % 1_000_000 == 0 => format!("{}s", us / 1_000_000),
        _ if us % 1_000 == 0 => format!("{}ms", us / 1_000),
        _ => format!("{us}us"),
    }
}

fn parse_skip(tok: &str, value: Option<&str>) -> Result<u16, String> {
    let t = shown(tok);
    let digits = value.unwrap_or_default();
    if digits.is_empty() {
        return Err(format!(
            "skip without a number in '{t}': expected skip=<N> with N from 0 to 65535, e.g. skip=8"
        ));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad skip count '{}' in '{t}': expected skip=<N> with N a whole number from 0 to 65535, e.g. skip=8",
            shown(digits)
        ));
    }
    digits.parse::<u16>().map_err(|_| {
        format!("skip count in '{t}' is larger than any datagram: expected N from 0 to 65535")
    })
}

fn parse_dlt(tok: &str, value: &str) -> Result<LinkType, String> {
    let t = shown(tok);
    match value {
        "en10mb" => Ok(LinkType::En10Mb),
        "raw" => Ok(LinkType::Raw),
        "ppp" => Ok(LinkType::Ppp),
        _ => Err(format!(
            "unknown link type '{t}': expected dlt=en10mb, dlt=raw or dlt=ppp"
        )),
    }
}

impl fmt::Display for SourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (addr, encap, dlt) = (self.addr, self.encap, self.link_type.token());
        write!(f, "{addr}:{encap}:dlt={dlt}")?;
        if !self.allow.is_empty() {
            let list: Vec<String> = self.allow.iter().map(|c| c.to_string()).collect();
            write!(f, ":allow={}", list.join(","))?;
        }
        if let Some(n) = self.workers {
            write!(f, ":workers={n}")?;
        }
        if let Some(w) = self.dedup {
            write!(f, ":dedup={}", window_token(w))?;
        }
        if let Some(w) = self.reorder {
            write!(f, ":reorder={}", window_token(w))?;
        }
        Ok(())
    }
}
