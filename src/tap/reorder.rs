//! Reorder repair: a TCP segment that acknowledges data of the other
//! direction not delivered yet is held, up to the window, until that data
//! has been delivered.
//!
//! Rules, for each packet as it arrives:
//! - Not TCP, or TCP whose flow is not tracked: delivered at once.
//! - A segment with an ACK beyond what the other direction has delivered
//!   (or a SYN-ACK before any packet of the other direction, i.e. before its
//!   SYN) is held: it waits for that data.
//! - A segment of a direction that has packets held is held behind them, so
//!   a direction's own order never changes.
//! - Anything else is delivered at once, straight from the receive buffer:
//!   nothing is copied unless something waits.
//!
//! Held packets are copies ([`super::pool`]), kept in kernel-timestamp
//! order. The first held packet of a direction goes out as soon as what
//! it waits for has been delivered, or when its window has passed, or when
//! the budget is spent; they go out in timestamp order and none is
//! dropped. Time is the newest kernel timestamp seen, or the clock when the
//! socket is idle ([`Reorder::advance`]), so a backlog in the socket does not
//! count as waiting.
//!
//! `reordered` counts packets delivered after a packet of their flow that
//! arrived later than they did: the packets whose order Zeek sees changed.
//!
//! Bounds: the flow table is [`FLOW_SLOTS`] entries (fixed; flows idle for
//! [`FLOW_IDLE`] start afresh), and held packets at most the [`Budget`] (plus
//! the one packet being admitted): their buffers' capacity is what counts
//! against the byte budget.

use std::collections::VecDeque;
use std::time::Duration;

use super::parsed::Parsed;
use super::pool::OwnedPacket;
use super::tcp::{self, FlowState, Flows, Place, Progress, Segment};
use super::{Admit, nanos, window_ns};
use crate::flow::FlowKey;
use crate::source::Packet;

/// Flows tracked per source.
pub const FLOW_SLOTS: usize = 16384;
/// A flow unseen this long starts afresh (its sequence numbers are stale).
pub const FLOW_IDLE: Duration = Duration::from_secs(60);
/// Spare buffers kept for reuse, and the largest kept (1 MiB in all).
const SPARE: usize = 64;
const SPARE_CAPACITY: usize = 16 << 10;

/// How much may be held at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Packets.
    pub packets: usize,
    /// Bytes of buffer.
    pub bytes: usize,
}

impl Default for Budget {
    /// 1024 packets and 4 MiB: far more than the ACKs of a busy link wait
    /// for at once, and small enough that a scan of what is held (at most
    /// one per packet that delivers data something waits for) stays short.
    fn default() -> Self {
        Budget {
            packets: 1024,
            bytes: 4 << 20,
        }
    }
}

/// One direction of a flow.
#[derive(Clone, Copy, Debug, Default)]
struct Dir {
    /// What of it has been delivered.
    delivered: Progress,
    /// Packets of it held now.
    held: u32,
    /// Scan stamp (the first held packet of a direction is its head).
    mark: u32,
}

/// A flow's reorder state.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    /// Per direction, indexed by [`Segment::dir`].
    dirs: [Dir; 2],
    /// The arrival number of the latest-arrived packet delivered.
    latest_delivered: u64,
}

impl FlowState for Flow {
    fn pinned(&self) -> bool {
        self.dirs[0].held + self.dirs[1].held > 0
    }
}

/// Why and how a packet is held: what [`Reorder::decide`] found.
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    /// Kernel timestamp, ns.
    at: u64,
    /// Arrival number (order of admission).
    arrival: u64,
    /// Flow slot and direction.
    flow: usize,
    dir: usize,
    /// The acknowledgment it waits to see covered.
    wait: Option<u32>,
    /// Its sequence end, delivered with it.
    end: u32,
}

struct Entry {
    hold: Hold,
    /// Goes out as soon as it is first in line (budget).
    forced: bool,
    packet: OwnedPacket,
}

/// Reorder state of one source.
pub struct Reorder {
    window: u64,
    budget: Budget,
    flows: Flows<Flow>,
    /// Held packets in (timestamp, arrival) order.
    queue: VecDeque<Entry>,
    /// Packets and bytes of the held ones not yet forced out.
    open_packets: usize,
    open_bytes: usize,
    spare: Vec<Vec<u8>>,
    /// The held packet lent out now.
    out: Option<OwnedPacket>,
    now: u64,
    arrivals: u64,
    /// Something changed since the last scan found nothing ready.
    dirty: bool,
    scan: u32,
    reordered: u64,
}

impl Reorder {
    /// Repair within `window`, holding at most `budget`.
    pub fn new(window: Duration, budget: Budget) -> Self {
        Reorder {
            window: window_ns(window),
            budget,
            flows: Flows::new(FLOW_SLOTS, window_ns(FLOW_IDLE)),
            queue: VecDeque::new(),
            open_packets: 0,
            open_bytes: 0,
            spare: Vec::new(),
            out: None,
            now: 0,
            arrivals: 0,
            dirty: false,
            scan: 0,
            reordered: 0,
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }

    /// Bytes of fixed state (the flow table); held packets come on top,
    /// within the budget.
    pub fn memory(&self) -> usize {
        self.flows.memory()
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// Packets delivered after a later-arrived packet of their flow.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// When the first held packet's window ends, ns.
    pub fn next_expiry(&self) -> Option<u64> {
        self.queue
            .iter()
            .map(|e| e.hold.at.saturating_add(self.window))
            .min()
    }

    /// The clock reached `now` (ns) without a packet.
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// Every held packet may go, in order.
    pub fn flush(&mut self) {
        for e in &mut self.queue {
            e.forced = true;
        }
        self.open_packets = 0;
        self.open_bytes = 0;
        self.dirty = true;
    }

    /// Delivers `p` at once or holds a copy of it.
    pub fn admit(&mut self, p: &Packet<'_>) -> Admit {
        let seg = self.prefetch(tcp::segment(&Parsed::new(p.link_type, p.data, p.wire_len)));
        match self.decide(nanos(p.timestamp), seg) {
            None => Admit::Deliver,
            Some(hold) => {
                self.hold(p, hold);
                Admit::Held
            }
        }
    }

    /// Finds where the flow state of `seg` is and starts loading it, for
    /// [`Reorder::decide`].
    #[inline]
    pub fn prefetch(&self, seg: Option<(FlowKey, Segment)>) -> Option<(Segment, Place)> {
        seg.map(|(key, s)| (s, self.flows.place(&key)))
    }

    /// Whether a packet just received at `at` (ns), with this TCP segment
    /// if it is one, must be held; `None`: it is delivered now (and counted
    /// as such).
    #[inline]
    pub fn decide(&mut self, at: u64, seg: Option<(Segment, Place)>) -> Option<Hold> {
        self.now = self.now.max(at);
        self.arrivals += 1;
        let (seg, place) = seg?;
        let slot = self.flows.slot(place, self.now)?;
        let wait = self.wanted(slot, &seg);
        if wait.is_none() && self.flows.get(slot).dirs[seg.dir].held == 0 {
            self.delivered(slot, seg.dir, seg.end, self.arrivals);
            return None;
        }
        Some(Hold {
            at,
            arrival: self.arrivals,
            flow: slot,
            dir: seg.dir,
            wait,
            end: seg.end,
        })
    }

    /// The acknowledgment `seg` carries for data of the other direction
    /// not delivered yet.
    fn wanted(&mut self, slot: usize, seg: &Segment) -> Option<u32> {
        let ack = seg.ack?;
        let other = self.flows.get(slot).dirs[1 - seg.dir].delivered;
        match other.known {
            true => other.behind(ack).then_some(ack),
            // A SYN-ACK before its SYN.
            false => seg.syn.then_some(ack),
        }
    }

    /// Holds a copy of `p`, which [`Reorder::decide`] said to hold.
    pub fn hold(&mut self, p: &Packet<'_>, hold: Hold) {
        let packet = OwnedPacket::copy(p, self.spare.pop().unwrap_or_default());
        let entry = Entry {
            hold,
            forced: false,
            packet,
        };
        self.open_packets += 1;
        self.open_bytes += entry.packet.footprint();
        self.flows.get(hold.flow).dirs[hold.dir].held += 1;
        let key = (hold.at, hold.arrival);
        let i = self
            .queue
            .partition_point(|e| (e.hold.at, e.hold.arrival) <= key);
        self.queue.insert(i, entry);
        self.dirty = true;
        self.keep_budget();
    }

    /// Over budget: the first held packets go out, in order, until the
    /// rest fit.
    fn keep_budget(&mut self) {
        let mut i = 0;
        while (self.open_packets > self.budget.packets || self.open_bytes > self.budget.bytes)
            && i < self.queue.len()
        {
            let e = &mut self.queue[i];
            if !e.forced {
                e.forced = true;
                self.open_packets -= 1;
                self.open_bytes -= e.packet.footprint();
            }
            i += 1;
        }
    }

    /// A packet of (`slot`, `dir`) that arrived as number `arrival` and
    /// ends at `end` has been delivered.
    fn delivered(&mut self, slot: usize, dir: usize, end: u32, arrival: u64) {
        let flow = self.flows.get(slot);
        flow.dirs[dir].delivered.reach(end);
        if flow.latest_delivered > arrival {
            self.reordered += 1;
        }
        flow.latest_delivered = flow.latest_delivered.max(arrival);
        // Something of the other direction may have waited for this.
        self.dirty |= flow.dirs[1 - dir].held > 0;
    }

    /// A held packet may go now.
    pub fn has_ready(&mut self) -> bool {
        self.ready().is_some()
    }

    /// The next held packet that may go, lent until [`Reorder::done`] or
    /// the next call.
    pub fn next_ready(&mut self) -> Option<Packet<'_>> {
        match self.pop_ready() {
            true => self.lent(),
            false => None,
        }
    }

    /// Takes the next held packet that may go out of line and lends it
    /// ([`Reorder::lent`]); counts it delivered (and reordered). `false`:
    /// none may go now.
    pub fn pop_ready(&mut self) -> bool {
        self.done();
        let Some(i) = self.ready() else {
            return false;
        };
        // Mostly the first: a VecDeque makes that O(1) however many wait.
        let Some(e) = self.queue.remove(i) else {
            return false;
        };
        if !e.forced {
            self.open_packets -= 1;
            self.open_bytes -= e.packet.footprint();
        }
        let h = e.hold;
        let flow = self.flows.get(h.flow);
        flow.dirs[h.dir].held -= 1;
        let expired = h.at.saturating_add(self.window) <= self.now;
        if let (Some(ack), true) = (h.wait, expired) {
            // Its window passed without its data: take that data for lost,
            // so the packets behind it, which acknowledge the same, do not
            // wait a window each for it again. (One forced out by the budget
            // leaves the rest waiting.)
            flow.dirs[1 - h.dir].delivered.reach(ack);
        }
        self.delivered(h.flow, h.dir, h.end, h.arrival);
        self.dirty = true;
        self.out = Some(e.packet);
        true
    }

    /// The held packet [`Reorder::pop_ready`] took, until [`Reorder::done`].
    pub fn lent(&self) -> Option<Packet<'_>> {
        self.out.as_ref().map(OwnedPacket::packet)
    }

    /// Returns the lent packet's buffer to the pool.
    pub fn done(&mut self) {
        if let Some(p) = self.out.take() {
            if self.spare.len() < SPARE && p.footprint() <= SPARE_CAPACITY {
                self.spare.push(p.into_buf());
            }
        }
    }

    /// The first held packet that may go: the first of its direction in
    /// line, and forced out, past its window, or no longer waiting.
    fn ready(&mut self) -> Option<usize> {
        let first = self.queue.front()?;
        let expired = first.hold.at.saturating_add(self.window) <= self.now;
        if !self.dirty && !expired {
            return None;
        }
        self.scan = self.scan.wrapping_add(1);
        for i in 0..self.queue.len() {
            let (h, forced) = (self.queue[i].hold, self.queue[i].forced);
            let (wait, at, flow, dir) = (h.wait, h.at, h.flow, h.dir);
            let f = self.flows.get(flow);
            if f.dirs[dir].mark == self.scan {
                continue; // an earlier packet of its direction is in line
            }
            f.dirs[dir].mark = self.scan;
            let other = f.dirs[1 - dir].delivered;
            let covered = match wait {
                None => true,
                Some(ack) => other.known && !other.behind(ack),
            };
            if forced || covered || at.saturating_add(self.window) <= self.now {
                return Some(i);
            }
        }
        self.dirty = false;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmsg::Timestamp;
    use crate::link::LinkType;

    const US: u64 = 1_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    /// Client 10.0.0.1:40000 <-> server 10.0.0.2:80, bare IPv4.
    fn seg(from_client: bool, seq: u32, ack: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sp, dp) = match from_client {
            true => ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80),
            false => ([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000),
        };
        let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 1024);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(ack);
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn packet(data: &[u8], at: u64) -> Packet<'_> {
        Packet {
            data,
            wire_len: data.len(),
            timestamp: Timestamp {
                sec: (at / 1_000_000_000) as i64,
                nsec: (at % 1_000_000_000) as u32,
            },
            link_type: LinkType::Raw,
            vxlan_vni: Some(7),
            geneve_vni: None,
            geneve_options: &[],
            peer: None,
            geneve_option_value: None,
        }
    }

    /// Feeds packets (bytes, arrival time) and returns what came out, in
    /// order, draining held packets after each admit and at the end by the
    /// clock.
    fn run(r: &mut Reorder, feed: &[(Vec<u8>, u64)], end: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (bytes, at) in feed {
            if r.admit(&packet(bytes, *at)) == Admit::Deliver {
                out.push(bytes.clone());
            }
            while let Some(p) = r.next_ready() {
                out.push(p.data.to_vec());
            }
        }
        r.advance(end);
        while let Some(p) = r.next_ready() {
            out.push(p.data.to_vec());
        }
        out
    }

    fn reorder() -> Reorder {
        Reorder::new(Duration::from_millis(1), Budget::default())
    }

    #[test]
    fn an_ack_before_its_data_waits_for_the_data() {
        let syn = seg(true, 100, 0, "S", b"");
        let synack = seg(false, 500, 101, "SA", b"");
        let ack = seg(true, 101, 501, "A", b"");
        let req = seg(true, 101, 501, "A", b"GET / HTTP/1.1\r\n\r\n");
        let data = seg(false, 501, 119, "A", b"HTTP/1.1 200 OK\r\n");
        let ack2 = seg(true, 119, 518, "A", b"");
        // The server's data reaches us 300 us after the client's ACK of it.
        let feed = vec![
            (syn.clone(), T0),
            (synack.clone(), T0 + 10 * US),
            (ack.clone(), T0 + 20 * US),
            (req.clone(), T0 + 30 * US),
            (ack2.clone(), T0 + 40 * US),
            (data.clone(), T0 + 340 * US),
        ];
        let mut r = reorder();
        let out = run(&mut r, &feed, T0 + 10_000 * US);
        assert_eq!(out, vec![syn, synack, ack, req, data, ack2]);
        assert_eq!(r.reordered(), 1);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_synack_before_its_syn_waits_and_the_direction_keeps_its_order() {
        let syn = seg(true, 100, 0, "S", b"");
        let synack = seg(false, 500, 101, "SA", b"");
        let data = seg(false, 501, 101, "A", b"banner");
        let ack = seg(true, 101, 507, "A", b"");
        let feed = vec![
            (synack.clone(), T0),
            (data.clone(), T0 + 5 * US),
            (syn.clone(), T0 + 100 * US),
            (ack.clone(), T0 + 110 * US),
        ];
        let mut r = reorder();
        let out = run(&mut r, &feed, T0 + 10_000 * US);
        // The banner waits behind its direction's SYN-ACK.
        assert_eq!(out, vec![syn, synack, data, ack]);
        assert_eq!(r.reordered(), 2);
    }

    #[test]
    fn data_that_never_comes_releases_the_ack_after_the_window() {
        let syn = seg(true, 100, 0, "S", b"");
        let synack = seg(false, 500, 101, "SA", b"");
        let lost_ack = seg(true, 101, 9999, "A", b"");
        let next = seg(true, 101, 9999, "A", b"more");
        let other = seg(false, 501, 101, "A", b"x");
        let mut r = reorder();
        let feed = vec![
            (syn.clone(), T0),
            (synack.clone(), T0 + US),
            (lost_ack.clone(), T0 + 2 * US),
            (next.clone(), T0 + 3 * US),
            (other.clone(), T0 + 500 * US),
        ];
        let out = run(&mut r, &feed, T0 + 2 * US);
        // Still held: the window has not passed.
        assert_eq!(out, vec![syn.clone(), synack.clone(), other.clone()]);
        assert_eq!(r.held(), 2);
        assert_eq!(r.next_expiry(), Some(T0 + 2 * US + 1_000 * US));
        // Time passes (a later packet or the clock): both go, in order.
        r.advance(T0 + 1_003 * US);
        let rest: Vec<Vec<u8>> =
            std::iter::from_fn(|| r.next_ready().map(|p| p.data.to_vec())).collect();
        assert_eq!(rest, vec![lost_ack, next]);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn after_one_window_lost_data_is_given_up_for_the_packets_behind() {
        let syn = seg(true, 100, 0, "S", b"");
        let synack = seg(false, 500, 101, "SA", b"");
        // Three ACKs of server data the mirror lost, 400 us apart.
        let acks: Vec<Vec<u8>> = (0..3u32)
            .map(|i| seg(true, 101 + i, 9999, "A", &[i as u8]))
            .collect();
        let mut r = reorder();
        let mut feed = vec![(syn.clone(), T0), (synack.clone(), T0 + US)];
        for (i, a) in acks.iter().enumerate() {
            feed.push((a.clone(), T0 + (2 + 400 * i as u64) * US));
        }
        let out = run(&mut r, &feed, T0 + 802 * US);
        assert_eq!(out, vec![syn, synack]);
        // The first one's window ends: all three go, not one per window.
        r.advance(T0 + 1_002 * US);
        let rest: Vec<Vec<u8>> =
            std::iter::from_fn(|| r.next_ready().map(|p| p.data.to_vec())).collect();
        assert_eq!(rest, acks);
    }

    #[test]
    fn the_budget_forces_the_oldest_out_in_order_and_nothing_is_dropped() {
        let mut r = Reorder::new(
            Duration::from_millis(1),
            Budget {
                packets: 3,
                bytes: 1 << 20,
            },
        );
        let syn = seg(true, 100, 0, "S", b"");
        let synack = seg(false, 500, 101, "SA", b"");
        let mut feed = vec![(syn.clone(), T0), (synack.clone(), T0 + US)];
        // Ten client segments acknowledging server data never seen.
        let acks: Vec<Vec<u8>> = (0..10u32)
            .map(|i| seg(true, 101 + i, 600, "A", &[i as u8]))
            .collect();
        for (i, a) in acks.iter().enumerate() {
            feed.push((a.clone(), T0 + (10 + i as u64) * US));
        }
        let mut out = Vec::new();
        for (bytes, at) in &feed {
            if r.admit(&packet(bytes, *at)) == Admit::Deliver {
                out.push(bytes.clone());
            }
            while let Some(p) = r.next_ready() {
                out.push(p.data.to_vec());
            }
            assert!(r.held() <= 3, "held {} over the budget", r.held());
        }
        r.flush();
        while let Some(p) = r.next_ready() {
            out.push(p.data.to_vec());
        }
        let mut want = vec![syn, synack];
        want.extend(acks);
        assert_eq!(out, want, "all of them, in order");
    }

    #[test]
    fn held_packets_keep_their_metadata_and_budget_counts_bytes() {
        let mut r = Reorder::new(
            Duration::from_millis(1),
            Budget {
                packets: 100,
                bytes: 150,
            },
        );
        let syn = seg(true, 100, 0, "S", b"");
        let synack = seg(false, 500, 101, "SA", b"");
        assert_eq!(r.admit(&packet(&syn, T0)), Admit::Deliver);
        assert_eq!(r.admit(&packet(&synack, T0 + US)), Admit::Deliver);
        let big = seg(true, 101, 600, "A", &[1; 100]);
        assert_eq!(r.admit(&packet(&big, T0 + 2 * US)), Admit::Held);
        assert!(r.next_ready().is_none(), "140 bytes fit");
        let big2 = seg(true, 201, 600, "A", &[2; 100]);
        assert_eq!(r.admit(&packet(&big2, T0 + 3 * US)), Admit::Held);
        let p = r
            .next_ready()
            .expect("over the byte budget: the first goes");
        assert_eq!((p.data, p.vxlan_vni), (&big[..], Some(7)));
        assert_eq!(nanos(p.timestamp), T0 + 2 * US);
        assert!(r.next_ready().is_none());
        assert_eq!(r.held(), 1);
    }

    #[test]
    fn other_traffic_is_never_held_or_copied() {
        let mut r = reorder();
        let udp = {
            let b = etherparse::PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9).udp(1, 2);
            let mut v = Vec::new();
            b.write(&mut v, b"dns").unwrap();
            v
        };
        let syn = seg(true, 100, 0, "S", b"");
        let orphan_ack = seg(false, 7, 101, "A", b"");
        for (i, p) in [&udp, &syn, &orphan_ack, &udp].iter().enumerate() {
            assert_eq!(r.admit(&packet(p, T0 + i as u64)), Admit::Deliver);
        }
        assert_eq!((r.held(), r.spare.len(), r.reordered()), (0, 0, 0));
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn fixed_state_is_the_flow_table_of_1_mib() {
        let r = Reorder::new(Duration::from_millis(1), Budget::default());
        // The README states it: 16384 flows of one 64-byte line each.
        assert_eq!(r.memory(), FLOW_SLOTS * 64);
    }
}
