//! Duplicate suppression: a fixed table of (packet hash, first seen).
//!
//! Like Arkime's packet dedup, the table is allocated once and never grows,
//! and the answer fails open: when the table is too full a copy may pass,
//! never an original be lost. Unlike Arkime, which keeps one table per
//! wall-clock second and clears the oldest, entries here carry the kernel
//! timestamp of the packet that made them and age by it, so a window can be
//! sub-millisecond and results do not depend on when the process looks.
//!
//! Layout: buckets of [`WAYS`] slots (one cache line), picked by the hash.
//! A packet whose hash is in its bucket with a time less than the window
//! before (or after) its own is a copy. Otherwise it takes an empty or
//! expired slot of the bucket, or, if all are live, the oldest one
//! ([`Dedup::overwritten`] counts those: the table was too small for the
//! packet rate times the window, and a later copy of the overwritten packet
//! will pass).
//!
//! The window is measured from the first copy and a copy does not renew
//! it, so a stream of identical packets is not suppressed for ever.
//!
//! Bound: [`slots_for`] slots of 16 bytes, fixed at start: 4 per
//! microsecond of window, at least 1024 and at most 2^20 (16 MiB, for
//! windows of 262 ms and more). A flood of unique packets only overwrites
//! slots; it cannot grow the table.
//!
//! Why 4 per microsecond: one source takes at most about 1 Mpkt/s (one
//! thread), so at most a quarter of the table is live at once. A packet
//! then finds its bucket full about 2% of the time (at 250 kpkt/s, 1 in
//! 6,000) and overwrites the oldest entry, mostly older than the copy it
//! would catch (copies come 20-200 us apart). A table twice as big costs
//! every packet more cache misses (64 KiB at 1 ms stays in a core's L2
//! cache beside the receive buffers better than 128 KiB) for room a single
//! source seldom uses.

use std::time::Duration;

use super::hash::PacketHasher;
use super::parsed::Parsed;

/// Slots per bucket: 4 x 16 bytes, one cache line.
pub const WAYS: usize = 4;
/// Fewest and most slots.
pub const MIN_SLOTS: usize = 1024;
/// See [`MIN_SLOTS`].
pub const MAX_SLOTS: usize = 1 << 20;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    /// When it was first seen, ns since the epoch, with the low bit set so
    /// that 0 means empty.
    at: u64,
}

/// The duplicate table of one source.
pub struct Dedup {
    window: u64,
    slots: Box<[Slot]>,
    buckets: usize,
    hasher: PacketHasher,
    overwritten: u64,
}

/// Slots for a window: room for 4 packets per microsecond of it (four
/// times what one source receives at 1 Mpkt/s), within
/// [`MIN_SLOTS`]..=[`MAX_SLOTS`].
pub fn slots_for(window: Duration) -> usize {
    let us = usize::try_from(window.as_micros()).unwrap_or(usize::MAX);
    us.saturating_mul(4)
        .clamp(MIN_SLOTS, MAX_SLOTS)
        .next_power_of_two()
}

impl Dedup {
    /// A table for `window`, sized by [`slots_for`], with a random seed.
    pub fn new(window: Duration) -> Self {
        Self::with(window, slots_for(window), PacketHasher::random())
    }

    /// A table of `slots` slots (rounded up to a power of two, at least
    /// [`WAYS`]) and this hasher.
    pub fn with(window: Duration, slots: usize, hasher: PacketHasher) -> Self {
        let slots = slots.clamp(WAYS, MAX_SLOTS).next_power_of_two();
        Dedup {
            window: super::window_ns(window),
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            buckets: slots / WAYS,
            hasher,
            overwritten: 0,
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }

    /// Bytes of state, fixed at creation.
    pub fn memory(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Live entries overwritten because their bucket was full.
    pub fn overwritten(&self) -> u64 {
        self.overwritten
    }

    /// Is this packet (received at `at`, ns) a copy of one seen within the
    /// window? If not, it is remembered.
    pub fn is_copy(&mut self, p: &Parsed<'_>, at: u64) -> bool {
        let hash = self.hash(p);
        self.seen(hash, at)
    }

    /// The hash [`Dedup::seen`] takes.
    pub fn hash(&self, p: &Parsed<'_>) -> u64 {
        self.hasher.parsed(p)
    }

    /// Starts loading the bucket of `hash`, which [`Dedup::seen`] reads;
    /// returns `hash`.
    pub fn prefetch(&self, hash: u64) -> u64 {
        super::prefetch(&self.slots[self.bucket(hash)]);
        hash
    }

    /// The first slot of `hash`'s bucket.
    fn bucket(&self, hash: u64) -> usize {
        ((hash >> 32) as usize & (self.buckets - 1)) * WAYS
    }

    /// [`Dedup::is_copy`] for a hash already made.
    #[inline]
    pub fn seen(&mut self, hash: u64, at: u64) -> bool {
        let at = at | 1;
        let bucket = self.bucket(hash);
        let window = self.window;
        let ways = &mut self.slots[bucket..bucket + WAYS];
        // One pass without branches (whether a slot is live is a coin toss
        // for the branch predictor): a live slot of this hash is a copy;
        // else the first slot not live takes it, or, all live, the oldest.
        let (mut copy, mut free) = (false, 0u32);
        for (i, s) in ways.iter().enumerate() {
            let live = (s.at != 0) & (s.at.abs_diff(at) <= window);
            copy |= live & (s.hash == hash);
            free |= u32::from(!live) << i;
        }
        if copy {
            return true;
        }
        let victim = match free {
            0 => {
                self.overwritten += 1;
                (0..WAYS).min_by_key(|&i| ways[i].at).unwrap_or(0)
            }
            _ => free.trailing_zeros() as usize,
        };
        ways[victim] = Slot { hash, at };
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkType;
    use crate::tap::hash::tests::tcp4;

    const MS: u64 = 1_000_000;

    fn table(window_ms: u64, slots: usize) -> Dedup {
        let w = Duration::from_millis(window_ms);
        Dedup::with(w, slots, PacketHasher::with_seed(5, 6))
    }

    #[test]
    fn a_copy_within_the_window_is_suppressed_a_later_one_passes() {
        let mut d = table(1, 4096);
        let a = tcp4(64, 1, 1, b"GET /");
        let copy = tcp4(63, 1, 1, b"GET /");
        let t0 = 1_000 * MS;
        let is_copy =
            |d: &mut Dedup, p: &[u8], at| d.is_copy(&Parsed::new(LinkType::En10Mb, p, p.len()), at);
        assert!(!is_copy(&mut d, &a, t0));
        assert!(is_copy(&mut d, &copy, t0 + 200_000), "200 us later, TTL-1");
        assert!(is_copy(&mut d, &copy, t0 + MS), "at the window's edge");
        // A retransmission after the window is a packet again.
        assert!(!is_copy(&mut d, &a, t0 + MS + 1_000));
        // The second copy, ahead of the first by a little (other CPU).
        assert!(is_copy(&mut d, &a, t0 + MS + 1_000 - 5_000));
        let other = tcp4(64, 2, 1, b"GET /");
        assert!(!is_copy(&mut d, &other, t0 + 10));
    }

    #[test]
    fn a_copy_does_not_renew_the_window() {
        let mut d = table(1, 4096);
        let t0 = 5_000 * MS;
        assert!(!d.seen(42, t0));
        assert!(d.seen(42, t0 + MS / 2));
        assert!(d.seen(42, t0 + MS));
        assert!(!d.seen(42, t0 + MS + MS / 2), "measured from the first");
    }

    #[test]
    fn a_flood_of_unique_packets_keeps_the_size_and_overwrites_the_oldest() {
        let mut d = table(1000, 64);
        let memory = d.memory();
        assert_eq!(memory, 64 * 16);
        // 10 000 unique hashes within one window: the table cannot hold
        // them; it overwrites (counted) and never grows.
        for i in 0..10_000u64 {
            assert!(!d.seen(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1_000 * MS + i));
        }
        assert_eq!(d.memory(), memory);
        assert_eq!(d.overwritten(), 10_000 - 64);
        // The newest are still known.
        let last = 9_999u64.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert!(d.seen(last, 1_000 * MS + 10_000));
    }

    #[test]
    fn expired_entries_are_reused_before_live_ones() {
        let mut d = table(1, 4);
        for i in 0..4 {
            assert!(!d.seen(i << 40, 100 * MS));
        }
        for i in 4..8 {
            assert!(!d.seen(i << 40, 200 * MS));
        }
        assert_eq!(d.overwritten(), 0, "the first four had expired");
    }

    #[test]
    fn slots_follow_the_window_within_bounds() {
        assert_eq!(slots_for(Duration::from_micros(10)), MIN_SLOTS);
        assert_eq!(slots_for(Duration::from_millis(1)), 4096);
        assert_eq!(slots_for(Duration::from_secs(1)), MAX_SLOTS);
        assert_eq!(Dedup::new(Duration::from_secs(1)).memory(), 16 << 20);
    }
}
