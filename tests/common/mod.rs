//! Helpers shared by the integration tests: inner frames, senders and a
//! collector that drains a source into owned packets.
#![allow(dead_code)]

pub mod feeds;
#[path = "../../examples/multihost/flows.rs"]
pub mod flows;
pub mod zeek;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use zeek_udp_source::{Config, LinkType, Packet, ReceiverKind, Source, Timestamp, Wait};

/// Both receivers, for tests that must hold for each.
pub fn receivers() -> [ReceiverKind; 2] {
    [ReceiverKind::Recvmmsg, ReceiverKind::IoUring]
}

pub fn config(kind: ReceiverKind) -> Config {
    Config {
        receiver: kind,
        // Small enough to be granted unprivileged, large enough for bursts.
        recv_buffer_size: 1 << 20,
        // No hold-off, so a test's datagrams come in as soon as they are
        // there (tests/wait.rs tries batch_wait itself).
        batch_wait: Duration::ZERO,
        ..Config::default()
    }
}

/// An Ethernet/IPv4/UDP frame whose payload is `payload_len` bytes tagged
/// with `seq`, so frames differ and can be matched.
pub fn eth_frame(seq: u32, payload_len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; payload_len.max(4)];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in payload.iter_mut().enumerate().skip(4) {
        *b = (i as u32 ^ seq) as u8;
    }
    let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40000 + (seq % 1000) as u16, 53);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("build frame");
    out
}

/// A bare IPv6/TCP packet (no Ethernet), for `dlt=raw` and GENEVE-with-IP.
pub fn ipv6_packet(seq: u32, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len.max(4))
        .map(|i| (i as u32 ^ seq) as u8)
        .collect();
    let builder =
        etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(443, 50000, seq, 1024);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("build packet");
    out
}

pub fn link_of(frame: &[u8]) -> LinkType {
    if frame[0] >> 4 == 6 && frame.len() > 40 && frame[6] == 6 {
        LinkType::Raw
    } else {
        LinkType::En10Mb
    }
}

/// Sends each datagram from one fresh socket of the right family.
pub fn send_all(to: SocketAddr, datagrams: &[Vec<u8>]) -> UdpSocket {
    let bind: SocketAddr = if to.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    }
    .parse()
    .unwrap();
    let sock = UdpSocket::bind(bind).expect("bind sender");
    for d in datagrams {
        sock.send_to(d, to).expect("send");
    }
    sock
}

/// A packet copied out of the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Got {
    pub data: Vec<u8>,
    pub wire_len: usize,
    pub timestamp: Timestamp,
    pub link_type: LinkType,
    pub vxlan_vni: Option<u32>,
    pub geneve_vni: Option<u32>,
    pub geneve_options: Vec<(u16, u8, Vec<u8>)>,
    pub peer: Option<SocketAddr>,
    pub geneve_option_value: Option<u64>,
}

/// Copies a delivered packet out of the source.
pub fn got(p: &Packet<'_>) -> Got {
    Got {
        data: p.data.to_vec(),
        wire_len: p.wire_len,
        timestamp: p.timestamp,
        link_type: p.link_type,
        vxlan_vni: p.vxlan_vni,
        geneve_vni: p.geneve_vni,
        geneve_options: p
            .geneve_options()
            .map(|o| (o.class, o.kind, o.data.to_vec()))
            .collect(),
        peer: p.peer,
        geneve_option_value: p.geneve_option_value,
    }
}

/// Reads packets until `want` datagrams were received (delivered or
/// rejected) or `timeout` passes. Between receives it waits as the source
/// says (on its fd, or out its hold-off), never past the deadline.
pub fn collect(src: &mut Source, want: u64, timeout: Duration) -> Vec<Got> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while src.counters().received < want {
        let before = src.counters().received;
        out.extend(drain_now(src));
        if src.counters().received == before && !wait_on_source(src, deadline) {
            break;
        }
    }
    out
}

/// Takes every packet the source has without waiting: until a receive
/// finds the socket empty (or a hold-off runs).
pub fn drain_now(src: &mut Source) -> Vec<Got> {
    let mut out = Vec::new();
    while let Some(p) = src.next_packet().expect("receive") {
        out.push(got(&p));
        src.done();
    }
    out
}

/// Waits as `src` asks ([`Source::wait`]), but not past `deadline`; false
/// once the deadline has passed.
pub fn wait_on_source(src: &Source, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    match src.wait() {
        Wait::Now => {}
        // The source's own hold-off: it gathers datagrams meanwhile.
        Wait::For(d) => std::thread::sleep(d.min(left)),
        Wait::OnFd => {
            wait_any_until(&[src.wait_fd()], deadline);
        }
    }
    true
}

/// poll(2) on `fds` until one is readable or `deadline` passes; false at
/// the deadline. Never waits longer than the deadline, never returns early
/// without an event.
pub fn wait_any_until(fds: &[i32], deadline: Instant) -> bool {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up, so a wait never ends just short of the deadline.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: pfds is a live array of pfds.len() pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n > 0 {
            return true;
        }
        // A timeout, or EINTR: the deadline decides.
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Datagrams the kernel dropped in its per-CPU input backlog, all CPUs
/// together (/proc/net/softnet_stat, second column). Loopback traffic goes
/// through that backlog and can be dropped there (more than
/// net.core.netdev_max_backlog queued) before any socket counts it, so a
/// test that counts every datagram must add these or show that none happened.
/// System-wide: other traffic's drops are in it too, so it bounds ours.
pub fn backlog_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").expect("/proc/net/softnet_stat");
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|hex| u64::from_str_radix(hex, 16).expect("softnet_stat column"))
        .sum()
}

/// Sends `datagrams` to `to` from one socket, returned once every
/// datagram has been through the kernel's receive path (see [`settled`]).
pub fn send_settled(to: SocketAddr, datagrams: &[Vec<u8>]) -> UdpSocket {
    settled(to.is_ipv6(), || send_all(to, datagrams))
}

/// Runs `send` (which sends over loopback) and returns once everything it
/// sent has been through the kernel's receive path: queued at the receiving
/// socket, or dropped there (the socket's drop count) or in the backlog
/// (see [`backlog_drops`]). No waiting on time: `send` runs on a thread
/// pinned to one CPU, so its datagrams pass that CPU's backlog in order,
/// and a marker datagram sent after them to a probe socket arriving proves
/// that the ones before it have been processed. (Receive packet steering
/// on `lo` would break that order; it is off unless configured.)
pub fn settled<T: Send>(ipv6: bool, send: impl FnOnce() -> T + Send) -> T {
    let bind = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
    let probe = UdpSocket::bind(bind).expect("bind probe");
    let probe_addr = probe.local_addr().expect("probe address");
    probe.set_nonblocking(true).expect("nonblocking probe");
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_current_cpu();
            let out = send();
            let marker = UdpSocket::bind(bind).expect("bind marker sender");
            let mut buf = [0u8; 16];
            // The marker itself can be dropped in a full backlog: send
            // again until one arrives; each is behind all of `send`'s.
            loop {
                marker.send_to(b"settled", probe_addr).expect("send marker");
                let soon = Instant::now() + Duration::from_millis(200);
                if wait_any_until(&[probe.as_raw_fd()], soon) && probe.recv(&mut buf).is_ok() {
                    return out;
                }
            }
        })
        .join()
        .expect("sender thread")
    })
}

/// `received` of `sent` datagrams arrived: all of them, or the missing ones
/// are within the backlog drops since `backlog_before` (which then says so).
pub fn assert_all_arrived_or_backlog_dropped(
    received: u64,
    sent: u64,
    backlog_before: u64,
    what: &str,
) {
    let backlog = backlog_drops() - backlog_before;
    if backlog == 0 {
        assert_eq!(
            received, sent,
            "{what}: no backlog drops, so every datagram counts"
        );
        return;
    }
    assert!(
        received <= sent && sent - received <= backlog,
        "{what}: {received} of {sent} arrived; the backlog dropped only {backlog}"
    );
    eprintln!(
        "{what}: the kernel's input backlog dropped {backlog} datagrams during this test (loopback overload); {} of ours missing",
        sent - received
    );
}

/// Pins the calling thread to the CPU it runs on.
fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is a
    // zeroed plain struct filled by CPU_SET, passed with its size.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// poll(2) on `fd` for up to `ms` milliseconds.
pub fn wait_readable(fd: i32, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

/// The accounting identity every source must keep.
pub fn assert_accounted(src: &mut Source) {
    let s = src.stats();
    assert_eq!(
        s.received,
        s.delivered + s.rejected_total(),
        "received = delivered + rejected must hold: {s:?}"
    );
}

/// Opens `<addr>:<port>:<options>` on an ephemeral port (the grammar, like
/// the C++ plugin's, refuses port 0).
pub fn open(kind: ReceiverKind, addr: &str, options: &str) -> Source {
    let text = if options.is_empty() {
        format!("{addr}:1")
    } else {
        format!("{addr}:1:{options}")
    };
    let mut path = zeek_udp_source::path::parse(&text).expect("path");
    path.addr.set_port(0);
    Source::open_path(path, &config(kind)).expect("open source")
}

/// A complete HTTP exchange over TCP between 10.1.1.1:40000 and
/// 10.2.2.2:80, as Ethernet frames with valid checksums.
pub fn http_session() -> Vec<Vec<u8>> {
    let client = ([2, 0, 0, 0, 0, 1], [10, 1, 1, 1], 40000u16);
    let server = ([2, 0, 0, 0, 0, 2], [10, 2, 2, 2], 80u16);
    let get =
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: udp-source-test\r\n\r\n"
            .to_vec();
    let body = "x".repeat(300);
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    flows::http_frames(client, server, &get, &resp)
}

/// Strips the 14-byte Ethernet header: the same packets as raw IP.
pub fn without_ethernet(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames.iter().map(|f| f[14..].to_vec()).collect()
}

/// Reports a skipped test where people see it: straight to stderr, past
/// the test harness's output capture.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// A fresh scratch directory for one test.
pub fn tmpdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zus-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a classic pcap with pcap-file's writer (independent of ours),
/// one packet every 10 ms.
pub fn write_pcap(path: &std::path::Path, link: pcap_file::DataLink, frames: &[Vec<u8>]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let header = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_micros(1_700_000_000_000_000 + i as u64 * 10_000);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
}

/// The outer UDP payloads of a capture, found with etherparse (not the
/// code under test).
pub fn outer_udp_payloads(path: &std::path::Path) -> Vec<Vec<u8>> {
    zeek_udp_source::trace::read(path)
        .unwrap()
        .iter()
        .filter_map(|p| {
            let sliced = etherparse::LaxSlicedPacket::from_ethernet(&p.data).ok()?;
            match sliced.transport? {
                etherparse::TransportSlice::Udp(udp) => Some(udp.payload().to_vec()),
                _ => None,
            }
        })
        .collect()
}

/// A UDP port for a test listener: unique within this test process and
/// outside the kernel's ephemeral range (32768+) and udpsrc's source ports
/// (49152+), so no sender in a parallel test can hold it or probe it.
pub fn unique_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919) % 10_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((base + n * 13) % 10_000) as u16;
        let free_v4 = UdpSocket::bind(("127.0.0.1", port)).is_ok();
        let free_v6 = UdpSocket::bind(("::1", port)).is_ok();
        if free_v4 && free_v6 {
            return port;
        }
    }
}
