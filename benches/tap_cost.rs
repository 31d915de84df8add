//! Issue "clean tap": what dedup and reorder together cost the receive path,
//! as a ratio measured so that the machine's drift cannot make it.
//!
//! Criterion's `receive -- tap` group times "off" and "on" as separate
//! benchmarks minutes apart; on a shared VM their ratio scatters by more
//! than the 15% in question. Here each round fills and drains a source with
//! both off and one with both on (1 ms windows, a bare option's defaults),
//! one after the other, and times each drain by the thread's own CPU time
//! (CLOCK_THREAD_CPUTIME_ID: kernel and user time of the draining thread,
//! not the sender's, not time the thread waited for a CPU). Reported: the
//! medians over the rounds of CPU ns per packet, and their ratio.
//!
//!     cargo bench --bench tap_cost            # TAP_ROUNDS=<n>, default 21

use std::net::UdpSocket;
use std::time::Duration;

use zeek_udp_source::{Config, Source};

mod common;
use common::{FILL, RCVBUF, drain, fill, tcp_stream, vxlan_source};

/// CPU time this thread has used, ns.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Fills `src` with the stream and drains it: CPU ns per packet drained.
fn round(src: &mut Source, tx: &UdpSocket, payloads: &[Vec<u8>]) -> f64 {
    fill(tx, src.local_addr().unwrap(), payloads, FILL);
    let t = thread_cpu_ns();
    let n = drain(src, FILL);
    (thread_cpu_ns() - t) as f64 / n.max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench targets with --test: one round each.
    let quick = std::env::args().any(|a| a == "--test");
    let rounds: usize = match quick {
        true => 1,
        false => std::env::var("TAP_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(21),
    };
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let window = Some(Duration::from_millis(1));
    for size in [64usize, 512] {
        let payloads = tcp_stream(size);
        let config = |on: Option<Duration>| Config {
            recv_buffer_size: RCVBUF,
            batch_wait: Duration::ZERO,
            dedup: on,
            reorder: on,
            ..Config::default()
        };
        let mut off = vxlan_source(&config(None));
        let mut on = vxlan_source(&config(window));
        let (mut t_off, mut t_on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            t_off.push(round(&mut off, &tx, &payloads));
            t_on.push(round(&mut on, &tx, &payloads));
        }
        let (m_off, m_on) = (median(t_off), median(t_on));
        println!(
            "tap_cost/{size}: both off {m_off:.0} ns/pkt, dedup+reorder {m_on:.0} ns/pkt: {:.3}x ({rounds} rounds of {FILL}, thread CPU, medians)",
            m_on / m_off
        );
    }
}
