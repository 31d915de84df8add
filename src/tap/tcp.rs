//! What reorder repair needs of a TCP segment, and a fixed table of
//! per-flow sequence state.

use crate::flow::FlowKey;
use crate::wire::ip::TCP;

use super::parsed::Parsed;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP segment's place in its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The connection (both directions share it).
    pub key: FlowKey,
    /// 0 when the sender is `key.a`, 1 when it is `key.b`.
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

/// The segment in a packet, if it is a whole TCP header (not a fragment,
/// header captured).
pub fn segment(p: &Parsed<'_>) -> Option<Segment> {
    let (_, ip) = p.ip.as_ref()?;
    if ip.protocol() != TCP || ip.is_fragment() {
        return None;
    }
    let tcp = ip.payload().get(..20)?;
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    let flags = tcp[13];
    let (key, dir) = FlowKey::directed(ip)?;
    let seq = word(4);
    // Sequence space is modular: a length past 2^32 wraps like the numbers.
    let data_len = ip.payload_len().saturating_sub(header_len) as u32;
    let space = data_len
        .wrapping_add(u32::from(flags & SYN != 0))
        .wrapping_add(u32::from(flags & FIN != 0));
    Some(Segment {
        key,
        dir,
        seq,
        ack: (flags & ACK != 0).then(|| word(8)),
        syn: flags & SYN != 0,
        end: seq.wrapping_add(space),
    })
}

/// `a` is ahead of `b` in sequence space (by less than 2^30, so that a
/// stale or unrelated number is not taken for one far ahead).
pub fn after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 30
}

/// One direction of a flow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dir {
    /// A segment of this direction has been delivered.
    pub known: bool,
    /// The sequence number after the furthest one delivered.
    pub next: u32,
    /// Packets of this direction held now.
    pub held: u32,
    /// Scan stamp (the first held packet of a direction is its head).
    pub mark: u32,
    /// The detector: an ACK of this direction for data not seen yet, and when.
    pub unseen_ack: Option<(u32, u64)>,
}

/// One flow's state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flow {
    /// Whose state this is; `None`: a free slot.
    pub key: Option<FlowKey>,
    /// When it was last touched, ns.
    pub used: u64,
    /// Per direction, indexed by [`Segment::dir`].
    pub dirs: [Dir; 2],
    /// The arrival number of the latest-arrived packet delivered.
    pub latest_delivered: u64,
}

impl Flow {
    fn pinned(&self) -> bool {
        self.dirs[0].held + self.dirs[1].held > 0
    }
}

/// Slots per bucket.
const WAYS: usize = 4;

/// A fixed, set-associative table of flows. A flow idle for longer than
/// `idle` starts afresh; when a bucket is full the least recently used flow
/// without held packets gives way; if all hold packets, the new flow goes
/// untracked (its packets are not held: fail open).
pub struct Flows {
    slots: Box<[Flow]>,
    buckets: usize,
    idle: u64,
}

impl Flows {
    /// `slots` rounded up to a power of two (at least one bucket of 4).
    pub fn new(slots: usize, idle_ns: u64) -> Self {
        let slots = slots.max(WAYS).next_power_of_two();
        Flows {
            slots: vec![Flow::default(); slots].into_boxed_slice(),
            buckets: slots / WAYS,
            idle: idle_ns,
        }
    }

    /// Bytes of state, fixed at creation.
    pub fn memory(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Flow>()
    }

    /// The first slot of `key`'s bucket.
    fn bucket(&self, key: &FlowKey) -> usize {
        (key.hash() as usize & (self.buckets - 1)) * WAYS
    }

    /// Starts loading the keys of `key`'s bucket, which [`Flows::slot`]
    /// compares.
    pub fn prefetch(&self, key: &FlowKey) {
        let start = self.bucket(key);
        for flow in &self.slots[start..start + WAYS] {
            super::prefetch(flow);
        }
    }

    /// The slot of `key`'s flow, made if need be; `None` when its bucket
    /// is all flows holding packets.
    pub fn slot(&mut self, key: &FlowKey, now: u64) -> Option<usize> {
        let start = self.bucket(key);
        let idle = self.idle;
        let ways = &mut self.slots[start..start + WAYS];
        let stale = |f: &Flow| now.saturating_sub(f.used) > idle && !f.pinned();
        if let Some(i) = ways.iter().position(|f| f.key.as_ref() == Some(key)) {
            if stale(&ways[i]) {
                ways[i] = Flow::default();
                ways[i].key = Some(*key);
            }
            ways[i].used = ways[i].used.max(now);
            return Some(start + i);
        }
        let i = (0..WAYS)
            .filter(|&i| !ways[i].pinned())
            .min_by_key(|&i| (ways[i].key.is_some(), ways[i].used))?;
        ways[i] = Flow {
            key: Some(*key),
            used: now,
            ..Flow::default()
        };
        Some(start + i)
    }

    /// The flow in slot `i` (from [`Flows::slot`]).
    pub fn get(&mut self, i: usize) -> &mut Flow {
        &mut self.slots[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkType;
    use crate::tap::hash::tests::tcp4;

    fn segment(link: LinkType, data: &[u8], wire_len: usize) -> Option<Segment> {
        super::segment(&Parsed::new(link, data, wire_len))
    }

    #[test]
    fn segments_have_direction_sequence_space_and_ack() {
        let p = tcp4(64, 1000, 77, b"hello");
        let s = segment(LinkType::En10Mb, &p, p.len()).unwrap();
        assert_eq!((s.seq, s.end, s.ack, s.syn), (1000, 1005, Some(77), false));
        // The reply: same key, other direction.
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(80, 40000, u32::MAX, 1024)
            .syn()
            .ack(1);
        let mut r = Vec::new();
        b.write(&mut r, &[]).unwrap();
        let t = segment(LinkType::Raw, &r, r.len()).unwrap();
        assert_eq!((t.key, 1 - t.dir), (s.key, s.dir));
        assert_eq!((t.end, t.syn), (0, true), "SYN takes one, wrapping");
        // Not TCP, cut short, or not IP: no segment.
        assert_eq!(segment(LinkType::En10Mb, &p[..40], p.len()), None);
        assert_eq!(segment(LinkType::Ppp, &p, p.len()), None);
    }

    #[test]
    fn after_is_modular_and_bounded() {
        assert!(after(5, 1) && !after(1, 5) && !after(3, 3));
        assert!(after(2, u32::MAX - 2), "across the wrap");
        assert!(!after(1 << 31, 0), "too far ahead to be real");
    }

    #[test]
    fn the_table_is_fixed_and_keeps_flows_that_hold_packets() {
        let mut flows = Flows::new(4, 1_000);
        let key = |i: u16| FlowKey {
            a: ([0; 16], i),
            b: ([1; 16], 80),
            proto: 6,
        };
        let memory = flows.memory();
        let slots: Vec<usize> = (0..4).map(|i| flows.slot(&key(i), 10).unwrap()).collect();
        for &s in &slots {
            flows.get(s).dirs[0].held = 1;
        }
        assert_eq!(flows.slot(&key(9), 20), None, "all pinned: untracked");
        flows.get(slots[2]).dirs[0].held = 0;
        let s = flows.slot(&key(9), 20).unwrap();
        assert_eq!(s, slots[2], "the unpinned one gave way");
        assert_eq!(flows.slot(&key(9), 30), Some(s), "found again");
        // Idle too long: fresh state.
        flows.get(s).dirs[1].known = true;
        let s = flows.slot(&key(9), 5_000).unwrap();
        assert!(!flows.get(s).dirs[1].known);
        assert_eq!(flows.memory(), memory);
    }
}
