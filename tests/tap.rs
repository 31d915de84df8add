//! A clean tap from a messy mirror (issue 12), end to end at socket
//! level: feeds built deterministically from a real trace (the inner
//! packets of vxlan-encapsulated-http.pcap, or a generated HTTP session
//! where the trace is absent), sent over loopback so that the kernel's
//! timestamps follow the order of the sends.
//!
//! (a) every packet twice, via VNI 1 and VNI 2 from two senders, the VNI 2
//!     copy with TTL-1 and other MAC addresses, and every third time first;
//! (b) the two directions from two senders, each ACK of a data segment
//!     sent before that segment;
//! (c) both at once.
//!
//! Each has a positive control: without the option the output differs.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{receivers, skipped};
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Encap, LinkType, ReceiverKind, Source, Stats};

const TRACE: &str = "/work/shared/traces/vxlan-encapsulated-http.pcap";

/// The windows the tests use. Copies and ACKs are sent back to back, so
/// they arrive microseconds apart; but a loaded machine can preempt the
/// sending thread between two sends for milliseconds, and the kernel
/// stamps each datagram when it is sent. A window far above any such pause
/// keeps the tests deterministic; what the defaults do is tested in the
/// unit tests with timestamps made up.
const WINDOW: &str = "100ms";

/// The inner Ethernet frames of the trace, or a generated HTTP session.
fn session() -> Vec<Vec<u8>> {
    let trace = Path::new(TRACE);
    if !trace.exists() {
        skipped(
            "tap (trace)",
            "no vxlan-encapsulated-http.pcap: a generated session instead",
        );
        return common::http_session();
    }
    common::outer_udp_payloads(trace)
        .into_iter()
        .map(|vxlan| vxlan[8..].to_vec())
        .collect()
}

/// The IP packet of an Ethernet frame with TTL / hop limit and the IPv4
/// header checksum cleared: what two mirror copies have in common.
fn normalized(frame: &[u8]) -> Vec<u8> {
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
fn far_copy(frame: &[u8]) -> Vec<u8> {
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
struct Tcp {
    from: (Vec<u8>, u16),
    to: (Vec<u8>, u16),
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    end: u32,
}

fn tcp(frame: &[u8]) -> Option<Tcp> {
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

fn ahead(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 30
}

/// Packets that acknowledge data of the other direction not delivered
/// before them (or a SYN-ACK before its SYN): what Zeek takes for a gap.
fn acks_for_unseen(frames: &[Vec<u8>]) -> usize {
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
fn acks_first(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
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
type Send = (usize, Vec<u8>);

fn vxlan(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new(Encap::Vxlan);
    enc.vxlan_vni = vni;
    let mut out = Vec::new();
    enc.encode(frame, LinkType::En10Mb, &mut out);
    out
}

/// Every frame twice: sender 0 (VNI 1) and sender 1 (VNI 2, the far copy),
/// the far copy first every third time. `sender_of` adds a sender offset
/// per frame (for the two directions of (c)).
fn doubled(frames: &[Vec<u8>], sender_of: impl Fn(&[u8]) -> usize) -> Vec<Send> {
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
fn direction(frames: &[Vec<u8>]) -> impl Fn(&[u8]) -> usize + Copy {
    let client = frames
        .iter()
        .find_map(|f| tcp(f).filter(|t| t.syn && t.ack.is_none()))
        .map(|t| t.from.0);
    let client = client.and_then(|ip| <[u8; 4]>::try_from(ip).ok());
    move |f: &[u8]| usize::from(tcp(f).and_then(|t| <[u8; 4]>::try_from(t.from.0).ok()) != client)
}

/// Opens a source on an ephemeral loopback port with these options.
fn open(kind: ReceiverKind, options: &str) -> Source {
    common::open(kind, "127.0.0.1", options)
}

/// Sends in order, each datagram from its sender's own socket.
fn send(to: SocketAddr, sends: &[Send]) {
    let senders: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (who, d) in sends {
        senders[*who].send_to(d, to).unwrap();
    }
}

/// Reads until every datagram sent is accounted for and nothing is held;
/// held packets come out by the clock once the socket is idle.
fn drain(src: &mut Source, sent: u64) -> (Vec<Vec<u8>>, Stats) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    loop {
        let s = *src.counters();
        if s.received >= sent && s.held == 0 || Instant::now() > deadline {
            break;
        }
        match src.next_packet().unwrap() {
            Some(p) => {
                out.push(p.data.to_vec());
                src.done();
            }
            None => {
                let ms = match src.wait() {
                    zeek_udp_source::Wait::For(d) => d.as_millis().clamp(1, 50) as i32,
                    _ => 50,
                };
                common::wait_readable(src.wait_fd(), ms);
            }
        }
    }
    let s = src.stats();
    assert_eq!(s.received, sent, "every datagram arrived: {s:?}");
    assert_eq!(
        s.received,
        s.delivered + s.rejected_total() + s.deduplicated + s.held,
        "accounting: {s:?}"
    );
    (out, s)
}

fn run(kind: ReceiverKind, options: &str, sends: &[Send]) -> (Vec<Vec<u8>>, Stats) {
    let mut src = open(kind, options);
    send(src.local_addr().unwrap(), sends);
    drain(&mut src, sends.len() as u64)
}

fn norm_all(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames.iter().map(|f| normalized(f)).collect()
}

#[test]
fn a_dedup_delivers_the_trace_once_whatever_vni_ttl_or_which_copy_came_first() {
    let frames = session();
    let n = frames.len() as u64;
    assert!(
        acks_for_unseen(&frames) == 0,
        "the trace itself is in order"
    );
    let sends = doubled(&frames, |_| 0);
    for kind in receivers() {
        let (got, s) = run(kind, &format!("vxlan:dedup={WINDOW}"), &sends);
        assert_eq!(norm_all(&got), norm_all(&frames), "{kind:?}");
        assert_eq!((s.delivered, s.deduplicated), (n, n), "{kind:?}");
        // Positive control: without dedup every packet comes twice.
        let (got, s) = run(kind, "vxlan", &sends);
        assert_eq!((got.len() as u64, s.deduplicated), (2 * n, 0), "{kind:?}");
        assert_ne!(norm_all(&got), norm_all(&frames));
    }
}

#[test]
fn b_reorder_delivers_data_before_its_ack() {
    let frames = session();
    let (sent_order, moved) = acks_first(&frames);
    assert!(moved > 0, "the feed has ACKs before their data");
    let bad = acks_for_unseen(&sent_order);
    assert_eq!(bad, moved, "each moved ACK acknowledges unseen data");
    let dir = direction(&frames);
    let sends: Vec<Send> = sent_order.iter().map(|f| (dir(f), vxlan(1, f))).collect();
    for kind in receivers() {
        let (got, s) = run(kind, &format!("vxlan:reorder={WINDOW}"), &sends);
        assert_eq!(acks_for_unseen(&got), 0, "{kind:?}: data before its ACK");
        assert_eq!(got.len(), frames.len(), "{kind:?}: nothing lost");
        assert_eq!(s.reordered, moved as u64, "{kind:?}");
        assert_same_per_direction(&got, &frames, &dir);
        // Positive control: without reorder Zeek would see the ACKs first.
        let (got, s) = run(kind, "vxlan", &sends);
        assert_eq!(acks_for_unseen(&got), moved, "{kind:?}");
        assert_eq!(s.reordered, 0);
    }
}

#[test]
fn c_dedup_and_reorder_together() {
    let frames = session();
    let n = frames.len() as u64;
    let (sent_order, moved) = acks_first(&frames);
    let dir = direction(&frames);
    let sends = doubled(&sent_order, dir);
    for kind in receivers() {
        let (got, s) = run(
            kind,
            &format!("vxlan:dedup={WINDOW}:reorder={WINDOW}"),
            &sends,
        );
        assert_eq!(acks_for_unseen(&got), 0, "{kind:?}");
        assert_eq!((got.len() as u64, s.deduplicated), (n, n), "{kind:?}");
        assert_eq!(s.reordered, moved as u64, "{kind:?}");
        let mut want = norm_all(&frames);
        let mut have = norm_all(&got);
        want.sort();
        have.sort();
        assert_eq!(have, want, "{kind:?}: the trace's packets, once each");
        assert_same_per_direction(&got, &frames, &dir);
        // Positive control: neither option, both troubles.
        let (got, _) = run(kind, "vxlan", &sends);
        assert_eq!(got.len() as u64, 2 * n);
        assert!(acks_for_unseen(&got) > 0);
    }
}

/// Each direction's packets came out in the trace's order.
fn assert_same_per_direction(got: &[Vec<u8>], want: &[Vec<u8>], dir: &impl Fn(&[u8]) -> usize) {
    for d in 0..2 {
        let pick = |fs: &[Vec<u8>]| -> Vec<Vec<u8>> {
            fs.iter()
                .filter(|f| dir(f) == d)
                .map(|f| normalized(f))
                .collect()
        };
        assert_eq!(pick(got), pick(want), "direction {d}");
    }
}

#[test]
fn a_feed_without_the_options_is_told_what_it_needs() {
    let frames = session();
    let dir = direction(&frames);
    // Copies and early ACKs, over four connections.
    let mut sends = Vec::new();
    for port in 41000..41004 {
        let (order, _) = acks_first(&with_client_port(&frames, port));
        sends.extend(doubled(&order, dir));
    }
    let mut src = open(ReceiverKind::Recvmmsg, "vxlan");
    send(src.local_addr().unwrap(), &sends);
    drain(&mut src, sends.len() as u64);
    let mut advice: Vec<String> = std::iter::from_fn(|| src.advice())
        .map(|a| a.to_string())
        .collect();
    advice.sort();
    assert_eq!(advice.len(), 2, "{advice:?}");
    assert!(advice[0].contains("add :dedup to the path"), "{advice:?}");
    assert!(advice[1].contains("add :reorder to the path"), "{advice:?}");
    // A clean feed says nothing.
    let clean: Vec<Send> = frames.iter().map(|f| (0, vxlan(1, f))).collect();
    let mut src = open(ReceiverKind::Recvmmsg, "vxlan");
    send(src.local_addr().unwrap(), &clean);
    drain(&mut src, clean.len() as u64);
    assert_eq!(src.advice(), None);
}

/// The session with the client on another port: another connection.
fn with_client_port(frames: &[Vec<u8>], port: u16) -> Vec<Vec<u8>> {
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

#[test]
fn with_workers_each_worker_repairs_its_own_connections() {
    let base = session();
    let (_, moved) = acks_first(&base);
    let sessions: Vec<Vec<Vec<u8>>> = (0..8).map(|i| with_client_port(&base, 41000 + i)).collect();
    let side = direction(&base);
    let mut sends = Vec::new();
    for s in &sessions {
        sends.extend(doubled(&acks_first(s).0, side));
    }
    let n = (sessions.len() * base.len()) as u64;
    for kind in receivers() {
        let text = format!(
            "127.0.0.1:{}:vxlan:workers=2:dedup={WINDOW}:reorder={WINDOW}",
            common::unique_port()
        );
        let path = zeek_udp_source::path::parse(&text).unwrap();
        let mut workers: Vec<Source> = (0..2)
            .map(|_| Source::open_path(path.clone(), &common::config(kind)).unwrap())
            .collect();
        send(path.addr, &sends);
        let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 2];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats: Vec<Stats> = workers.iter().map(|w| *w.counters()).collect();
            let received: u64 = stats.iter().map(|s| s.received).sum();
            let held: u64 = stats.iter().map(|s| s.held).sum();
            if received == sends.len() as u64 && held == 0 || Instant::now() > deadline {
                break;
            }
            for (w, src) in workers.iter_mut().enumerate() {
                while let Some(p) = src.next_packet().unwrap() {
                    got[w].push(p.data.to_vec());
                    src.done();
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats: Vec<Stats> = workers.iter_mut().map(Source::stats).collect();
        let sum = |f: fn(&Stats) -> u64| stats.iter().map(f).sum::<u64>();
        assert_eq!(sum(|s| s.received), sends.len() as u64, "{kind:?}");
        assert_eq!(sum(|s| s.delivered), n, "{kind:?}: {stats:?}");
        assert_eq!(sum(|s| s.deduplicated), n, "{kind:?}: {stats:?}");
        assert_eq!(
            sum(|s| s.reordered),
            moved as u64 * 8,
            "{kind:?}: {stats:?}"
        );
        for (w, out) in got.iter().enumerate() {
            assert_eq!(acks_for_unseen(out), 0, "{kind:?}: worker {w}");
        }
        assert!(
            got.iter().all(|out| !out.is_empty()),
            "{kind:?}: both workers had connections"
        );
    }
}

#[test]
fn a_geneve_copy_of_bare_ip_is_a_copy_of_the_ethernet_frame() {
    let frames = session();
    let n = frames.len() as u64;
    let geneve = |f: &[u8], link: LinkType| {
        let mut out = Vec::new();
        Encoder::new(Encap::Geneve).encode(f, link, &mut out);
        out
    };
    // One mirror sends Ethernet frames, the other the bare IP packets a hop later.
    let mut sends = Vec::new();
    for f in &frames {
        sends.push((0, geneve(f, LinkType::En10Mb)));
        sends.push((1, geneve(&far_copy(f)[14..], LinkType::Raw)));
    }
    for kind in receivers() {
        let (got, s) = run(kind, &format!("geneve:dedup={WINDOW}"), &sends);
        assert_eq!((s.delivered, s.deduplicated), (n, n), "{kind:?}");
        assert_eq!(
            got, frames,
            "{kind:?}: the Ethernet copies, first each time"
        );
        let (_, s) = run(kind, "geneve", &sends);
        assert_eq!((s.delivered, s.deduplicated), (2 * n, 0), "{kind:?}");
    }
}

#[test]
fn held_packets_taken_out_by_a_capture_filter_are_counted_and_released() {
    let frames = session();
    let (order, moved) = acks_first(&frames);
    let dir = direction(&frames);
    let sends: Vec<Send> = order.iter().map(|f| (dir(f), vxlan(1, f))).collect();
    for kind in receivers() {
        let mut src = open(kind, &format!("vxlan:reorder={WINDOW}"));
        send(src.local_addr().unwrap(), &sends);
        let deadline = Instant::now() + Duration::from_secs(20);
        while (src.counters().received < sends.len() as u64 || src.counters().held > 0)
            && Instant::now() < deadline
        {
            match src.next_packet().unwrap() {
                Some(_) => src.filtered(),
                None => common::wait_readable(src.wait_fd(), 1),
            }
        }
        let s = src.stats();
        assert_eq!(
            (s.delivered, s.filtered),
            (frames.len() as u64, frames.len() as u64)
        );
        assert_eq!((s.reordered, s.held), (moved as u64, 0), "{kind:?}");
    }
}
