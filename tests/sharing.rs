//! SO_REUSEPORT sharing and kernel drop accounting.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

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
        let mut socks = Vec::new();
        for s in 0..senders {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..per_sender {
                sock.send_to(&vxlan(s * per_sender + i, 100), ("127.0.0.1", port))
                    .unwrap();
            }
            socks.push(sock);
        }
        let total = u64::from(senders * per_sender);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a.stats().received + b.stats().received < total
            && std::time::Instant::now() < deadline
        {
            let (wa, wb) = (a.stats().received + 1, b.stats().received + 1);
            collect(&mut a, wa, Duration::from_millis(20));
            collect(&mut b, wb, Duration::from_millis(20));
        }
        let (ra, rb) = (a.stats().received, b.stats().received);
        assert!(
            ra > 0 && rb > 0,
            "{kind:?}: both sockets receive ({ra}, {rb})"
        );
        assert_eq!(ra + rb, total, "{kind:?}: together they receive everything");
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
        let _tx = send_all(to, &datagrams);
        // Drain until idle.
        loop {
            let before = src.stats().received;
            collect(&mut src, before + 1, Duration::from_millis(300));
            if src.stats().received == before {
                break;
            }
        }
        let s = src.stats();
        assert!(
            s.kernel_drops > 0,
            "{kind:?}: a 64 KiB buffer overflows: {s:?}"
        );
        assert_eq!(
            s.received + s.kernel_drops,
            sent,
            "{kind:?}: sent = received + dropped: {s:?}"
        );
        assert_eq!(
            s.received,
            s.delivered + s.rejected_total(),
            "{kind:?}: {s:?}"
        );
        assert_eq!(
            sent,
            s.delivered + s.rejected_total() + s.kernel_drops,
            "{kind:?}: sent = delivered + rejected + dropped"
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
