//! What reorder repair needs of a TCP segment, and a fixed table of
//! per-flow sequence state.

use crate::flow::FlowKey;
use crate::wire::ip::TCP;

use super::hash::PacketHasher;
use super::parsed::Parsed;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP segment's place in its connection (whose [`FlowKey`] comes
/// beside it: the tables need it only to find the flow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// 0 when the sender is the key's `a`, 1 when it is its `b`.
    pub dir: usize,
    /// Its sequence number.
    pub seq: u32,
    /// What it acknowledges, if the ACK flag is set.
    pub ack: Option<u32>,
    /// A SYN (or SYN-ACK).
    pub syn: bool,
    /// The sequence number after it: data, SYN and FIN each take space.
    pub end: u32,
}

/// The connection and segment in a packet, if it is a whole TCP header
/// (not a fragment, header captured).
#[inline]
pub fn segment(p: &Parsed<'_>) -> Option<(FlowKey, Segment)> {
    let ip = p.ip.as_ref()?;
    let tcp = ip.tcp?;
    let word = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    let port = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let flags = tcp[13];
    let (src, dst) = ip.view.addresses();
    let (key, dir) = FlowKey::between(TCP, (src, port(0)), (dst, port(2)));
    let seq = word(4);
    // Sequence space is modular: a length past 2^32 wraps like the numbers.
    let header_len = usize::from(tcp[12] >> 4) * 4;
    let data_len = ip.payload_len().saturating_sub(header_len) as u32;
    let space = data_len
        .wrapping_add(u32::from(flags & SYN != 0))
        .wrapping_add(u32::from(flags & FIN != 0));
    let segment = Segment {
        dir,
        seq,
        ack: (flags & ACK != 0).then(|| word(8)),
        syn: flags & SYN != 0,
        end: seq.wrapping_add(space),
    };
    Some((key, segment))
}

/// `a` is ahead of `b` in sequence space (by less than 2^30, so that a
/// stale or unrelated number is not taken for one far ahead).
pub fn after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 30
}

/// How far one direction of a flow has got: the sequence number after the
/// furthest segment counted, once one has been.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// A segment of this direction has been counted.
    pub known: bool,
    /// The sequence number after the furthest one counted.
    pub next: u32,
}

impl Progress {
    /// Counts a segment ending at `end` (a stale one moves nothing).
    pub fn reach(&mut self, end: u32) {
        if !self.known || after(end, self.next) {
            self.next = end;
            self.known = true;
        }
    }

    /// `ack` acknowledges data not counted yet (of a known direction).
    pub fn behind(&self, ack: u32) -> bool {
        self.known && after(ack, self.next)
    }
}

/// What a [`Flows`] table keeps per flow.
pub trait FlowState: Copy + Default {
    /// The flow must keep its slot (it holds packets): it never gives way
    /// to another and never starts afresh.
    fn pinned(&self) -> bool {
        false
    }
}

/// Slots per bucket.
const WAYS: usize = 4;

/// One slot: a flow's fingerprint, when it was last touched, and its state,
/// in one cache line for the states kept here (40-48 bytes).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Slot<S> {
    /// [`PacketHasher::flow`] of the key, never 0; 0: a free slot.
    tag: u64,
    /// When it was last touched, ns.
    used: u64,
    state: S,
}

/// Where a flow is looked up: its fingerprint and its bucket. Made by
/// [`Flows::place`], which also starts loading the bucket.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    tag: u64,
    first: usize,
}

/// A fixed, set-associative table of flows, keyed by a seeded 64-bit
/// fingerprint of the [`FlowKey`] (the kind of identity dedup gives a
/// packet): a lookup reads one cache line, not a 37-byte key per way. Two
/// flows that share a fingerprint share state; with a random seed that
/// takes about 2^64 tries, and it would cost holds of at most a window.
///
/// A flow idle for longer than `idle` starts afresh; when a bucket is full
/// the least recently used flow that is not pinned gives way; if all are
/// pinned, the new flow goes untracked (its packets are not held: fail open).
pub struct Flows<S> {
    slots: Box<[Slot<S>]>,
    buckets: usize,
    idle: u64,
    hasher: PacketHasher,
}

impl<S: FlowState> Flows<S> {
    /// `slots` rounded up to a power of two (at least one bucket of 4),
    /// with a random seed.
    pub fn new(slots: usize, idle_ns: u64) -> Self {
        let slots = slots.max(WAYS).next_power_of_two();
        Flows {
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            buckets: slots / WAYS,
            idle: idle_ns,
            hasher: PacketHasher::random(),
        }
    }

    /// Bytes of state, fixed at creation.
    pub fn memory(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<S>>()
    }

    /// Where `key`'s flow is; starts loading its bucket, which
    /// [`Flows::slot`] reads.
    #[inline]
    pub fn place(&self, key: &FlowKey) -> Place {
        let tag = self.hasher.flow(key) | 1;
        let first = ((tag >> 32) as usize & (self.buckets - 1)) * WAYS;
        for slot in &self.slots[first..first + WAYS] {
            super::prefetch(slot);
        }
        Place { tag, first }
    }

    /// The slot of the flow at `place`, made if need be; `None` when its
    /// bucket is all pinned flows.
    #[inline]
    pub fn slot(&mut self, place: Place, now: u64) -> Option<usize> {
        let Place { tag, first } = place;
        let idle = self.idle;
        let ways = &mut self.slots[first..first + WAYS];
        if let Some(i) = ways.iter().position(|s| s.tag == tag) {
            let s = &mut ways[i];
            if now.saturating_sub(s.used) > idle && !s.state.pinned() {
                s.state = S::default();
            }
            s.used = s.used.max(now);
            return Some(first + i);
        }
        let i = (0..WAYS)
            .filter(|&i| !ways[i].state.pinned())
            .min_by_key(|&i| (ways[i].tag != 0, ways[i].used))?;
        ways[i] = Slot {
            tag,
            used: now,
            state: S::default(),
        };
        Some(first + i)
    }

    /// The state of the flow in slot `i` (from [`Flows::slot`]).
    pub fn get(&mut self, i: usize) -> &mut S {
        &mut self.slots[i].state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkType;
    use crate::tap::hash::tests::tcp4;

    fn segment(link: LinkType, data: &[u8], wire_len: usize) -> Option<(FlowKey, Segment)> {
        super::segment(&Parsed::new(link, data, wire_len))
    }

    #[test]
    fn segments_have_direction_sequence_space_and_ack() {
        let p = tcp4(64, 1000, 77, b"hello");
        let (key, s) = segment(LinkType::En10Mb, &p, p.len()).unwrap();
        assert_eq!((s.seq, s.end, s.ack, s.syn), (1000, 1005, Some(77), false));
        // The reply: same key, other direction.
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(80, 40000, u32::MAX, 1024)
            .syn()
            .ack(1);
        let mut r = Vec::new();
        b.write(&mut r, &[]).unwrap();
        let (other, t) = segment(LinkType::Raw, &r, r.len()).unwrap();
        assert_eq!((other, 1 - t.dir), (key, s.dir));
        assert_eq!((t.end, t.syn), (0, true), "SYN takes one, wrapping");
        // Not TCP, cut short, or not IP: no segment.
        assert_eq!(segment(LinkType::En10Mb, &p[..40], p.len()), None);
        assert_eq!(segment(LinkType::Ppp, &p, p.len()), None);
        // IPv6 behind an extension header, with options: the data offset
        // counts, the ACK flag gives the ACK.
        let v6 = crate::tap::parsed::tests::tcp6(b"hello");
        let (key, s) = segment(LinkType::Raw, &v6, v6.len()).unwrap();
        assert_eq!((s.seq, s.end, s.ack, s.syn), (7, 12, Some(9), false));
        assert_eq!(
            (key.a, key.b, s.dir),
            (
                (0x0101_0101_0101_0101_0101_0101_0101_0101, 40000),
                (0x0202_0202_0202_0202_0202_0202_0202_0202, 80),
                0
            )
        );
    }

    #[test]
    fn after_is_modular_and_bounded() {
        assert!(after(5, 1) && !after(1, 5) && !after(3, 3));
        assert!(after(2, u32::MAX - 2), "across the wrap");
        assert!(!after(1 << 31, 0), "too far ahead to be real");
    }

    #[derive(Clone, Copy, Default)]
    struct Held(u32);
    impl FlowState for Held {
        fn pinned(&self) -> bool {
            self.0 > 0
        }
    }

    #[test]
    fn the_table_is_fixed_and_keeps_flows_that_hold_packets() {
        let mut flows = Flows::<Held>::new(4, 1_000);
        assert_eq!(std::mem::size_of::<Slot<Held>>(), 64, "a slot is a line");
        let key = |i: u16| {
            let key = FlowKey {
                a: (0, i),
                b: (1, 80),
                proto: 6,
            };
            flows.place(&key)
        };
        let memory = flows.memory();
        let places: Vec<Place> = (0..5).map(key).collect();
        let slots: Vec<usize> = (0..4).map(|i| flows.slot(places[i], 10).unwrap()).collect();
        for &s in &slots {
            flows.get(s).0 = 1;
        }
        assert_eq!(flows.slot(places[4], 20), None, "all pinned: untracked");
        flows.get(slots[2]).0 = 0;
        let s = flows.slot(places[4], 20).unwrap();
        assert_eq!(s, slots[2], "the unpinned one gave way");
        assert_eq!(flows.slot(places[4], 30), Some(s), "found again");
        assert_eq!(flows.memory(), memory);
    }

    #[test]
    fn an_idle_flow_starts_afresh_unless_pinned() {
        #[derive(Clone, Copy, Default)]
        struct Mark(u32, bool);
        impl FlowState for Mark {
            fn pinned(&self) -> bool {
                self.1
            }
        }
        let mut flows = Flows::<Mark>::new(64, 1_000);
        let at = flows.place(&FlowKey {
            a: (1, 1),
            b: (2, 2),
            proto: 6,
        });
        let s = flows.slot(at, 10).unwrap();
        *flows.get(s) = Mark(7, true);
        assert_eq!(flows.slot(at, 5_000), Some(s));
        assert_eq!(flows.get(s).0, 7, "pinned: kept");
        flows.get(s).1 = false;
        assert_eq!(flows.slot(at, 10_000), Some(s));
        assert_eq!(flows.get(s).0, 0, "idle: afresh");
    }
}
