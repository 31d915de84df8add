//! The bounded wait after a receive that emptied the socket: datagrams
//! gather while receives are held off, the hold-off never outlasts
//! `batch_wait`, a full batch is never held off, and an empty window sends
//! the caller back to sleeping on the fd.

mod common;

use std::time::{Duration, Instant};

use common::*;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Config, Encap, LinkType, ReceiverKind, Source, Wait};

fn datagram(seq: u32) -> Vec<u8> {
    let mut d = Vec::new();
    Encoder::new(Encap::Vxlan).encode(&eth_frame(seq, 40), LinkType::En10Mb, &mut d);
    d
}

fn drain(src: &mut Source) -> usize {
    let mut n = 0;
    while src.next_packet().unwrap().is_some() {
        n += 1;
    }
    n
}

/// The hold-off: long enough that a test thread is rarely stalled past
/// it; when it is, the run is measured as such and repeated, never judged.
const WAIT: Duration = Duration::from_millis(300);
const ATTEMPTS: usize = 5;

#[test]
fn small_batches_gather_then_idle_sleeps_on_the_fd() {
    for kind in receivers() {
        let done = (0..ATTEMPTS).any(|_| gather_then_idle(kind));
        assert!(
            done,
            "{kind:?}: the test thread was stalled past the {WAIT:?} window in all {ATTEMPTS} attempts"
        );
    }
}

/// One run; false when the thread was stalled past the window, so that
/// "held off" could not be observed.
fn gather_then_idle(kind: ReceiverKind) -> bool {
    let mut path = zeek_udp_source::path::parse("127.0.0.1:1").unwrap();
    path.addr.set_port(0);
    let cfg = Config {
        batch_wait: WAIT,
        ..config(kind)
    };
    let mut src = Source::open_path(path, &cfg).unwrap();
    let to = src.local_addr().unwrap();
    assert_eq!(src.wait(), Wait::OnFd, "{kind:?}: nothing yet");

    // Both are queued before the first receive, which takes them together.
    let _tx = send_settled(to, &[datagram(1), datagram(2)]);
    let before_receive = Instant::now();
    assert_eq!(drain(&mut src), 2, "{kind:?}");
    // The socket is empty: the next receive is held off for at most `WAIT`
    // after that receive, which came after `before_receive`.
    let before_wait = Instant::now();
    let Wait::For(d) = src.wait() else {
        panic!("{kind:?}: expected a hold-off, got {:?}", src.wait())
    };
    let elapsed = before_receive.elapsed();
    assert!(
        d <= WAIT && d >= WAIT.saturating_sub(elapsed),
        "{kind:?}: {d:?} left of {WAIT:?}, {elapsed:?} after the receive"
    );
    // The hold-off runs at least until here.
    let held_until = before_wait + d;
    let _tx2 = send_settled(to, &[datagram(3)]);
    let next = src.next_packet().unwrap().is_some();
    if Instant::now() >= held_until {
        eprintln!("{kind:?}: stalled past the window; trying again");
        return false;
    }
    assert!(!next, "{kind:?}: held off while gathering");
    // Wait out the hold-off as the source says, then it takes datagram 3.
    while let Wait::For(d) = src.wait() {
        std::thread::sleep(d);
        if drain(&mut src) > 0 {
            break;
        }
    }
    assert!(Instant::now() >= held_until);
    assert_eq!(
        src.counters().received,
        3,
        "{kind:?}: the gathered datagram after the window"
    );
    // That receive emptied the socket: another window; nothing arrives in
    // it, so back to the fd.
    let Wait::For(d) = src.wait() else {
        panic!("{kind:?}: expected a hold-off, got {:?}", src.wait())
    };
    std::thread::sleep(d);
    assert_eq!(drain(&mut src), 0);
    assert_eq!(src.wait(), Wait::OnFd, "{kind:?}: idle sleeps on the fd");
    assert_accounted(&mut src);
    true
}

#[test]
fn a_full_batch_is_not_held_off() {
    for kind in receivers() {
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1").unwrap();
        path.addr.set_port(0);
        let mut cfg = Config {
            batch_wait: Duration::from_secs(5),
            recvmmsg_batch: 4,
            ..config(kind)
        };
        cfg.uring.cq_entries = 4;
        let mut src = Source::open_path(path, &cfg).unwrap();
        let to = src.local_addr().unwrap();
        let batch: Vec<_> = (0..10).map(datagram).collect();
        // All ten are queued before the first receive.
        let _tx = send_settled(to, &batch);
        // Receives of 4 (full: more is waiting) follow each other at once;
        // only the one that empties the socket starts a hold-off.
        assert_eq!(drain(&mut src), 10, "{kind:?}: all without waiting");
        // recvmmsg's last receive of 2 emptied the socket. (A 4-entry CQ
        // ends io_uring's multishot receive, which counts as "maybe more".)
        if kind == ReceiverKind::Recvmmsg {
            assert!(
                matches!(src.wait(), Wait::For(_)),
                "then a hold-off, got {:?}",
                src.wait()
            );
        }
        assert_accounted(&mut src);
    }
}

#[test]
fn without_batch_wait_there_is_no_hold_off() {
    let mut src = open(receivers()[0], "127.0.0.1", "vxlan");
    let _tx = send_settled(src.local_addr().unwrap(), &[datagram(1)]);
    assert_eq!(drain(&mut src), 1);
    assert_eq!(src.wait(), Wait::OnFd);
}
