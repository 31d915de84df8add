//! UDP GRO: with it on, one receive may hold a run of datagrams from one
//! sender, each `size` bytes but the last, which may be shorter (the kernel
//! coalesces them in its receive path, so they cost one dequeue, one copy
//! and one control message). [`Segments`] splits a run; [`Coalescer`]
//! hands a source's receives out datagram by datagram; the recvmmsg
//! buffers' shape under GRO is here too.

use std::ops::Range;

use crate::recv::RecvMeta;

/// recvmmsg buffers with UDP GRO: a coalesced run stays below 64 KiB.
pub const GRO_BUFFER: usize = 65536;
/// At most this many recvmmsg buffers with UDP GRO (8 MiB).
pub const GRO_BATCH: usize = 128;

/// recvmmsg's (batch, buffer size) with UDP GRO on: buffers that hold a
/// whole run, and no more of them than [`GRO_BATCH`].
pub fn recvmmsg_shape(batch: usize, buffer_size: usize) -> (usize, usize) {
    (batch.min(GRO_BATCH), buffer_size.max(GRO_BUFFER))
}

/// The wire lengths of the datagrams in a receive of `wire_len` bytes:
/// one, or a run of `gro_size` each.
pub fn datagram_lengths(wire_len: usize, gro_size: Option<u16>) -> impl Iterator<Item = usize> {
    let mut run = gro_size.map(|size| Segments::new(usize::from(size), wire_len, wire_len));
    let mut single = gro_size.is_none().then_some(wire_len);
    std::iter::from_fn(move || match run.as_mut() {
        Some(run) => run.next_segment().map(|s| s.wire_len),
        None => single.take(),
    })
}

/// The datagram a source is handing out: a whole receive, or one of a
/// coalesced run, with its bytes' place in the receive buffer.
#[derive(Clone, Debug, Default)]
pub struct Coalescer {
    run: Segments,
    /// What the receive said, for every datagram of its run.
    meta: RecvMeta,
    /// The current datagram's bytes within the receive.
    range: Range<usize>,
}

impl Coalescer {
    /// Takes a new receive; returns its first datagram (`None` for a run
    /// that holds none) and how many datagrams were coalesced in it.
    pub fn start(&mut self, meta: RecvMeta) -> (Option<RecvMeta>, usize) {
        self.range = 0..meta.captured;
        let Some(size) = meta.ancillary.gro_size else {
            self.run = Segments::default();
            return (Some(meta), 0);
        };
        self.run = Segments::new(usize::from(size), meta.captured, meta.wire_len);
        self.meta = meta;
        (self.next_datagram(), self.run.count())
    }

    /// The next datagram of the current run, if any is left.
    pub fn next_datagram(&mut self) -> Option<RecvMeta> {
        let segment = self.run.next_segment()?;
        self.range = segment.range.clone();
        Some(RecvMeta {
            captured: segment.range.len(),
            wire_len: segment.wire_len,
            ..self.meta
        })
    }

    /// Datagrams of the current run remain: its buffer must stay lent.
    pub fn pending(&self) -> bool {
        self.run.pending()
    }

    /// The current datagram's bytes within its receive buffer.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

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
    fn lengths_of_a_single_datagram_and_of_a_run() {
        assert_eq!(datagram_lengths(70, None).collect::<Vec<_>>(), [70]);
        assert_eq!(
            datagram_lengths(250, Some(100)).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(datagram_lengths(0, None).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn the_coalescer_hands_out_a_run_then_nothing() {
        let mut c = Coalescer::default();
        let mut meta = RecvMeta {
            captured: 250,
            wire_len: 250,
            ..RecvMeta::default()
        };
        meta.ancillary.gro_size = Some(100);
        let (first, count) = c.start(meta);
        assert_eq!(
            (first.map(|m| m.wire_len), count, c.range()),
            (Some(100), 3, 0..100)
        );
        assert!(c.pending());
        assert_eq!(c.next_datagram().map(|m| m.captured), Some(100));
        assert_eq!(
            c.next_datagram().map(|m| (m.captured, m.wire_len)),
            Some((50, 50))
        );
        assert_eq!(c.range(), 200..250);
        assert!(!c.pending() && c.next_datagram().is_none());
        let single = RecvMeta {
            captured: 10,
            wire_len: 12,
            ..RecvMeta::default()
        };
        let (first, count) = c.start(single);
        assert_eq!(
            (first.map(|m| m.wire_len), count, c.range()),
            (Some(12), 0, 0..10)
        );
        assert!(!c.pending() && c.next_datagram().is_none());
    }

    #[test]
    fn nothing_from_an_empty_or_sizeless_run() {
        assert!(all(Segments::default()).is_empty());
        assert!(all(Segments::new(0, 100, 100)).is_empty());
        assert!(all(Segments::new(100, 0, 0)).is_empty());
    }
}
