//! A clean tap from a messy mirror (issue 12): duplicate suppression
//! (`dedup`), reorder repair (`reorder`), and a check that tells an
//! operator when a feed without them needs them.
//!
//! Cloud mirrors deliver every packet twice when both ends of a
//! connection are mirrored (two sessions, two VNIs, TTLs a hop apart:
//! zeek/zeek#2206), and two mirror sources interleave the directions of a
//! connection wrongly by microseconds, so Zeek sees an ACK for data it has
//! not seen and declares a content gap (zeek/zeek#2207).
//!
//! - [`dedup::Dedup`]: a fixed table of (hash of the normalized inner
//!   packet, first time seen); a later copy within the window is suppressed.
//!   What the hash ignores is in [`hash`]; how the table ages and what
//!   bounds it, in [`dedup`].
//! - [`reorder::Reorder`]: a TCP segment that acknowledges data of the
//!   other direction not delivered yet is held, up to the window, until that
//!   data is delivered; held packets are copied into a bounded pool and go
//!   out in timestamp order, never dropped.
//! - [`detect::Detector`]: with an option off, a burst of packets a second
//!   is checked for what that option would repair, and [`Tap::advice`]
//!   says so once.
//!
//! Everything is keyed by the inner packet, so it works the same whatever
//! the tunnel, VNI or sender, per [`crate::source::Source`] (with
//! `workers=`, each worker's source has its own state: the balancing
//! program sends both directions and both copies of a flow to one worker).

pub mod dedup;
pub mod detect;
pub mod hash;
pub mod parsed;
pub mod pool;
pub mod reorder;
pub mod tcp;

use std::time::Duration;

use crate::cmsg::Timestamp;
use crate::link::LinkType;
use crate::source::Packet;

use parsed::Parsed;

pub use dedup::Dedup;
pub use detect::{Advice, Detector};
pub use reorder::{Budget, Hold, Reorder};

/// The window of a bare `dedup`: 1 ms. Copies of one packet from two
/// mirror sessions arrive tens to a few hundred microseconds apart
/// (zeek/zeek#2206: "sub-ms"; Arkime's sessions the same), so 1 ms takes
/// them with room to spare. A genuine retransmission comes after a
/// retransmission timeout (200 ms at least on Linux) or after three
/// duplicate ACKs (a round trip at least), and mostly differs anyway (IP ID,
/// TCP timestamp): 1 ms stays well clear of suppressing one.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_millis(1);

/// The window of a bare `reorder`: 1 ms. Mirror sources skew the two
/// directions by tens to hundreds of microseconds (zeek/zeek#2207:
/// "fine-time-scale"); a held packet waits at most this long, so it is
/// also the most latency reorder adds.
pub const DEFAULT_REORDER_WINDOW: Duration = Duration::from_millis(1);

/// The default window of the option `name` (`dedup` or `reorder`).
pub fn default_window(name: &str) -> Duration {
    match name {
        "reorder" => DEFAULT_REORDER_WINDOW,
        _ => DEFAULT_DEDUP_WINDOW,
    }
}

/// Nanoseconds since the epoch (0 before it), the time base of the tap.
pub fn nanos(ts: Timestamp) -> u64 {
    let sec = u64::try_from(ts.sec).unwrap_or(0);
    sec.saturating_mul(1_000_000_000)
        .saturating_add(u64::from(ts.nsec))
}

/// Asks the CPU to bring the cache line of `slot` in, so that a lookup
/// made after other work finds it there. Only a hint: it reads nothing.
#[inline]
fn prefetch<T>(slot: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch does not access memory as far as the program
        // can tell (it never faults), and the pointer is a live reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((slot as *const T).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Window as nanoseconds.
fn window_ns(window: Duration) -> u64 {
    u64::try_from(window.as_nanos()).unwrap_or(u64::MAX)
}

/// What the tap judges a packet by: its bytes and time, before any view
/// of it is made (so that a packet handed out is viewed once).
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    /// The inner packet's captured bytes.
    pub data: &'a [u8],
    /// Its length on the wire.
    pub wire_len: usize,
    /// Its link type.
    pub link_type: LinkType,
    /// The kernel's receive timestamp.
    pub timestamp: Timestamp,
}

impl<'a> Probe<'a> {
    /// The probe of a packet.
    pub fn of(p: &Packet<'a>) -> Self {
        Probe {
            data: p.data,
            wire_len: p.wire_len,
            link_type: p.link_type,
            timestamp: p.timestamp,
        }
    }
}

/// What the tap decided about a packet just received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it out now, from the receive buffer.
    Deliver,
    /// A copy of a packet seen within the dedup window: counted, not delivered.
    Suppress,
    /// Copied into the reorder pool; [`Tap::next_held`] hands it out later.
    Held,
}

/// [`Tap::judge`]'s verdict.
#[derive(Clone, Copy, Debug)]
pub enum Verdict {
    /// Hand it out now.
    Deliver,
    /// A copy: counted, not delivered.
    Suppress,
    /// Hold it: give its packet to [`Tap::hold`].
    Hold(Hold),
}

/// Dedup, reorder and the feed check of one source.
pub struct Tap {
    dedup: Option<Dedup>,
    reorder: Option<Reorder>,
    detector: Option<Detector>,
    deduplicated: u64,
}

impl Tap {
    /// The tap for these options; `check_feed` runs the detector for
    /// whichever option is off. `None` when there is nothing to do.
    pub fn new(
        dedup: Option<Duration>,
        reorder: Option<Duration>,
        check_feed: bool,
    ) -> Option<Tap> {
        let detector = (check_feed && (dedup.is_none() || reorder.is_none()))
            .then(|| Detector::new(dedup.is_none(), reorder.is_none()));
        if dedup.is_none() && reorder.is_none() && detector.is_none() {
            return None;
        }
        Some(Tap {
            dedup: dedup.map(Dedup::new),
            reorder: reorder.map(|w| Reorder::new(w, Budget::default())),
            detector,
            deduplicated: 0,
        })
    }

    /// Must a packet received at `timestamp` be judged? Only the feed
    /// check runs, and outside its burst: no (so with dedup and reorder off,
    /// a packet costs the source a branch and this comparison).
    pub fn wants(&mut self, timestamp: Timestamp) -> bool {
        if self.dedup.is_some() || self.reorder.is_some() {
            return true;
        }
        self.detector.as_mut().is_some_and(|d| d.due(timestamp.sec))
    }

    /// Judges a packet just received (its bytes still in the receive buffer).
    pub fn judge(&mut self, probe: &Probe<'_>) -> Verdict {
        // Parsed once for the hash, the segment and the feed check.
        let parsed = Parsed::new(probe.link_type, probe.data, probe.wire_len);
        if let Some(d) = &mut self.detector {
            d.observe(&parsed, probe.timestamp);
        }
        let at = nanos(probe.timestamp);
        // Both tables are asked for their lines before either is read, so
        // that the two cache misses overlap each other and the parsing.
        let hash = self.dedup.as_ref().map(|d| d.prefetch(d.hash(&parsed)));
        let segment = self
            .reorder
            .as_ref()
            .and_then(|r| r.prefetch(tcp::segment(&parsed)));
        if let (Some(d), Some(hash)) = (&mut self.dedup, hash) {
            if d.seen(hash, at) {
                self.deduplicated += 1;
                return Verdict::Suppress;
            }
        }
        let Some(r) = &mut self.reorder else {
            return Verdict::Deliver;
        };
        match r.decide(at, segment) {
            Some(hold) => Verdict::Hold(hold),
            None => Verdict::Deliver,
        }
    }

    /// Holds a copy of the packet [`Tap::judge`] said to hold.
    pub fn hold(&mut self, p: &Packet<'_>, hold: Hold) {
        if let Some(r) = &mut self.reorder {
            r.hold(p, hold);
        }
    }

    /// [`Tap::judge`] and [`Tap::hold`] in one, for a packet already viewed.
    pub fn admit(&mut self, p: &Packet<'_>) -> Admit {
        match self.judge(&Probe::of(p)) {
            Verdict::Deliver => Admit::Deliver,
            Verdict::Suppress => Admit::Suppress,
            Verdict::Hold(h) => {
                self.hold(p, h);
                Admit::Held
            }
        }
    }

    /// A held packet may go now.
    pub fn has_ready(&mut self) -> bool {
        self.reorder.as_mut().is_some_and(Reorder::has_ready)
    }

    /// The next held packet that may go, lent until [`Tap::done`] or
    /// the next call.
    pub fn next_held(&mut self) -> Option<Packet<'_>> {
        self.reorder.as_mut()?.next_ready()
    }

    /// Takes the next held packet that may go and counts it: `false` when
    /// none may; [`Tap::lent`] lends it.
    pub fn pop_held(&mut self) -> bool {
        self.reorder.as_mut().is_some_and(Reorder::pop_ready)
    }

    /// The packet [`Tap::pop_held`] took, until [`Tap::done`].
    pub fn lent(&self) -> Option<Packet<'_>> {
        self.reorder.as_ref()?.lent()
    }

    /// The caller is done with the packet from [`Tap::next_held`].
    pub fn done(&mut self) {
        if let Some(r) = &mut self.reorder {
            r.done();
        }
    }

    /// Time has reached `now` (ns since the epoch) without a packet: held
    /// packets whose window has passed may go.
    pub fn advance(&mut self, now: u64) {
        if let Some(r) = &mut self.reorder {
            r.advance(now);
        }
    }

    /// Lets every held packet go, in order (at shutdown).
    pub fn flush(&mut self) {
        if let Some(r) = &mut self.reorder {
            r.flush();
        }
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.reorder.as_ref().map_or(0, Reorder::held)
    }

    /// When the oldest held packet's window ends (ns since the epoch).
    pub fn next_expiry(&self) -> Option<u64> {
        self.reorder.as_ref()?.next_expiry()
    }

    /// The dedup window, if dedup is on.
    pub fn dedup_window(&self) -> Option<Duration> {
        self.dedup.as_ref().map(Dedup::window)
    }

    /// The reorder window, if reorder is on.
    pub fn reorder_window(&self) -> Option<Duration> {
        self.reorder.as_ref().map(Reorder::window)
    }

    /// Copies suppressed so far.
    pub fn deduplicated(&self) -> u64 {
        self.deduplicated
    }

    /// Packets whose delivery order was changed so far.
    pub fn reordered(&self) -> u64 {
        self.reorder.as_ref().map_or(0, Reorder::reordered)
    }

    /// What the feed check found, each kind once.
    pub fn advice(&mut self) -> Option<Advice> {
        self.detector.as_mut()?.advice()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tap::hash::tests::tcp4;

    /// An Ethernet packet of VNI 1 received at `sec`.`nsec`.
    pub fn packet(data: &[u8], sec: i64, nsec: u32) -> Packet<'_> {
        Packet {
            data,
            wire_len: data.len(),
            timestamp: Timestamp { sec, nsec },
            link_type: LinkType::En10Mb,
            vxlan_vni: Some(1),
            geneve_vni: None,
            geneve_options: &[],
            peer: None,
            geneve_option_value: None,
        }
    }

    #[test]
    fn all_off_is_no_tap_and_the_check_alone_wants_a_burst_a_second() {
        assert!(Tap::new(None, None, false).is_none());
        let mut tap = Tap::new(None, None, true).unwrap();
        let at = |sec| Timestamp { sec, nsec: 0 };
        let wanted = (0..2 * detect::BURST)
            .filter(|_| {
                let w = tap.wants(at(5));
                if w {
                    tap.judge(&Probe::of(&packet(&[0; 60], 5, 0)));
                }
                w
            })
            .count();
        assert_eq!(wanted, detect::BURST as usize);
        assert!(tap.wants(at(6)), "a new second");
        let mut on = Tap::new(Some(DEFAULT_DEDUP_WINDOW), None, true).unwrap();
        assert!(
            (0..10_000).all(|_| on.wants(at(7))),
            "dedup judges everything"
        );
    }

    #[test]
    fn dedup_comes_before_reorder_so_a_copy_never_takes_the_budget() {
        let mut tap = Tap::new(
            Some(DEFAULT_DEDUP_WINDOW),
            Some(DEFAULT_REORDER_WINDOW),
            false,
        )
        .unwrap();
        // The client's first byte (seq 100), then the server's SYN-ACK of it.
        let first = tcp4(64, 100, 0, b"x");
        assert_eq!(tap.admit(&packet(&first, 1, 0)), Admit::Deliver);
        let synack = {
            let b = etherparse::PacketBuilder::ethernet2([2; 6], [3; 6])
                .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
                .tcp(80, 40000, 500, 1024)
                .syn()
                .ack(101);
            let mut out = Vec::new();
            b.write(&mut out, &[]).unwrap();
            out
        };
        assert_eq!(tap.admit(&packet(&synack, 1, 5)), Admit::Deliver);
        // Acknowledges server data never seen: held; its copy is suppressed.
        let early = tcp4(64, 101, 777, b"");
        assert_eq!(tap.admit(&packet(&early, 1, 10)), Admit::Held);
        let copy = tcp4(63, 101, 777, b"");
        assert_eq!(tap.admit(&packet(&copy, 1, 20)), Admit::Suppress);
        assert_eq!((tap.held(), tap.deduplicated()), (1, 1));
        assert_eq!(tap.dedup_window(), Some(DEFAULT_DEDUP_WINDOW));
        tap.flush();
        let p = tap.next_held().unwrap();
        assert_eq!(p.data, &early[..]);
        tap.done();
        assert_eq!(tap.held(), 0);
    }

    // Hostile streams, every packet accounted for: fuzz/check/tap.rs, run
    // by the `tap` fuzz target and by tests/fuzz_regressions.rs.
}
