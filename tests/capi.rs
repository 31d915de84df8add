//! The C ABI: layouts agree with the C compiler's, and the entry points
//! behave as the header says, driven the way the shim drives them.

mod common;

use std::ffi::{CStr, CString, c_char};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use zeek_udp_source::capi::*;
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::{Encap, LinkType, Reject};

unsafe extern "C" {
    /// From zeek-shim/abi_check.c, compiled by build.rs.
    fn zus_c_layout(out: *mut *const u64) -> usize;
}

#[test]
fn c_and_rust_agree_on_every_field() {
    let mut ptr = std::ptr::null();
    let n = unsafe { zus_c_layout(&mut ptr) };
    let c = unsafe { std::slice::from_raw_parts(ptr, n) };
    assert_eq!(c, rust_layout().as_slice());
}

/// A 127.0.0.1 UDP port that was free a moment ago.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The settings zus_config_default fills in, as the shim starts from.
fn default_config() -> ZusConfig {
    let mut config = ZusConfig::default();
    unsafe { zus_config_default(&mut config) };
    config
}

fn text(buf: &[c_char]) -> String {
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn open_failures_come_back_as_messages() {
    let mut err = [0 as c_char; 256];
    let path = CString::new("udp::127.0.0.1:4789:bogus").unwrap();
    let src = unsafe { zus_open(path.as_ptr(), std::ptr::null(), err.as_mut_ptr(), err.len()) };
    assert!(src.is_null());
    assert!(
        text(&err).contains("unknown option 'bogus'"),
        "{}",
        text(&err)
    );

    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let path = CString::new(format!("127.0.0.1:{}", holder.local_addr().unwrap().port())).unwrap();
    let src = unsafe { zus_open(path.as_ptr(), std::ptr::null(), err.as_mut_ptr(), err.len()) };
    assert!(src.is_null());
    assert!(
        text(&err).contains("in use by a socket without SO_REUSEPORT"),
        "{}",
        text(&err)
    );

    // A tiny buffer is cut, NUL-terminated, and the full length returned.
    let mut small = [0x55 as c_char; 8];
    let src = unsafe {
        zus_open(
            std::ptr::null(),
            std::ptr::null(),
            small.as_mut_ptr(),
            small.len(),
        )
    };
    assert!(src.is_null());
    assert_eq!(text(&small), "no path");
    // Null everywhere is safe.
    unsafe {
        zus_close(std::ptr::null_mut());
        zus_done(std::ptr::null_mut());
        assert_eq!(
            zus_next(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            3
        );
        assert_eq!(zus_wait_fd(std::ptr::null()), -1);
        zus_stats_get(std::ptr::null_mut(), std::ptr::null_mut());
        zus_shutdown(std::ptr::null_mut());
        zus_filtered(std::ptr::null_mut());
        let mut z = ZusZeekStats {
            received: 7,
            ..ZusZeekStats::default()
        };
        zus_zeek_stats_get(std::ptr::null_mut(), &mut z);
        assert_eq!(z, ZusZeekStats::default(), "zeros for a NULL source");
        zus_zeek_stats_get(std::ptr::null_mut(), std::ptr::null_mut());
    }
}

#[test]
fn packets_rejects_and_stats_through_the_abi() {
    for receiver in [0u32, 1] {
        let port = free_port();
        let path = CString::new(format!("udp::127.0.0.1:{port}:geneve+vxlan")).unwrap();
        let mut config = default_config();
        assert_eq!(
            (
                config.recv_buffer_size,
                config.recvmmsg_batch,
                config.io_uring_buffers
            ),
            (16 << 20, 1024, 1024)
        );
        assert_eq!(config.batch_wait_ns, 5_000_000, "Rust's default is the one");
        config.receiver = receiver;
        config.recv_buffer_size = 1 << 20;
        let mut err = [0 as c_char; 256];
        let src = unsafe { zus_open(path.as_ptr(), &config, err.as_mut_ptr(), err.len()) };
        assert!(!src.is_null(), "{}", text(&err));
        assert!(unsafe { zus_wait_fd(src) } >= 0);
        assert_eq!(unsafe { zus_path_dlt(src) }, 1);

        let mut enc = Encoder::new(Encap::GeneveVxlan);
        enc.vxlan_vni = 4242;
        enc.geneve_vni = 0x1092;
        let frame = common::eth_frame(1, 64);
        let mut good = Vec::new();
        enc.encode(&frame, LinkType::En10Mb, &mut good);
        let _tx = common::send_all(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &[vec![0x80; 12], good],
        );

        let (mut packets, mut rejects) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        while packets.len() + rejects.len() < 2 && Instant::now() < deadline {
            let mut p = std::mem::MaybeUninit::<ZusPacket>::zeroed();
            let mut reason = u32::MAX;
            match unsafe { zus_next(src, p.as_mut_ptr(), &mut reason) } {
                1 => {
                    let p = unsafe { p.assume_init() };
                    let data =
                        unsafe { std::slice::from_raw_parts(p.data, p.caplen as usize) }.to_vec();
                    packets.push((data, p));
                    // As if the capture filter took it out.
                    unsafe { zus_filtered(src) };
                }
                2 => rejects.push(
                    unsafe { CStr::from_ptr(zus_reject_name(reason)) }
                        .to_str()
                        .unwrap()
                        .to_string(),
                ),
                0 => common::wait_readable(unsafe { zus_wait_fd(src) }, 50),
                other => panic!("zus_next returned {other}"),
            }
        }
        assert_eq!(
            rejects,
            vec![Reject::GeneveVersion.name().to_string()],
            "receiver {receiver}"
        );
        assert_eq!(packets.len(), 1);
        let (data, p) = &packets[0];
        assert_eq!(data, &frame);
        assert_eq!((p.vxlan_vni, p.geneve_vni, p.flags & 3), (4242, 0x1092, 3));
        assert_eq!((p.dlt, p.wire_len as usize), (1, frame.len()));
        assert!(p.ts_sec > 1_600_000_000 && p.ts_nsec < 1_000_000_000);

        let mut s = ZusStats::default();
        unsafe { zus_stats_get(src, &mut s) };
        assert_eq!(
            (s.received, s.delivered, s.rejected, s.kernel_drops),
            (2, 1, 1, 0)
        );
        assert_eq!(s.rejected_by_reason[Reject::GeneveVersion.index()], 1);
        assert_eq!(s.filtered, 1);
        assert!(s.recv_buffer_granted >= 1 << 20);
        let mut z = ZusZeekStats::default();
        unsafe { zus_zeek_stats_get(src, &mut z) };
        assert_eq!(
            z,
            ZusZeekStats {
                received: 0,
                dropped: 1,
                link: 2,
                bytes_received: s.bytes,
                filtered: 1
            }
        );

        // Datagrams still queued at shutdown are counted, once.
        let _tx = common::send_all(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &[vec![0x80; 12], vec![0x80; 20], vec![0x80; 30]],
        );
        unsafe { zus_shutdown(src) };
        unsafe { zus_shutdown(src) };
        assert_eq!(
            unsafe { zus_next(src, std::ptr::null_mut(), std::ptr::null_mut()) },
            0
        );
        unsafe { zus_stats_get(src, &mut s) };
        assert_eq!(
            (s.received, s.delivered, s.rejected, s.kernel_drops),
            (5, 1, 4, 0),
            "receiver {receiver}"
        );
        assert_eq!(
            s.rejected_by_reason[Reject::UnreadAtShutdown.index()],
            3,
            "receiver {receiver}"
        );
        unsafe { zus_close(src) };
    }
}

#[test]
fn reject_names_cover_every_reason() {
    assert_eq!(zus_reject_count() as usize, Reject::COUNT);
    for r in Reject::ALL {
        let name = unsafe { CStr::from_ptr(zus_reject_name(r.index() as u32)) };
        assert_eq!(name.to_str().unwrap(), r.name());
    }
    assert!(zus_reject_name(Reject::COUNT as u32).is_null());
}

#[test]
fn persistent_receive_errors_make_the_source_fatal() {
    let port = free_port();
    let path = CString::new(format!("udp::127.0.0.1:{port}")).unwrap();
    let mut err = [0 as c_char; 256];
    let src = unsafe { zus_open(path.as_ptr(), std::ptr::null(), err.as_mut_ptr(), err.len()) };
    assert!(!src.is_null(), "{}", text(&err));
    // The socket's descriptor now names /dev/null: every recvmmsg fails
    // with ENOTSOCK, as a socket gone bad would.
    let null = std::fs::File::open("/dev/null").unwrap();
    let fd = unsafe { zus_wait_fd(src) };
    assert_eq!(
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) },
        fd
    );
    let mut results = Vec::new();
    for _ in 0..200 {
        let r = unsafe { zus_next(src, std::ptr::null_mut(), std::ptr::null_mut()) };
        results.push(r);
        if r == 4 {
            break;
        }
    }
    assert!(
        results[..results.len() - 1].iter().all(|&r| r == 3),
        "transient errors first: {results:?}"
    );
    assert_eq!(results.last(), Some(&4), "then fatal: {results:?}");
    let mut msg = [0 as c_char; 512];
    unsafe { zus_last_error(src, msg.as_mut_ptr(), msg.len()) };
    assert!(
        text(&msg).contains("times in a row")
            && text(&msg).contains("recvmmsg(): Socket operation on non-socket"),
        "{}",
        text(&msg)
    );
    assert_eq!(
        unsafe { zus_next(src, std::ptr::null_mut(), std::ptr::null_mut()) },
        4,
        "and stays fatal"
    );
    let mut secs = -1.0;
    assert_eq!(
        unsafe { zus_wait(src, &mut secs) },
        0,
        "wait says: call now"
    );
    unsafe { zus_close(src) };
}

#[test]
fn settings_out_of_range_are_refused_naming_the_knob() {
    let port = free_port();
    let path = CString::new(format!("udp::127.0.0.1:{port}")).unwrap();
    let base = default_config();
    let cases: [(ZusConfig, &str); 8] = [
        (
            ZusConfig {
                dedup_ns: 2_000_000_000,
                ..base
            },
            "PacketSource::UDP::dedup: 2s is not a window of whole microseconds from 1us to 1s",
        ),
        (
            ZusConfig {
                reorder_ns: 1500,
                ..base
            },
            "PacketSource::UDP::reorder: 1.5µs is not a window of whole microseconds from 1us to 1s",
        ),
        (
            ZusConfig {
                recvmmsg_buffer_size: 1 << 62,
                ..base
            },
            "bad setting PacketSource::UDP::recvmmsg_buffer_size: 4611686018427387904 bytes is outside 1..=65536",
        ),
        (
            ZusConfig {
                recvmmsg_batch: 1 << 40,
                ..base
            },
            "PacketSource::UDP::recvmmsg_buffers: 1099511627776 datagrams per recvmmsg call is outside 1..=1024",
        ),
        (
            ZusConfig {
                recv_buffer_size: u64::MAX,
                ..base
            },
            "PacketSource::UDP::udp_recv_buffer_size: 18446744073709551615 bytes is more than the kernel can grant",
        ),
        (
            ZusConfig {
                batch_wait_ns: u64::MAX,
                ..base
            },
            "PacketSource::UDP::batch_wait:",
        ),
        (
            ZusConfig {
                receiver: 7,
                ..base
            },
            "PacketSource::UDP::implementation: receiver 7",
        ),
        (
            ZusConfig {
                receiver: 1,
                io_uring_buffers: 32768,
                io_uring_buffer_shift: 20,
                ..base
            },
            "PacketSource::UDP::io_uring_buffers: 32768 buffers of 1048576 bytes",
        ),
    ];
    for (config, want) in cases {
        let mut err = [0 as c_char; 512];
        let src = unsafe { zus_open(path.as_ptr(), &config, err.as_mut_ptr(), err.len()) };
        assert!(src.is_null(), "{want}");
        assert!(text(&err).contains(want), "{}\nwanted: {want}", text(&err));
    }
}

/// Opens `udp::127.0.0.1:<port>:vxlan` with `config`.
fn open_vxlan(config: &ZusConfig) -> (*mut ZusSource, std::net::SocketAddr) {
    let port = free_port();
    let path = CString::new(format!("udp::127.0.0.1:{port}:vxlan")).unwrap();
    let mut err = [0 as c_char; 512];
    let src = unsafe { zus_open(path.as_ptr(), config, err.as_mut_ptr(), err.len()) };
    assert!(!src.is_null(), "{}", text(&err));
    (src, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Sends each datagram from its sender's own socket, in order.
fn send_from(to: std::net::SocketAddr, sends: &[common::feeds::Send]) {
    let senders: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (who, d) in sends {
        senders[*who].send_to(d, to).unwrap();
    }
}

fn stats(src: *mut ZusSource) -> ZusStats {
    let mut s = ZusStats::default();
    unsafe { zus_stats_get(src, &mut s) };
    s
}

/// Calls zus_next as the shim does (waiting as zus_wait says) until `done`.
fn pump(src: *mut ZusSource, done: impl Fn(&ZusStats) -> bool) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while !done(&stats(src)) && Instant::now() < deadline {
        let mut p = std::mem::MaybeUninit::<ZusPacket>::zeroed();
        match unsafe { zus_next(src, p.as_mut_ptr(), std::ptr::null_mut()) } {
            1 => {
                let p = unsafe { p.assume_init() };
                got.push(unsafe { std::slice::from_raw_parts(p.data, p.caplen as usize) }.to_vec());
                unsafe { zus_done(src) };
            }
            0 => {
                let mut secs = 0.0;
                let ms = match unsafe { zus_wait(src, &mut secs) } {
                    2 => ((secs * 1000.0) as i32).clamp(1, 50),
                    _ => 50,
                };
                common::wait_readable(unsafe { zus_wait_fd(src) }, ms);
            }
            other => panic!("zus_next returned {other}"),
        }
    }
    got
}

fn advice(src: *mut ZusSource) -> String {
    let mut buf = [0 as c_char; 1024];
    let n = unsafe { zus_advice(src, buf.as_mut_ptr(), buf.len()) };
    assert_eq!(n, text(&buf).len());
    text(&buf)
}

#[test]
fn dedup_and_reorder_through_the_abi_and_held_packets_outlive_shutdown() {
    use common::feeds::*;
    let frames = session();
    let n = frames.len() as u64;
    let mut config = default_config();
    assert_eq!(
        (config.dedup_ns, config.reorder_ns),
        (0, 0),
        "off by default"
    );

    // dedup from the settings: every copy counted, never delivered.
    config.dedup_ns = 100_000_000;
    let (src, to) = open_vxlan(&config);
    let sends = doubled(&frames, |_| 0);
    send_from(to, &sends);
    let got = pump(src, |s| s.received == 2 * n);
    let s = stats(src);
    assert_eq!(norm_all(&got), norm_all(&frames));
    assert_eq!((s.delivered, s.deduplicated, s.held), (n, n, 0), "{s:?}");
    let mut z = ZusZeekStats::default();
    unsafe { zus_zeek_stats_get(src, &mut z) };
    assert_eq!(
        (z.received, z.dropped, z.link),
        (n, 0, 2 * n),
        "copies are no drops"
    );
    assert_eq!(
        advice(src),
        "",
        "nothing to advise with dedup on and a clean order"
    );
    unsafe { zus_close(src) };

    // reorder with a window longer than the test: what is held when the
    // source shuts down still comes out of zus_next, in order.
    config.dedup_ns = 0;
    config.reorder_ns = 1_000_000_000;
    let (src, to) = open_vxlan(&config);
    let (mut order, _) = acks_first(&frames);
    // The data the first early ACK acknowledges never comes: the ACK waits
    // out its window, which outlasts the test.
    let first = (1..=order.len())
        .find(|&i| acks_for_unseen(&order[..i]) == 1)
        .unwrap();
    order.remove(first);
    let n = n - 1;
    let sends = once(&order, direction(&frames));
    send_from(to, &sends);
    let mut got = pump(src, |s| s.received == n && s.held > 0);
    let held = stats(src).held;
    assert!(held > 0, "the ACK waits for its data");
    let mut z = ZusZeekStats::default();
    unsafe { zus_zeek_stats_get(src, &mut z) };
    assert_eq!(z.link, z.received + z.dropped + held, "held: in link only");
    unsafe { zus_shutdown(src) };
    got.extend(pump(src, |s| s.held == 0));
    let s = stats(src);
    assert_eq!((s.received, s.delivered, s.held), (n, n, 0), "{s:?}");
    // Nothing lost: every packet sent came out once.
    let (mut got, mut want) = (norm_all(&got), norm_all(&order));
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        unsafe { zus_next(src, std::ptr::null_mut(), std::ptr::null_mut()) },
        0
    );
    unsafe { zus_close(src) };
}

#[test]
fn the_feed_check_advises_once_through_the_abi() {
    use common::feeds::*;
    let frames = session();
    let sends = messy_feed(&frames);
    let config = default_config();
    let (src, to) = open_vxlan(&config);
    send_from(to, &sends);
    pump(src, |s| s.received == sends.len() as u64);
    let mut said = vec![advice(src), advice(src)];
    said.sort();
    assert!(said[0].contains("add :dedup to the path"), "{said:?}");
    assert!(said[1].contains("add :reorder to the path"), "{said:?}");
    assert_eq!(advice(src), "", "each once");
    assert_eq!(
        unsafe { zus_advice(std::ptr::null_mut(), std::ptr::null_mut(), 0) },
        0
    );
    unsafe { zus_close(src) };
}
