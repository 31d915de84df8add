//! The feed check: with dedup or reorder off, does the feed need them?
//!
//! Cheap by sampling: the first [`BURST`] packets of every second (by
//! kernel timestamp) are checked, the rest cost one comparison. Copies
//! 20-200 µs apart and an ACK 50-500 µs ahead of its data fall inside one
//! burst, whatever the rate. State is fixed: a small duplicate table and a
//! small flow table.
//!
//! - Duplicates: a packet seen again within 1 ms, by the hash dedup uses.
//! - Reordering: an ACK for data of the other direction not seen yet, and
//!   then, within 10 ms, the segment holding that data. Data that never
//!   comes (lost before the mirror) is not reordering and counts nothing.
//!
//! After [`THRESHOLD`] such events, [`Detector::advice`] says once what the
//! feed needs.

use std::fmt;

use super::dedup::Dedup;
use super::hash::PacketHasher;
use super::parsed::Parsed;
use super::tcp::{self, FlowState, Flows, Progress, after};
use super::{DEFAULT_DEDUP_WINDOW, nanos};
use crate::cmsg::Timestamp;

/// Packets checked per second.
pub const BURST: u32 = 512;
/// Events before the advice is given.
pub const THRESHOLD: u64 = 4;
/// How long after an early ACK its data still counts as reordered.
const LATE_DATA_NS: u64 = 10_000_000;

/// What the check found: a kind of trouble, with the events seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Copies of packets within 1 ms.
    Duplicates(u64),
    /// ACKs that arrived before the data they acknowledge.
    Reordering(u64),
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Advice::Duplicates(n) => write!(
                f,
                "the feed carries duplicate packets ({n} copies within 1 ms in samples), as a mirror of both ends of a connection does: add :dedup to the path (or set PacketSource::UDP::dedup) to suppress them"
            ),
            Advice::Reordering(n) => write!(
                f,
                "the feed reorders the directions of TCP connections ({n} ACKs in samples arrived before the data they acknowledge), which Zeek takes for content gaps: add :reorder to the path (or set PacketSource::UDP::reorder) to repair it"
            ),
        }
    }
}

/// One direction of a flow, as the check follows it.
#[derive(Clone, Copy, Debug, Default)]
struct Dir {
    /// What of it has been seen.
    seen: Progress,
    /// An ACK of it for data not seen yet, and when.
    unseen_ack: Option<(u32, u64)>,
}

/// A flow as the check follows it, indexed by direction.
#[derive(Clone, Copy, Debug, Default)]
struct Flow([Dir; 2]);

impl FlowState for Flow {}

/// The feed check of one source.
pub struct Detector {
    dups: Option<Dedup>,
    flows: Option<Flows<Flow>>,
    second: i64,
    left: u32,
    duplicates: u64,
    early_acks: u64,
    told_duplicates: bool,
    told_reordering: bool,
}

impl Detector {
    /// Checks for duplicates, for reordering, or both.
    pub fn new(duplicates: bool, reordering: bool) -> Self {
        let hasher = PacketHasher::random();
        Detector {
            dups: duplicates.then(|| Dedup::with(DEFAULT_DEDUP_WINDOW, 1024, hasher)),
            flows: reordering.then(|| Flows::new(256, LATE_DATA_NS * 100)),
            second: i64::MIN,
            left: 0,
            duplicates: 0,
            early_acks: 0,
            told_duplicates: false,
            told_reordering: false,
        }
    }

    /// Does a packet received in second `sec` fall in that second's
    /// burst? The one comparison every packet outside the bursts costs.
    pub fn due(&mut self, sec: i64) -> bool {
        if sec != self.second {
            self.second = sec;
            self.left = BURST;
        }
        self.left > 0
    }

    /// Looks at a packet received at `timestamp` (if it falls in this
    /// second's burst).
    pub fn observe(&mut self, p: &Parsed<'_>, timestamp: Timestamp) {
        if !self.due(timestamp.sec) {
            return;
        }
        self.left -= 1;
        let at = nanos(timestamp);
        if let Some(d) = &mut self.dups {
            self.duplicates += u64::from(d.is_copy(p, at));
        }
        if self.flows.is_some() {
            self.early_acks += u64::from(self.late_data(p, at));
        }
    }

    /// Is `p` data that an ACK seen earlier acknowledged before it came?
    fn late_data(&mut self, p: &Parsed<'_>, at: u64) -> bool {
        let (Some(flows), Some((key, seg))) = (self.flows.as_mut(), tcp::segment(p)) else {
            return false;
        };
        let Some(slot) = flows.slot(flows.place(&key), at) else {
            return false;
        };
        let Flow(dirs) = flows.get(slot);
        let (dir, other) = (seg.dir, 1 - seg.dir);
        let mut late = false;
        if let Some((ack, when)) = dirs[other].unseen_ack {
            // This segment holds the acknowledged data (not data sent after
            // it, which a stale sample would otherwise take for it).
            if after(ack, seg.seq) && !after(ack, seg.end) {
                late = at.saturating_sub(when) <= LATE_DATA_NS;
                dirs[other].unseen_ack = None;
            } else if at.saturating_sub(when) > LATE_DATA_NS {
                dirs[other].unseen_ack = None;
            }
        }
        dirs[dir].seen.reach(seg.end);
        if let Some(ack) = seg.ack {
            if dirs[other].seen.behind(ack) && dirs[dir].unseen_ack.is_none() {
                dirs[dir].unseen_ack = Some((ack, at));
            }
        }
        late
    }

    /// Duplicates seen in samples.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// ACKs seen before their data in samples.
    pub fn early_acks(&self) -> u64 {
        self.early_acks
    }

    /// What the feed needs, each kind once, after [`THRESHOLD`] events.
    pub fn advice(&mut self) -> Option<Advice> {
        if !self.told_duplicates && self.duplicates >= THRESHOLD {
            self.told_duplicates = true;
            return Some(Advice::Duplicates(self.duplicates));
        }
        if !self.told_reordering && self.early_acks >= THRESHOLD {
            self.told_reordering = true;
            return Some(Advice::Reordering(self.early_acks));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::hash::tests::tcp4;

    /// `d` observes an Ethernet packet received at `sec`.`nsec`.
    fn look(d: &mut Detector, data: &[u8], sec: i64, nsec: u32) {
        let p = Parsed::new(crate::link::LinkType::En10Mb, data, data.len());
        d.observe(&p, Timestamp { sec, nsec });
    }

    /// The server's side: 10.0.0.2:80 -> 10.0.0.1:40000.
    fn reply(seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(80, 40000, seq, 1024)
            .ack(ack);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn copies_are_noticed_once_and_clean_traffic_says_nothing() {
        let mut d = Detector::new(true, false);
        for i in 0..100u32 {
            let p = tcp4(64, i * 10, 1, b"0123456789");
            look(&mut d, &p, 100, i * 1000);
        }
        assert_eq!((d.duplicates(), d.advice()), (0, None));
        for i in 0..4u32 {
            let p = tcp4(64, 5000 + i, 1, b"x");
            let copy = tcp4(63, 5000 + i, 1, b"x");
            look(&mut d, &p, 101, i * 1000);
            look(&mut d, &copy, 101, i * 1000 + 150_000);
        }
        assert_eq!(d.advice(), Some(Advice::Duplicates(4)));
        assert_eq!(d.advice(), None, "once");
    }

    #[test]
    fn acks_before_their_data_are_noticed_lost_data_is_not() {
        let mut d = Detector::new(false, true);
        let mut t = 0u32;
        let mut feed = |d: &mut Detector, p: Vec<u8>| {
            t += 10_000;
            look(d, &p, 200, t);
        };
        feed(&mut d, tcp4(64, 100, 1000, b"req"));
        feed(&mut d, reply(1000, 103, b"hello"));
        for i in 0..4u32 {
            let (seq, ack) = (103 + i, 1005 + 5 * i);
            // The client's ACK of five bytes, then the bytes.
            feed(&mut d, tcp4(64, seq, ack + 5, b"k"));
            feed(&mut d, reply(ack, seq + 1, b"world"));
        }
        assert_eq!(d.early_acks(), 4);
        assert_eq!(d.advice(), Some(Advice::Reordering(4)));
        // Lost data: ACKs of bytes that never come count nothing.
        let mut d = Detector::new(false, true);
        feed(&mut d, tcp4(64, 100, 1000, b"req"));
        feed(&mut d, reply(1000, 103, b"hello"));
        for i in 0..8u32 {
            feed(&mut d, tcp4(64, 103 + i, 5000 + i, b"k"));
            feed(&mut d, reply(9000 + i, 104 + i, b""));
        }
        assert_eq!(d.early_acks(), 0);
    }

    #[test]
    fn only_a_burst_a_second_is_checked() {
        let mut d = Detector::new(true, false);
        let p = tcp4(64, 1, 1, b"x");
        // Past the burst in one second, copies go unseen.
        for i in 0..BURST {
            let q = tcp4(64, 10 + i, 1, b"y");
            look(&mut d, &q, 300, i);
        }
        look(&mut d, &p, 300, 600_000);
        look(&mut d, &p, 300, 600_100);
        assert_eq!(d.duplicates(), 0);
        look(&mut d, &p, 301, 0);
        look(&mut d, &p, 301, 100);
        assert_eq!(d.duplicates(), 1, "a new second, a new burst");
    }
}
