//! The tap on hostile packets: dedup, reorder and the feed check judge a
//! stream built from the input, with every packet accounted for.
//!
//! The first byte picks the link type (bits 0-1: raw IP, Ethernet, PPP),
//! dedup (bit 2), reorder (bit 3) and the feed check (bit 4). Then each
//! 6-byte record is one IPv4/TCP packet of two connections, so that
//! sequence numbers and ACKs meet and packets get held:
//! - byte 0: bit 0 the direction, bit 1 the connection, bit 2 SYN, bit 3
//!   the ACK flag, bits 4-7 the time since the previous packet (20 us
//!   steps; 0 repeats the time);
//! - bytes 1, 2: sequence and acknowledgment number (small, so they meet);
//! - byte 3: payload length (bits 0-5), not a packet at all but that many
//!   bytes times three of noise (bit 6), truncate the packet (bit 7) to
//!   byte 5's worth of it;
//! - bytes 4, 5: unless byte 4 is 0xff, the byte at byte 4 (modulo the
//!   length) becomes byte 5.
//!
//! Records with the same bytes make copies. Checked: no panic; each
//! packet is delivered, suppressed or held; held packets all come out by
//! the flush; `deduplicated` counts the suppressed ones.

use std::time::Duration;

use zeek_udp_source::source::Packet;
use zeek_udp_source::tap::{Admit, Tap};
use zeek_udp_source::{LinkType, Timestamp};

const WINDOW: Duration = Duration::from_millis(1);

/// The packet of one record, as Ethernet.
fn frame(r: &[u8; 6]) -> Vec<u8> {
    let [kind, seq, ack, len, at, value] = *r;
    if len & 0x40 != 0 {
        // Noise: whatever the bytes say, link layer and IP included.
        let n = usize::from(len & 0x3f) * 3;
        return (0..n)
            .map(|i| r[i % 6] ^ (i as u8).wrapping_mul(37))
            .collect();
    }
    let (client, server) = ([10, 0, 0, 1 + (kind >> 1 & 1)], [10, 0, 0, 9]);
    let (src, dst, sport, dport) = match kind & 1 {
        0 => (client, server, 40000u16, 80u16),
        _ => (server, client, 80, 40000),
    };
    let payload = usize::from(len & 0x3f);
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (40 + payload) as u16;
    f.extend([
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend(src);
    f.extend(dst);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend((u32::from(seq) * 100).to_be_bytes());
    f.extend((u32::from(ack) * 100).to_be_bytes());
    let flags = (kind & 4) >> 1 | (kind & 8) << 1; // SYN 0x02, ACK 0x10
    f.extend([0x50, flags, 4, 0, 0, 0, 0, 0]);
    f.extend(std::iter::repeat_n(seq, payload));
    if at != 0xff {
        let i = usize::from(at) % f.len();
        f[i] = value;
    }
    if len & 0x80 != 0 {
        f.truncate(usize::from(value) % f.len());
    }
    f
}

/// What a stream did: packets suppressed, held, and reordered (read by
/// tests/fuzz_regressions.rs to show its streams reach every path; the
/// fuzz target has coverage for that).
#[derive(Clone, Copy, Debug, Default)]
#[allow(dead_code)]
pub struct Seen {
    pub suppressed: u64,
    pub held: u64,
    pub reordered: u64,
}

pub fn run(data: &[u8]) -> Seen {
    let [pick, records @ ..] = data else {
        return Seen::default();
    };
    let link = match pick % 4 {
        0 => LinkType::Raw,
        1 | 3 => LinkType::En10Mb,
        _ => LinkType::Ppp,
    };
    let on = |bit: u8| (pick & bit != 0).then_some(WINDOW);
    let Some(mut tap) = Tap::new(on(4), on(8), pick & 16 != 0) else {
        return Seen::default();
    };
    let mut ever_held = 0;
    let (mut delivered, mut suppressed, mut held) = (0u64, 0u64, 0u64);
    let mut at = 1_700_000_000_000_000_000u64;
    let mut n = 0u64;
    for r in records.chunks_exact(6) {
        let r: &[u8; 6] = r.try_into().expect("six bytes");
        let f = frame(r);
        let bytes = match link {
            LinkType::Raw => f.get(14..).unwrap_or_default(),
            _ => &f[..],
        };
        at += u64::from(r[0] >> 4) * 20_000;
        let p = Packet {
            data: bytes,
            wire_len: bytes.len() + usize::from(r[3] >> 7) * usize::from(r[4]),
            timestamp: Timestamp {
                sec: (at / 1_000_000_000) as i64,
                nsec: (at % 1_000_000_000) as u32,
            },
            link_type: link,
            vxlan_vni: Some(1),
            geneve_vni: None,
            geneve_options: &[],
            peer: None,
            geneve_option_value: None,
        };
        n += 1;
        match tap.admit(&p) {
            Admit::Deliver => delivered += 1,
            Admit::Suppress => suppressed += 1,
            Admit::Held => {
                held += 1;
                ever_held += 1;
            }
        }
        if r[0] >> 4 == 15 {
            tap.advance(at + 2 * WINDOW.as_nanos() as u64);
        }
        while tap.pop_held() {
            assert!(tap.lent().is_some(), "a popped packet is lent");
            delivered += 1;
            held -= 1;
        }
        assert_eq!(held, tap.held() as u64);
    }
    tap.flush();
    while tap.pop_held() {
        delivered += 1;
        held -= 1;
    }
    assert_eq!((held, tap.held()), (0, 0), "all held packets went out");
    assert_eq!(delivered + suppressed, n, "every packet accounted for");
    assert_eq!(suppressed, tap.deduplicated());
    assert!(tap.reordered() <= delivered);
    Seen {
        suppressed,
        held: ever_held,
        reordered: tap.reordered(),
    }
}
