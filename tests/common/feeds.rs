//! Mirror feeds built from a real trace, for dedup and reorder (issue 12):
//! copies a hop later via another VNI, ACKs moved before their data, and
//! checkers that read the result with etherparse (not the code under test).

use std::path::Path;

use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Encap, LinkType};

/// Beside the checkout, where the project's shared traces live.
pub const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/traces/vxlan-encapsulated-http.pcap"
);

/// The inner Ethernet frames of the trace, or a generated HTTP session.
pub fn session() -> Vec<Vec<u8>> {
    let trace = Path::new(TRACE);
    if !trace.exists() {
        eprintln!("note: no {TRACE}: a generated HTTP session instead");
        return super::http_session();
    }
    super::outer_udp_payloads(trace)
        .into_iter()
        .map(|vxlan| vxlan[8..].to_vec())
        .collect()
}

/// The IP packet of an Ethernet frame with TTL / hop limit and the IPv4
/// header checksum cleared: what two mirror copies have in common.
pub fn normalized(frame: &[u8]) -> Vec<u8> {
    let mut ip = frame[14..].to_vec();
    match ip[0] >> 4 {
        4 => {
            ip[8] = 0;
            ip[10] = 0;
            ip[11] = 0;
        }
        _ => ip[7] = 0,
    }
    ip
}

/// The copy a mirror of the other end takes: a hop later (TTL-1, checksum
/// recomputed) and with that end's MAC addresses.
pub fn far_copy(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..12].copy_from_slice(&[0x02, 0xfa, 0, 0, 0, 1, 0x02, 0xfa, 0, 0, 0, 2]);
    let ip = &mut f[14..];
    if ip[0] >> 4 == 4 {
        ip[8] -= 1;
        let len = usize::from(ip[0] & 0x0f) * 4;
        ip[10..12].fill(0);
        let sum = ip[..len]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        let folded = (folded & 0xffff) + (folded >> 16);
        ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
    } else {
        ip[7] -= 1;
    }
    f
}

/// A TCP segment's endpoints and numbers (etherparse, not the code under test).
pub struct Tcp {
    pub from: (Vec<u8>, u16),
    pub to: (Vec<u8>, u16),
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub end: u32,
}

pub fn tcp(frame: &[u8]) -> Option<Tcp> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = match p.net? {
        etherparse::NetSlice::Ipv4(v4) => (
            v4.header().source().to_vec(),
            v4.header().destination().to_vec(),
        ),
        etherparse::NetSlice::Ipv6(v6) => (
            v6.header().source().to_vec(),
            v6.header().destination().to_vec(),
        ),
        _ => return None,
    };
    let etherparse::TransportSlice::Tcp(t) = p.transport? else {
        return None;
    };
    let space = t.payload().len() as u32 + u32::from(t.syn()) + u32::from(t.fin());
    Some(Tcp {
        from: (src, t.source_port()),
        to: (dst, t.destination_port()),
        seq: t.sequence_number(),
        ack: t.ack().then(|| t.acknowledgment_number()),
        syn: t.syn(),
        end: t.sequence_number().wrapping_add(space),
    })
}

pub fn ahead(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 30
}

/// Packets that acknowledge data of the other direction not delivered
/// before them (or a SYN-ACK before its SYN): what Zeek takes for a gap.
pub fn acks_for_unseen(frames: &[Vec<u8>]) -> usize {
    // (sender, receiver) -> the sequence number after what was delivered.
    type Ends = ((Vec<u8>, u16), (Vec<u8>, u16));
    let mut next: Vec<(Ends, u32)> = Vec::new();
    let mut bad = 0;
    for f in frames {
        let Some(t) = tcp(f) else { continue };
        let other = next
            .iter()
            .find(|((from, to), _)| *from == t.to && *to == t.from)
            .map(|(_, n)| *n);
        bad += usize::from(match (t.ack, other) {
            (Some(ack), Some(n)) => ahead(ack, n),
            (Some(_), None) => t.syn,
            _ => false,
        });
        let ends = (t.from.clone(), t.to.clone());
        match next.iter_mut().find(|(e, _)| *e == ends) {
            Some((_, n)) if ahead(t.end, *n) => *n = t.end,
            Some(_) => {}
            None => next.push((ends, t.end)),
        }
    }
    bad
}

/// The trace's order with each ACK of a data segment moved before that
/// segment, where no packet of its own direction lies between (a
/// direction's own order never changes); and how many were moved.
pub fn acks_first(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let mut order: Vec<Vec<u8>> = frames.to_vec();
    let mut moved = 0;
    let mut i = 0;
    while i < order.len() {
        let Some(data) = tcp(&order[i]).filter(|t| t.end != t.seq && !t.syn) else {
            i += 1;
            continue;
        };
        let reply =
            (i + 1..order.len()).find(|&j| tcp(&order[j]).is_some_and(|t| t.from != data.from));
        let Some(j) = reply else {
            i += 1;
            continue;
        };
        let acks = tcp(&order[j])
            .and_then(|t| t.ack)
            .is_some_and(|a| !ahead(data.end, a) && ahead(a, data.seq));
        if acks {
            let ack = order.remove(j);
            order.insert(i, ack);
            moved += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    (order, moved)
}

/// A datagram to send: which sender, what bytes.
pub type Send = (usize, Vec<u8>);

pub fn vxlan(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new(Encap::Vxlan);
    enc.vxlan_vni = vni;
    let mut out = Vec::new();
    enc.encode(frame, LinkType::En10Mb, &mut out);
    out
}

/// Every frame once, in VNI 1, from sender `sender_of(frame)`.
pub fn once(frames: &[Vec<u8>], sender_of: impl Fn(&[u8]) -> usize) -> Vec<Send> {
    frames.iter().map(|f| (sender_of(f), vxlan(1, f))).collect()
}

/// Every frame twice: sender 0 (VNI 1) and sender 1 (VNI 2, the far copy),
/// the far copy first every third time. `sender_of` adds a sender offset
/// per frame (for the two directions of (c)).
pub fn doubled(frames: &[Vec<u8>], sender_of: impl Fn(&[u8]) -> usize) -> Vec<Send> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let base = sender_of(f) * 2;
        let near = (base, vxlan(1, f));
        let far = (base + 1, vxlan(2, &far_copy(f)));
        match i % 3 == 1 {
            true => out.extend([far, near]),
            false => out.extend([near, far]),
        }
    }
    out
}

/// Client (the SYN's sender, by address) 0, server 1.
pub fn direction(frames: &[Vec<u8>]) -> impl Fn(&[u8]) -> usize + Copy {
    let client = frames
        .iter()
        .find_map(|f| tcp(f).filter(|t| t.syn && t.ack.is_none()))
        .map(|t| t.from.0);
    let client = client.and_then(|ip| <[u8; 4]>::try_from(ip).ok());
    move |f: &[u8]| usize::from(tcp(f).and_then(|t| <[u8; 4]>::try_from(t.from.0).ok()) != client)
}

/// The session with the client on another port: another connection.
pub fn with_client_port(frames: &[Vec<u8>], port: u16) -> Vec<Vec<u8>> {
    let dir = direction(frames);
    frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            assert_eq!(f[14] >> 4, 4, "an IPv4 session");
            let tcp_at = 14 + usize::from(f[14] & 0x0f) * 4;
            // The client's source port, or the server's destination port.
            let at = tcp_at + 2 * dir(&f);
            f[at..at + 2].copy_from_slice(&port.to_be_bytes());
            f
        })
        .collect()
}

/// The four connections of [`messy_feed`] as the trace has them (client
/// ports 41000 to 41003), in the feed's order.
pub fn messy_sessions(frames: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    (41000..41004)
        .map(|port| with_client_port(frames, port))
        .collect()
}

/// A feed that needs both options: every packet twice and ACKs before
/// their data, over four connections ([`messy_sessions`]), so the feed
/// check sees enough to advise.
pub fn messy_feed(frames: &[Vec<u8>]) -> Vec<Send> {
    let dir = direction(frames);
    let mut sends = Vec::new();
    for session in messy_sessions(frames) {
        let (order, _) = acks_first(&session);
        sends.extend(doubled(&order, dir));
    }
    sends
}

/// [`normalized`] of each.
pub fn norm_all(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames.iter().map(|f| normalized(f)).collect()
}
