//! The tap's own work, apart from the receive path: `Tap::judge` over a
//! TCP bulk stream of 64 distinct flows (as `tap_cost` sends), packets 1 us
//! apart, caches hot. Prints the best of 30 passes in ns per packet for
//! dedup, reorder and both; its instruction count is what callgrind gives
//! for one configuration:
//!
//!     cargo bench --bench tap_judge
//!     valgrind --tool=callgrind target/release/deps/tap_judge-<hash> both
//!
//! tap_cost measures what counts (the drain, thread CPU, against both off);
//! this one shows where the tap's part of it goes.

use std::time::{Duration, Instant};

use zeek_udp_source::tap::{Probe, Tap, Verdict};
use zeek_udp_source::{LinkType, Timestamp};

mod common;
use common::tcp_frames;

fn main() {
    // `cargo test --benches` runs bench targets with --test: one pass.
    let passes = match std::env::args().any(|a| a == "--test") {
        true => 1,
        false => 30,
    };
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let window = Some(Duration::from_millis(1));
    for size in [64usize, 512] {
        let frames = tcp_frames(size);
        for (name, dedup, reorder) in [
            ("dedup", true, false),
            ("reorder", false, true),
            ("both", true, true),
        ] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let mut tap = Tap::new(window.filter(|_| dedup), window.filter(|_| reorder), false)
                .expect("an option is on");
            let mut at = 1_000_000_000u64;
            let mut best = f64::MAX;
            for _ in 0..passes {
                let start = Instant::now();
                let mut delivered = 0u64;
                for f in &frames {
                    at += 1_000;
                    let probe = Probe {
                        data: f,
                        wire_len: f.len(),
                        link_type: LinkType::En10Mb,
                        timestamp: Timestamp {
                            sec: (at / 1_000_000_000) as i64,
                            nsec: (at % 1_000_000_000) as u32,
                        },
                    };
                    delivered += u64::from(matches!(tap.judge(&probe), Verdict::Deliver));
                }
                assert_eq!(
                    delivered as usize,
                    frames.len(),
                    "distinct packets all pass"
                );
                best = best.min(start.elapsed().as_nanos() as f64 / frames.len() as f64);
            }
            println!("tap_judge/{size}/{name}: {best:.1} ns/pkt (best of {passes} passes)");
        }
    }
}
