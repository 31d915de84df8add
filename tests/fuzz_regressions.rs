//! Inputs that once made a fuzz target fail, replayed through the same
//! checks on every `cargo test`: `fuzz/regressions/<target>/*`, one input
//! per file, exactly as the fuzzer saw it. Add a file here for each finding.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use zeek_udp_source::{Config, Source};

#[path = "../fuzz/check/source.rs"]
mod source_check;

#[path = "../fuzz/check/tap.rs"]
mod tap_check;

/// The inputs recorded for `target`, with their file names.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        // A dot file keeps an empty directory in git.
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .map(|path| {
            let data = std::fs::read(&path).expect("regression input");
            (path, data)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn source_path_inputs_that_once_failed() {
    let inputs = inputs("source");
    assert!(
        !inputs.is_empty(),
        "fuzz/regressions/source holds the findings"
    );
    for (path, data) in inputs {
        eprintln!("replaying {}", path.display());
        source_check::run(&data);
    }
}

/// The `tap` target's findings (none so far), then its check over a fixed
/// set of pseudo-random streams, so that it runs on every `cargo test`
/// where cargo-fuzz is not installed.
#[test]
fn tap_streams_account_for_every_packet() {
    for (path, data) in inputs("tap") {
        eprintln!("replaying {}", path.display());
        tap_check::run(&data);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut seen = tap_check::Seen::default();
    for _ in 0..2_000 {
        let records = next() % 200;
        let mut data = vec![next() as u8];
        let mut last: Option<[u8; 6]> = None;
        for _ in 0..records {
            let r = next().to_le_bytes();
            let record = match last {
                // A mirror's copy of the last packet, a hop on (TTL, at
                // byte 22 of the frame), 20 us later.
                Some(l) if r[7] % 4 == 0 => [l[0] & 0x0f | 0x10, l[1], l[2], l[3], 22, r[5]],
                // Sequence and ACK from a few values, so that they meet;
                // every other packet unmangled.
                _ => {
                    let at = if r[6] % 2 == 0 { 0xff } else { r[4] };
                    [r[0], r[1] % 8, r[2] % 8, r[3], at, r[5]]
                }
            };
            last = (record[4] == 0xff).then_some(record);
            data.extend(record);
        }
        let s = tap_check::run(&data);
        seen.suppressed += s.suppressed;
        seen.held += s.held;
        seen.reordered += s.reordered;
    }
    // The streams reach every path: copies, holds, changed order.
    assert!(
        seen.suppressed > 1_000 && seen.held > 1_000 && seen.reordered > 100,
        "{seen:?}"
    );
}

/// The first finding of the `source` target, spelled out: GENEVE with an
/// EtherType protocol (here ARP) gets a synthesized Ethernet header written
/// over the 14 bytes before the inner packet, which are the end of the
/// GENEVE options. The options and the key option's value must be the ones
/// that were sent.
#[test]
fn geneve_options_survive_a_synthesized_ethernet_header() {
    for kind in receivers() {
        let cfg = Config {
            geneve_key_option: Some((0x0102, 0x03)),
            ..config(kind)
        };
        let mut path = zeek_udp_source::path::parse("127.0.0.1:1:geneve").unwrap();
        path.addr.set_port(0);
        let mut src = Source::open_path(path, &cfg).unwrap();
        // One 16-byte option (4 header + 12 data) after the 8-byte base.
        let option = [
            0x01, 0x02, 0x03, 3, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
            0xac,
        ];
        let arp = [0x55u8; 28];
        let mut datagram = vec![4, 0, 0x08, 0x06, 0, 0, 7, 0];
        datagram.extend_from_slice(&option);
        datagram.extend_from_slice(&arp);
        let _tx = send_settled(src.local_addr().unwrap(), &[datagram]);
        let got = collect(&mut src, 1, Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{kind:?}");
        let p = &got[0];
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x06]);
        frame.extend_from_slice(&arp);
        assert_eq!(
            p.data, frame,
            "{kind:?}: Ethernet header, then the ARP packet"
        );
        assert_eq!(p.geneve_vni, Some(7));
        assert_eq!(
            p.geneve_options,
            vec![(0x0102, 0x03, option[4..].to_vec())],
            "{kind:?}: the options as sent"
        );
        assert_eq!(
            p.geneve_option_value,
            Some(0xa1a2_a3a4_a5a6_a7a8),
            "{kind:?}"
        );
    }
}
