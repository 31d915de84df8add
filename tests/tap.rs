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
use std::time::{Duration, Instant};

use common::feeds::*;
use common::receivers;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Encap, LinkType, ReceiverKind, Source, Stats};

/// The windows the tests use. Copies and ACKs are sent back to back, so
/// they arrive microseconds apart; but a loaded machine can preempt the
/// sending thread between two sends for milliseconds, and the kernel
/// stamps each datagram when it is sent. A window far above any such pause
/// keeps the tests deterministic; what the defaults do is tested in the
/// unit tests with timestamps made up.
const WINDOW: &str = "100ms";

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
    let sends = once(&sent_order, dir);
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
    // Copies and early ACKs, over four connections.
    let sends = messy_feed(&frames);
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
    let clean = once(&frames, |_| 0);
    let mut src = open(ReceiverKind::Recvmmsg, "vxlan");
    send(src.local_addr().unwrap(), &clean);
    drain(&mut src, clean.len() as u64);
    assert_eq!(src.advice(), None);
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
    let sends = once(&order, direction(&frames));
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
