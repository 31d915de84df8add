//! SO_REUSEPORT sharing and kernel drop accounting.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Config, Encap, LinkType, Source};

fn vxlan(seq: u32, len: usize) -> Vec<u8> {
    let mut d = Vec::new();
    Encoder::new(Encap::Vxlan).encode(&eth_frame(seq, len), LinkType::En10Mb, &mut d);
    d
}

#[test]
fn two_sockets_share_a_port_and_together_get_everything() {
    for kind in receivers() {
        // An explicit port: an ephemeral one (0) is never shared.
        let port = unique_port();
        let path = format!("127.0.0.1:{port}:vxlan");
        let mut a = Source::open(&path, &config(kind)).unwrap();
        let mut b = Source::open(&path, &config(kind)).unwrap();
        // Many sender sockets: the kernel balances on the outer 4-tuple.
        let per_sender = 10u32;
        let senders = 64u32;
        let backlog_before = backlog_drops();
        let _socks = settled(false, || {
            (0..senders)
                .map(|s| {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    for i in 0..per_sender {
                        sock.send_to(&vxlan(s * per_sender + i, 100), ("127.0.0.1", port))
                            .unwrap();
                    }
                    sock
                })
                .collect::<Vec<_>>()
        });
        let total = u64::from(senders * per_sender);
        // Everything sent is in the sockets now (or was dropped): empty
        // both on every pass, and sleep only on their fds, so however
        // unevenly the kernel split them, all are taken in a few passes.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = a.counters().received + b.counters().received;
            drain_now(&mut a);
            drain_now(&mut b);
            let got = a.counters().received + b.counters().received;
            let missing = total.saturating_sub(got);
            let lost = backlog_drops() - backlog_before;
            if missing == 0
                || (got == before && missing <= lost)
                || !wait_any_until(&[a.wait_fd(), b.wait_fd()], deadline)
            {
                break;
            }
        }
        let (ra, rb) = (a.stats().received, b.stats().received);
        assert!(
            ra > 0 && rb > 0,
            "{kind:?}: both sockets receive ({ra}, {rb})"
        );
        assert_all_arrived_or_backlog_dropped(
            ra + rb,
            total,
            backlog_before,
            &format!("{kind:?}: together they receive everything"),
        );
        assert_eq!(a.stats().kernel_drops + b.stats().kernel_drops, 0);
    }
}

#[test]
fn overload_reports_kernel_drops_exactly() {
    for kind in receivers() {
        let cfg = Config {
            recv_buffer_size: 64 * 1024,
            ..config(kind)
        };
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1:vxlan").unwrap();
        path.addr.set_port(0);
        let mut src = Source::open_path(path, &cfg).unwrap();
        let to = src.local_addr().unwrap();
        // Receive a little first, so the receiver is running, then pause.
        let _warm = send_all(to, &[vxlan(0, 100)]);
        assert_eq!(collect(&mut src, 1, Duration::from_secs(5)).len(), 1);

        // Every tenth datagram is malformed (I flag clear).
        let sent: u64 = 5000;
        let datagrams: Vec<Vec<u8>> = (1..sent as u32)
            .map(|i| {
                let mut d = vxlan(i, 1000);
                if i % 10 == 0 {
                    d[0] = 0;
                }
                d
            })
            .collect();
        let backlog_before = backlog_drops();
        // Once this returns, each datagram is queued at the socket or was
        // dropped (counted by the socket, or in the backlog).
        let _tx = send_settled(to, &datagrams);
        // Take what is queued: until the socket is empty, waiting only on
        // the source's fd, and only while datagrams are known to be missing.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = src.counters().received;
            drain_now(&mut src);
            let s = src.stats();
            let missing = sent.saturating_sub(s.received + s.kernel_drops);
            // Datagrams the backlog dropped never arrive; nothing is in
            // flight (settled), so once a pass finds nothing new, stop.
            let lost = backlog_drops() - backlog_before;
            if missing == 0
                || (s.received == before && missing <= lost)
                || !wait_on_source(&src, deadline)
            {
                break;
            }
        }
        let s = src.stats();
        assert!(
            s.kernel_drops > 0,
            "{kind:?}: a 64 KiB buffer overflows: {s:?}"
        );
        assert_all_arrived_or_backlog_dropped(
            s.received + s.kernel_drops,
            sent,
            backlog_before,
            &format!("{kind:?}: sent = received + dropped: {s:?}"),
        );
        assert_eq!(
            s.received,
            s.delivered + s.rejected_total(),
            "{kind:?}: {s:?}"
        );
        assert_all_arrived_or_backlog_dropped(
            s.delivered + s.rejected_total() + s.kernel_drops,
            sent,
            backlog_before,
            &format!("{kind:?}: sent = delivered + rejected + dropped"),
        );
        assert!(
            s.rejected_total() > 0,
            "{kind:?}: some malformed ones got through"
        );
    }
}

#[test]
fn recv_buffer_is_read_back_and_capping_is_explained() {
    let src = open(zeek_udp_source::ReceiverKind::Recvmmsg, "127.0.0.1", "");
    let rb = src.recv_buffer();
    assert_eq!(rb.requested, 1 << 20);
    assert!(rb.granted > 0);
    let capped = zeek_udp_source::socket::RecvBuffer {
        requested: 16 << 20,
        granted: 4 << 20,
    };
    let w = capped.warning().expect("warning when capped");
    assert!(
        w.contains("net.core.rmem_max") && w.contains("sysctl -w net.core.rmem_max=16777216"),
        "{w}"
    );
    let full = zeek_udp_source::socket::RecvBuffer {
        requested: 1 << 20,
        granted: 1 << 20,
    };
    assert_eq!(full.warning(), None);
}

#[test]
fn a_port_taken_without_reuseport_is_a_clear_error() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let err = Source::open(&format!("127.0.0.1:{port}"), &Config::default())
        .err()
        .expect("bind must fail")
        .to_string();
    assert!(
        err.contains(&format!(
            "port {port} is in use by a socket without SO_REUSEPORT"
        )),
        "{err}"
    );
    let err = Source::open("192.0.2.77:4789", &Config::default())
        .err()
        .expect("not a local address")
        .to_string();
    assert!(
        err.contains("192.0.2.77 is not an address of this host"),
        "{err}"
    );
}
