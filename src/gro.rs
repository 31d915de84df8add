//! UDP GRO: with it on, one receive may hold a run of datagrams from one
//! sender, each `size` bytes but the last, which may be shorter (the kernel
//! coalesces them in its receive path, so they cost one dequeue, one copy
//! and one control message). [`Segments`] hands them out one by one.

use std::ops::Range;

/// One datagram of a coalesced receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its bytes within the receive buffer (empty or short if the buffer
    /// was too small for the whole run).
    pub range: Range<usize>,
    /// Its length on the wire.
    pub wire_len: usize,
}

/// The datagrams of one coalesced receive still to be handed out.
#[derive(Clone, Debug, Default)]
pub struct Segments {
    size: usize,
    next: usize,
    captured: usize,
    wire: usize,
}

impl Segments {
    /// A receive of `wire` bytes, `captured` of them in the buffer, made of
    /// datagrams of `size` bytes (the last one may be shorter).
    pub fn new(size: usize, captured: usize, wire: usize) -> Self {
        Segments {
            size,
            next: 0,
            captured: captured.min(wire),
            wire,
        }
    }

    /// How many datagrams the run holds.
    pub fn count(&self) -> usize {
        if self.size == 0 {
            0
        } else {
            self.wire.div_ceil(self.size)
        }
    }

    /// Datagrams remain.
    pub fn pending(&self) -> bool {
        self.size > 0 && self.next < self.wire
    }

    /// The next datagram, if any.
    pub fn next_segment(&mut self) -> Option<Segment> {
        if !self.pending() {
            return None;
        }
        let start = self.next;
        let wire_len = self.size.min(self.wire - start);
        self.next += wire_len;
        let end = self.next.min(self.captured);
        Some(Segment {
            range: start.min(end)..end,
            wire_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut s: Segments) -> Vec<Segment> {
        std::iter::from_fn(|| s.next_segment()).collect()
    }

    fn seg(range: Range<usize>, wire_len: usize) -> Segment {
        Segment { range, wire_len }
    }

    #[test]
    fn a_run_splits_at_the_size_and_the_last_may_be_short() {
        assert_eq!(
            all(Segments::new(100, 250, 250)),
            [seg(0..100, 100), seg(100..200, 100), seg(200..250, 50)]
        );
        assert_eq!(all(Segments::new(50, 100, 100)).len(), 2);
        assert_eq!(Segments::new(100, 250, 250).count(), 3);
    }

    #[test]
    fn a_truncated_run_still_counts_every_datagram() {
        // 4 datagrams of 100 on the wire, 150 bytes in the buffer.
        assert_eq!(
            all(Segments::new(100, 150, 400)),
            [
                seg(0..100, 100),
                seg(100..150, 100),
                seg(150..150, 100),
                seg(150..150, 100)
            ]
        );
    }

    #[test]
    fn nothing_from_an_empty_or_sizeless_run() {
        assert!(all(Segments::default()).is_empty());
        assert!(all(Segments::new(0, 100, 100)).is_empty());
        assert!(all(Segments::new(100, 0, 0)).is_empty());
    }
}
