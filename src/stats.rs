//! Per-source counters. Every datagram taken off the socket is either
//! delivered or rejected for one reason, so `received == delivered +
//! rejected_total()` holds at every read; after [`crate::Source::shutdown`]
//! nothing is left uncounted, so `sent == received + kernel_drops` too.

use crate::reject::Reject;

/// Cumulative, never-decreasing counters of one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams taken from the socket.
    pub received: u64,
    /// UDP payload bytes of those datagrams, as sent (before truncation).
    pub bytes: u64,
    /// Inner packets handed out.
    pub delivered: u64,
    /// Datagrams rejected, indexed by [`Reject::index`].
    pub rejected: [u64; Reject::COUNT],
    /// Datagrams larger than their receive buffer, delivered truncated.
    pub truncated: u64,
    /// Datagrams the kernel dropped at this socket (receive buffer full).
    pub kernel_drops: u64,
    /// Receive calls or completions that failed (reported, never fatal).
    pub receive_errors: u64,
    /// Datagrams that came in a receive with others (UDP GRO).
    pub coalesced: u64,
    /// Delivered packets the caller's capture filter took out
    /// ([`crate::Source::filtered`]); a part of `delivered`.
    pub filtered: u64,
    /// Datagrams whose control data did not fit (MSG_CTRUNC): delivered,
    /// but their timestamp may be the time of reading instead.
    pub control_truncated: u64,
}

impl Stats {
    /// All rejected datagrams.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Datagrams rejected for `reason`.
    pub fn rejected_for(&self, reason: Reject) -> u64 {
        self.rejected[reason.index()]
    }

    pub(crate) fn count_datagram(&mut self, wire_len: usize, truncated: bool) {
        self.received += 1;
        self.bytes += wire_len as u64;
        self.truncated += u64::from(truncated);
    }

    pub(crate) fn count_reject(&mut self, reason: Reject) {
        self.rejected[reason.index()] += 1;
    }

    /// A datagram taken off at shutdown without being analysed.
    pub(crate) fn count_unread(&mut self, wire_len: usize) {
        self.count_datagram(wire_len, false);
        self.count_reject(Reject::UnreadAtShutdown);
    }
}

/// Widens the kernel's 32-bit socket drop counter (`sk_drops`, seen through
/// SO_MEMINFO) into a 64-bit count that never decreases.
///
/// A reading "behind" the last one (by less than half the range) is ignored
/// instead of being taken for a wrap, so a stale reading never adds 4 G.
#[derive(Clone, Copy, Debug, Default)]
pub struct DropCounter {
    last: u32,
    total: u64,
}

impl DropCounter {
    /// Takes one reading of the kernel's counter.
    pub fn observe(&mut self, raw: u32) {
        let delta = raw.wrapping_sub(self.last);
        if delta < 1 << 31 {
            self.total += u64::from(delta);
            self.last = raw;
        }
    }

    /// Drops counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}
