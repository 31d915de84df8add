//! Receive + decapsulate throughput of each receiver, side by side with a
//! plain recvmmsg loop that only counts, in one run.
//!
//! A sender on loopback does the kernel's delivery work itself and is slower
//! than any receiver, so timing a live stream would time the sender. Each
//! sample therefore fills the socket buffer first (a sender thread with
//! sendmmsg, untimed) and then times draining it: the receive path's own
//! cost per packet. Criterion reports packets/s; the ratio against
//! `plain_recvmmsg` is the figure that matters.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::socket::Listener;
use zeek_udp_source::{Config, Encap, LinkType, ReceiverKind, Source};

mod common;
use common::{FILL, RCVBUF, fill, tcp_stream, vxlan_source};

fn datagram(size: usize) -> Vec<u8> {
    let mut d = Vec::new();
    Encoder::new(Encap::Vxlan).encode(&vec![0x45u8; size], LinkType::En10Mb, &mut d);
    d
}

/// Drains until `n` datagrams were seen or the socket stays empty.
trait Drain {
    fn drain(&mut self, n: usize) -> usize;
}

/// The baseline: the same socket (same options: timestamps, drop counter)
/// and the same buffers, names and control space as the recvmmsg receiver,
/// but it only counts what arrives.
struct Plain {
    sock: socket2::Socket,
    _bufs: Vec<u8>,
    _ctrl: Vec<u64>,
    _names: Vec<libc::sockaddr_storage>,
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Plain {
    fn new(sock: socket2::Socket) -> Self {
        let (n, size) = (1024, 9216 + 32);
        let mut bufs = vec![0u8; n * size];
        let mut ctrl = vec![0u64; n * 8];
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; n];
        let mut iovs: Vec<libc::iovec> = (0..n)
            .map(|i| libc::iovec {
                iov_base: bufs[i * size..].as_mut_ptr().cast(),
                iov_len: size,
            })
            .collect();
        let hdrs = (0..n)
            .map(|i| {
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_control = ctrl[i * 8..].as_mut_ptr().cast();
                h
            })
            .collect();
        Plain {
            sock,
            _bufs: bufs,
            _ctrl: ctrl,
            _names: names,
            _iovs: iovs,
            hdrs,
        }
    }
}

impl Drain for Plain {
    fn drain(&mut self, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            for h in &mut self.hdrs {
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                h.msg_hdr.msg_controllen = 64;
            }
            let r = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r <= 0 {
                break;
            }
            got += r as usize;
        }
        got
    }
}

impl Drain for Source {
    fn drain(&mut self, n: usize) -> usize {
        common::drain(self, n)
    }
}

fn run(rx: &mut dyn Drain, to: SocketAddr, payloads: &[Vec<u8>], iters: u64) -> Duration {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut left = iters as usize;
    let mut total = Duration::ZERO;
    while left > 0 {
        let n = left.min(FILL);
        fill(&tx, to, payloads, n);
        let t = Instant::now();
        let got = rx.drain(n);
        total += t.elapsed();
        // Whatever the buffer could not hold was dropped by the kernel;
        // count only what was drained, and make it up in the next fill.
        left -= got.max(1).min(left);
    }
    total
}

/// A group of per-packet timings, few samples (each fills the socket).
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    group
}

fn bench(c: &mut Criterion) {
    let mut group = group(c, "receive");
    for size in [64usize, 512, 1500] {
        let payload = datagram(size);
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), RCVBUF).unwrap();
        let plain_to = listener.local_addr().unwrap();
        let mut plain = Plain::new(listener.socket);
        group.bench_function(BenchmarkId::new("plain_recvmmsg", size), |b| {
            b.iter_custom(|iters| run(&mut plain, plain_to, std::slice::from_ref(&payload), iters))
        });
        for kind in [ReceiverKind::Recvmmsg, ReceiverKind::IoUring] {
            let mut cfg = Config {
                receiver: kind,
                recv_buffer_size: RCVBUF,
                // The buffer is filled before the clock starts: a hold-off
                // (5 ms by default) would end the drain early, not gather.
                batch_wait: Duration::ZERO,
                ..Config::default()
            };
            // BENCH_CQ=<n>: try another io_uring completion queue size.
            if let Some(cq) = std::env::var("BENCH_CQ").ok().and_then(|v| v.parse().ok()) {
                cfg.uring.cq_entries = cq;
            }
            let mut src = vxlan_source(&cfg);
            let to = src.local_addr().unwrap();
            group.bench_function(BenchmarkId::new(kind.name(), size), |b| {
                b.iter_custom(|iters| run(&mut src, to, std::slice::from_ref(&payload), iters))
            });
        }
    }
    group.finish();
}

/// Issue "clean tap": what dedup and reorder (1 ms windows, the defaults of
/// a bare option) cost per packet beside both off, side by side.
fn tap(c: &mut Criterion) {
    let mut group = group(c, "tap");
    let window = Some(Duration::from_millis(1));
    for size in [64usize, 512] {
        let payloads = tcp_stream(size);
        for (name, dedup, reorder) in [("off", None, None), ("dedup+reorder", window, window)] {
            let cfg = Config {
                recv_buffer_size: RCVBUF,
                batch_wait: Duration::ZERO,
                dedup,
                reorder,
                ..Config::default()
            };
            let mut src = vxlan_source(&cfg);
            let to = src.local_addr().unwrap();
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|iters| run(&mut src, to, &payloads, iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, tap);
criterion_main!(benches);
