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

        let _tx = send_all(to, &[datagram(1), datagram(2)]);
        wait_readable(src.wait_fd(), 1000);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(drain(&mut src), 2, "{kind:?}");
        // The socket is empty: the next receive is held off for at most `wait`.
        let Wait::For(d) = src.wait() else {
            panic!("{kind:?}: expected a hold-off, got {:?}", src.wait())
        };
        assert!(d > Duration::ZERO && d <= wait, "{kind:?}: {d:?}");
        let held_at = Instant::now();
        let _tx2 = send_all(to, &[datagram(3)]);
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            src.next_packet().unwrap().is_none(),
            "{kind:?}: held off while gathering"
        );
        std::thread::sleep(wait.saturating_sub(held_at.elapsed()) + Duration::from_millis(5));
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
