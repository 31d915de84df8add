//! The bounded wait after a receive that emptied the socket: datagrams
//! gather while receives are held off, the hold-off never outlasts
//! `batch_wait` and ends before the socket's buffer could fill, a full
//! batch is never held off, and an empty window sends the caller back to
//! sleeping on the fd.

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

/// Receives one datagram, waiting as [`Source::wait`] says.
fn receive_one(src: &mut Source) {
    loop {
        if src.next_packet().unwrap().is_some() {
            src.done();
            return;
        }
        match src.wait() {
            Wait::Now => {}
            Wait::For(d) => std::thread::sleep(d),
            Wait::OnFd => wait_readable(src.wait_fd(), 1000),
        }
    }
}

#[test]
fn small_batches_gather_then_idle_sleeps_on_the_fd() {
    for kind in receivers() {
        let wait = Duration::from_millis(60);
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1").unwrap();
        path.addr.set_port(0);
        let cfg = Config {
            batch_wait: wait,
            ..config(kind)
        };
        let mut src = Source::open_path(path, &cfg).unwrap();
        let to = src.local_addr().unwrap();
        assert_eq!(src.wait(), Wait::OnFd, "{kind:?}: nothing yet");

        // After idle the hold-off starts short and doubles per batch
        // (src/pace.rs), so a few datagrams in a row bring it to the bound.
        let tx = send_all(to, &[]);
        let mut holds = Vec::new();
        for seq in 0..9 {
            tx.send_to(&datagram(seq), to).unwrap();
            receive_one(&mut src);
            if let Wait::For(d) = src.wait() {
                holds.push(d);
            }
        }
        assert!(holds.iter().all(|&d| d <= wait), "{kind:?}: {holds:?}");
        let Some(&d) = holds.last() else {
            panic!("{kind:?}: no hold-off after a receive that emptied the socket")
        };
        assert!(d > wait / 2, "{kind:?}: grown to the bound: {holds:?}");
        let held_at = Instant::now();
        tx.send_to(&datagram(100), to).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            src.next_packet().unwrap().is_none(),
            "{kind:?}: held off while gathering"
        );
        std::thread::sleep(d.saturating_sub(held_at.elapsed()) + Duration::from_millis(5));
        assert_eq!(
            drain(&mut src),
            1,
            "{kind:?}: the gathered datagram after the window"
        );
        // Another window; nothing arrives in it, so back to the fd.
        std::thread::sleep(wait + Duration::from_millis(5));
        assert_eq!(drain(&mut src), 0);
        assert_eq!(src.wait(), Wait::OnFd, "{kind:?}: idle sleeps on the fd");
        assert_accounted(&mut src);
    }
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
        let _tx = send_all(to, &batch);
        wait_readable(src.wait_fd(), 1000);
        std::thread::sleep(Duration::from_millis(20));
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
    let _tx = send_all(src.local_addr().unwrap(), &[datagram(1)]);
    wait_readable(src.wait_fd(), 1000);
    assert_eq!(drain(&mut src), 1);
    assert_eq!(src.wait(), Wait::OnFd);
}

/// Receives as a caller of [`Source::wait`] would (sleeping out hold-offs,
/// else on the fd) until `sent` datagrams are accounted for or the sender
/// has finished a while ago; returns (received, kernel drops).
fn receive_as_paced(
    src: &mut Source,
    sent: u64,
    done: &std::sync::atomic::AtomicBool,
) -> (u64, u64) {
    let mut finished: Option<Instant> = None;
    loop {
        while src.next_packet().unwrap().is_some() {
            src.done();
        }
        let s = src.stats();
        if s.received + s.kernel_drops >= sent {
            return (s.received, s.kernel_drops);
        }
        if done.load(std::sync::atomic::Ordering::Acquire) {
            let at = *finished.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(5) {
                return (s.received, s.kernel_drops);
            }
        }
        match src.wait() {
            Wait::Now => {}
            Wait::For(d) => std::thread::sleep(d),
            Wait::OnFd => wait_readable(src.wait_fd(), 20),
        }
    }
}

/// A long `batch_wait` bounds the hold-off, but a stream that would fill
/// the socket's buffer within it ends each hold-off early: the wait costs
/// no datagram. The sender keeps a high rate in bursts; the buffer holds
/// a few thousand datagrams, far fewer than arrive in one `batch_wait`.
#[test]
fn a_stream_at_high_rate_loses_nothing_to_the_wait() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const SENT: u64 = 40_000;
    for kind in receivers() {
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1").unwrap();
        path.addr.set_port(0);
        let cfg = Config {
            batch_wait: Duration::from_secs(2),
            recv_buffer_size: 2 << 20,
            ..config(kind)
        };
        let mut src = Source::open_path(path, &cfg).unwrap();
        let to = src.local_addr().unwrap();
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let sender = {
            let done = done.clone();
            std::thread::spawn(move || {
                let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let d = datagram(1);
                for i in 0..SENT {
                    tx.send_to(&d, to).unwrap();
                    // Bursts of 64, then a pause: high rate, not more than
                    // an unoptimised receiver keeps up with.
                    if i % 64 == 63 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                }
                done.store(true, Ordering::Release);
            })
        };
        let (received, drops) = receive_as_paced(&mut src, SENT, &done);
        sender.join().unwrap();
        assert_eq!(
            (received, drops),
            (SENT, 0),
            "{kind:?}: every datagram received, none dropped in the socket"
        );
        assert_accounted(&mut src);
    }
}
