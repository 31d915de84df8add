//! Issue "clean tap": what dedup and reorder cost the receive path, as
//! ratios measured so that the machine's drift cannot make them.
//!
//! Criterion's `receive -- tap` group times "off" and "on" as separate
//! benchmarks minutes apart; on a shared VM their ratio scatters by more
//! than the 15% in question. Here each round fills and drains five sources
//! one after the other: both off, both off again (the control: its ratio to
//! the first is the noise floor of the run), dedup alone, reorder alone,
//! and both (1 ms windows, a bare option's defaults). The order rotates
//! from round to round, so that no source always drains first or right
//! after the sender. Each drain is timed by the thread's own CPU time
//! (CLOCK_THREAD_CPUTIME_ID: kernel and user time of the draining thread,
//! not the sender's, not time the thread waited for a CPU). Reported: each
//! source's median over the rounds of CPU ns per packet, and its ratio to
//! both off.
//!
//!     cargo bench --bench tap_cost            # TAP_ROUNDS=<n>, default 41

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

/// The sources of a run: a name, and (dedup, reorder) on or off.
const SOURCES: [(&str, bool, bool); 5] = [
    ("both off", false, false),
    ("both off again", false, false),
    ("dedup", true, false),
    ("reorder", false, true),
    ("dedup+reorder", true, true),
];

fn main() {
    // `cargo test --benches` runs bench targets with --test: one round each.
    let quick = std::env::args().any(|a| a == "--test");
    let rounds: usize = match quick {
        true => 1,
        false => std::env::var("TAP_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(41),
    };
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let window = Duration::from_millis(1);
    for size in [64usize, 512] {
        let payloads = tcp_stream(size);
        let mut sources: Vec<Source> = SOURCES
            .iter()
            .map(|&(_, dedup, reorder)| {
                vxlan_source(&Config {
                    recv_buffer_size: RCVBUF,
                    batch_wait: Duration::ZERO,
                    dedup: dedup.then_some(window),
                    reorder: reorder.then_some(window),
                    ..Config::default()
                })
            })
            .collect();
        let mut times = vec![Vec::new(); SOURCES.len()];
        for r in 0..rounds {
            for k in 0..SOURCES.len() {
                let i = (r + k) % SOURCES.len();
                times[i].push(round(&mut sources[i], &tx, &payloads));
            }
        }
        let medians: Vec<f64> = times.into_iter().map(median).collect();
        let line: Vec<String> = SOURCES
            .iter()
            .zip(&medians)
            .skip(1)
            .map(|((name, ..), m)| format!("{name} {m:.0} ({:.3}x)", m / medians[0]))
            .collect();
        println!(
            "tap_cost/{size}: both off {:.0} ns/pkt; {} ({rounds} rounds of {FILL}, thread CPU, medians)",
            medians[0],
            line.join(", ")
        );
    }
}
