//! What the receive benchmarks share: a sender that fills a socket, the
//! feeds, and a VXLAN source to drain.

// Each benchmark uses a part of this.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Config, Encap, LinkType, Source};

/// Datagrams per fill; the socket buffer is forced large enough where the
/// process may (root), else fills are smaller and counted as they arrive.
pub const FILL: usize = 20_000;
pub const RCVBUF: usize = 256 << 20;

/// Sends `n` datagrams to `to` with sendmmsg, in batches, cycling through
/// `payloads`.
pub fn fill(sock: &UdpSocket, to: SocketAddr, payloads: &[Vec<u8>], n: usize) {
    let SocketAddr::V4(v4) = to else {
        unreachable!()
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iovs: Vec<libc::iovec> = payloads
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..64)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = &addr as *const _ as *mut _;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(msgs.len());
        for (i, m) in msgs[..batch].iter_mut().enumerate() {
            m.msg_hdr.msg_iov = &mut iovs[(sent + i) % payloads.len()];
        }
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), batch as u32, 0) };
        assert!(r > 0, "sendmmsg: {}", std::io::Error::last_os_error());
        sent += r as usize;
    }
}

/// A VXLAN source on an ephemeral loopback port.
pub fn vxlan_source(cfg: &Config) -> Source {
    let mut path = zeek_udp_source::path::parse("127.0.0.1:1:vxlan").unwrap();
    path.addr.set_port(0);
    Source::open_path(path, cfg).unwrap()
}

/// A TCP bulk transfer of `size`-byte segments over 64 connections as
/// Ethernet frames, [`FILL`] distinct packets (copies of one would all be
/// duplicates to dedup).
pub fn tcp_frames(size: usize) -> Vec<Vec<u8>> {
    (0..FILL as u32)
        .map(|i| {
            let mut frame = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 1, 1, 1], [10, 2, 2, 2], 64)
                .tcp(
                    40000 + (i % 64) as u16,
                    80,
                    i.wrapping_mul(size as u32),
                    1024,
                )
                .write(&mut frame, &vec![i as u8; size])
                .unwrap();
            frame
        })
        .collect()
}

/// [`tcp_frames`] in VXLAN.
pub fn tcp_stream(size: usize) -> Vec<Vec<u8>> {
    tcp_frames(size)
        .iter()
        .map(|frame| {
            let mut d = Vec::new();
            Encoder::new(Encap::Vxlan).encode(frame, LinkType::En10Mb, &mut d);
            d
        })
        .collect()
}

/// Drains up to `n` datagrams from `src`, or until it is empty; returns
/// how many it received.
pub fn drain(src: &mut Source, n: usize) -> usize {
    let start = src.counters().received;
    let mut bytes = 0usize;
    while (src.counters().received - start) < n as u64 {
        match src.next_packet() {
            Ok(Some(p)) => bytes += p.data.len(),
            _ => break,
        }
    }
    std::hint::black_box(bytes);
    (src.counters().received - start) as usize
}
