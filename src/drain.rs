//! Taking off, at shutdown, every datagram still queued, so the counters
//! are final: each is received and rejected as unread.

use std::os::fd::RawFd;

use crate::gro::datagram_lengths;
use crate::recv::Receiver;
use crate::stats::Stats;

/// At most this many datagrams are taken off at shutdown: more than the
/// receive buffer (twice its granted size, as the kernel accounts) can hold
/// of the smallest datagrams, plus what user space holds, so a sender that
/// keeps sending cannot keep shutdown going.
pub fn budget(recv_buffer_granted: usize) -> usize {
    /// Below any datagram's true size in the kernel (sk_buff and data).
    const MIN_TRUESIZE: usize = 256;
    (recv_buffer_granted.saturating_mul(2) / MIN_TRUESIZE).saturating_add(1 << 16)
}

/// Stops `rx` and counts as unread what it holds (a batch in user space,
/// io_uring's completions), then what the socket `fd` still holds; at most
/// `budget` datagrams. A datagram still lent out is released.
pub fn unread(rx: &mut dyn Receiver, fd: RawFd, budget: usize, stats: &mut Stats) {
    let mut left = budget;
    rx.release();
    rx.stop();
    while left > 0 {
        let Ok(Some(meta)) = rx.next() else {
            break;
        };
        left = left.saturating_sub(count(stats, meta.wire_len, meta.ancillary.gro_size));
    }
    rx.release();
    crate::recv::drain_socket(fd, left, |len, gro| {
        count(stats, len, gro);
    });
}

/// Counts the datagrams of one receive as unread; returns how many.
fn count(stats: &mut Stats, wire_len: usize, gro_size: Option<u16>) -> usize {
    let mut n = 0;
    for len in datagram_lengths(wire_len, gro_size) {
        stats.count_unread(len);
        n += 1;
    }
    n
}
