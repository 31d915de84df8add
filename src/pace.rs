//! The batch-wait policy: after a receive that emptied the kernel's queue,
//! hold the next receive off for a while, so datagrams gather into one
//! fuller batch, as af_packet's block timeout does; meanwhile the caller
//! works through the batch it has. A full batch means more is waiting: no
//! hold-off. Starting the window at the receive, not when the batch runs
//! out, also saves the receive that would only have found the queue empty.
//!
//! The hold-off adapts, so it costs no datagram at any rate:
//! - it never exceeds `batch_wait` (the bound on the latency it adds);
//! - it ends before the datagrams arriving at the estimated rate could
//!   take half the socket's receive buffer (or the receiver's room, where
//!   the kernel fills that during the wait);
//! - after an idle spell the rate is unknown, so it starts at a sixteenth
//!   of the bound and at most doubles per batch ("slow start").
//!
//! The arrival rate is estimated once per cycle, at each receive that
//! drains the queue: the datagrams received since the one before that
//! drained it, over the time between the two. A cycle may hold several
//! receives (a full recvmmsg batch; io_uring takes about 32 datagrams per
//! enter), whose short gaps alone would overstate the rate. The estimate
//! follows a rise at once (the higher of the last sample and a moving
//! average) and a fall smoothly.
//!
//! Time is passed in, so tests drive the policy with a made-up clock.

use std::time::{Duration, Instant};

/// How the caller should wait for a source next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wait {
    /// Packets are waiting: call again at once.
    Now,
    /// Sleep on [`crate::Source::wait_fd`] until it is readable.
    OnFd,
    /// Sleep this long without watching the fd (datagrams are gathering).
    For(Duration),
}

impl Wait {
    /// The hold-off's length, if this is one.
    pub fn as_for(self) -> Option<Duration> {
        match self {
            Wait::For(d) => Some(d),
            _ => None,
        }
    }
}

/// Where datagrams wait while receives are held off.
#[derive(Clone, Copy, Debug)]
pub struct Room {
    /// The socket's receive buffer as granted ([`crate::socket::RecvBuffer`]),
    /// half of the kernel's limit on the memory its queued datagrams take.
    pub socket_bytes: usize,
    /// Datagrams the receiver takes in during a hold-off, where it fills
    /// before the socket does (io_uring without deferred task work);
    /// `None`: it takes nothing until asked.
    pub receiver: Option<usize>,
}

/// The first hold-off after an idle spell is the bound divided by this,
/// and no longer than [`FIRST_HOLD`]: the rate is not known yet.
const SLOW_START: u32 = 16;
/// At 1 Mpkt/s, 500 datagrams: 1 MiB of a buffer even at 2 KiB each.
const FIRST_HOLD: Duration = Duration::from_micros(500);

/// A gap between receives longer than this many bounds is an idle spell.
const IDLE_BOUNDS: u32 = 2;

/// The moving average moves by 1/this of the difference per sample.
const SMOOTHING: f64 = 4.0;

/// What a queued datagram of `len` bytes is assumed to cost the socket's
/// buffer (the kernel charges the skb's truesize): its data rounded up to
/// an allocation, plus the skb and its shared info. Loopback charges 832
/// bytes for a 178-byte datagram and 2120 for 1450; drivers that give each
/// packet a page fragment charge 2-4 KiB. Meant to err high.
pub fn charge(len: usize) -> usize {
    len.saturating_add(1024)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
        .max(2048)
}

fn first_hold(bound: Duration) -> Duration {
    (bound / SLOW_START).min(FIRST_HOLD)
}

/// When the next receive may happen.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    /// The longest hold-off (`batch_wait`); zero: none.
    bound: Duration,
    room: Room,
    /// The next hold-off, before the rate's cap (grows to `bound`).
    window: Duration,
    /// Datagrams per second: the last sample and the moving average.
    last_rate: f64,
    mean_rate: f64,
    /// Bytes per datagram, as the last receive saw.
    datagram_len: usize,
    /// The last receive from the kernel, empty or not.
    last_receive: Option<Instant>,
    /// The last receive that drained the queue, and the datagrams
    /// received since.
    cycle_start: Option<Instant>,
    cycle_count: usize,
    /// While set, receives are held off until then (gathering).
    gather_until: Option<Instant>,
}

impl Pacer {
    /// Holds receives off for at most `bound` after one that drained the
    /// queue (zero: never), within what `room` can take.
    pub fn new(bound: Duration, room: Room) -> Self {
        Pacer {
            bound,
            room,
            window: first_hold(bound),
            last_rate: 0.0,
            mean_rate: 0.0,
            datagram_len: 0,
            last_receive: None,
            cycle_start: None,
            cycle_count: 0,
            gather_until: None,
        }
    }

    /// A hold-off is running at `now`; clears it once it is over.
    pub fn holding(&mut self, now: Instant) -> bool {
        match self.gather_until {
            Some(until) if now < until => true,
            _ => {
                self.gather_until = None;
                false
            }
        }
    }

    /// A receive from the kernel happened at `now` and brought `count`
    /// datagrams (0: it found none) of about `len` bytes each; `drained`:
    /// it left the queue empty (a hint from the receiver).
    pub fn received(&mut self, now: Instant, count: usize, len: usize, drained: bool) {
        let gap = self.last_receive.map(|t| now.saturating_duration_since(t));
        self.last_receive = Some(now);
        self.gather_until = None;
        if self.bound.is_zero() {
            return;
        }
        if gap.is_none_or(|g| g > self.bound * IDLE_BOUNDS) {
            self.window = first_hold(self.bound);
        }
        self.cycle_count = self.cycle_count.saturating_add(count);
        if drained || count == 0 {
            let cycle = self.cycle_start.map(|t| now.saturating_duration_since(t));
            if let Some(cycle) = cycle.filter(|c| !c.is_zero()) {
                self.sample(self.cycle_count as f64 / cycle.as_secs_f64());
            }
            self.cycle_start = Some(now);
            self.cycle_count = 0;
        }
        if count == 0 {
            return;
        }
        self.datagram_len = len;
        if drained {
            let hold = self.window.min(self.cap());
            self.gather_until = now.checked_add(hold);
            self.window = (self.window * 2).min(self.bound);
        }
    }

    fn sample(&mut self, rate: f64) {
        self.last_rate = rate;
        self.mean_rate += (rate - self.mean_rate) / SMOOTHING;
    }

    /// The estimated arrival rate, datagrams per second.
    pub fn rate(&self) -> f64 {
        self.last_rate.max(self.mean_rate)
    }

    /// The longest hold-off the room allows at the estimated rate: until
    /// half the socket's buffer (or all of the receiver's room) would fill.
    fn cap(&self) -> Duration {
        let rate = self.rate();
        if rate <= 0.0 {
            return self.bound;
        }
        let socket = (self.room.socket_bytes / charge(self.datagram_len)) as f64;
        let room = match self.room.receiver {
            Some(n) => socket.min(n as f64),
            None => socket,
        };
        Duration::try_from_secs_f64(room / rate)
            .unwrap_or(self.bound)
            .min(self.bound)
    }

    /// No more hold-offs (the source has stopped).
    pub fn stop(&mut self) {
        self.bound = Duration::ZERO;
        self.gather_until = None;
    }

    /// How to wait at `now`, with `pending` datagrams already in user space.
    pub fn wait(&self, now: Instant, pending: bool) -> Wait {
        if pending {
            return Wait::Now;
        }
        match self.gather_until {
            Some(until) => Wait::For(until.saturating_duration_since(now)),
            None => Wait::OnFd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn room(socket_bytes: usize) -> Room {
        Room {
            socket_bytes,
            receiver: None,
        }
    }

    /// A source fed `rate` datagrams a second of `len` bytes, evenly, for
    /// `secs`, received as the pacer lets it (the caller's work between
    /// receives is free). Returns (receives per second, the most datagrams
    /// that waited in the socket at once, the longest a datagram waited).
    fn drive(p: &mut Pacer, rate: f64, len: usize, secs: f64) -> (f64, f64, Duration) {
        let t0 = Instant::now();
        let end = Duration::from_secs_f64(secs);
        let arrived = |at: Duration| (at.as_secs_f64() * rate).floor();
        let (mut taken, mut receives, mut most, mut oldest) = (0.0, 0u32, 0.0f64, Duration::ZERO);
        let mut now = Duration::ZERO;
        while now < end {
            let waiting = arrived(now) - taken;
            most = most.max(waiting);
            if waiting > 0.0 {
                // The first of them arrived at (taken + 1) / rate.
                let first = Duration::from_secs_f64((taken + 1.0) / rate);
                oldest = oldest.max(now.saturating_sub(first));
            }
            taken += waiting;
            receives += 1;
            p.received(t0 + now, waiting as usize, len, true);
            now = match p.wait(t0 + now, false) {
                Wait::For(d) => now + d.max(Duration::from_micros(1)),
                // Woken by the next datagram.
                _ => Duration::from_secs_f64((taken + 1.0) / rate),
            };
        }
        (f64::from(receives) / secs, most, oldest)
    }

    #[test]
    fn only_a_draining_receive_that_brought_datagrams_starts_a_hold_off() {
        let t = Instant::now();
        let mut p = Pacer::new(5 * MS, room(1 << 20));
        p.received(t, 3, 100, false);
        assert!(!p.holding(t), "a full batch: more is waiting");
        assert_eq!(p.wait(t, false), Wait::OnFd);
        p.received(t + MS, 0, 0, true);
        assert!(!p.holding(t + MS), "nothing came: sleep on the fd");
        p.received(t + 2 * MS, 1, 100, true);
        assert!(p.holding(t + 2 * MS));
        assert!(matches!(p.wait(t + 2 * MS, false), Wait::For(d) if d <= 5 * MS));
        assert_eq!(p.wait(t + 2 * MS, true), Wait::Now, "work in hand first");
        p.stop();
        assert!(!p.holding(t + 2 * MS));
        p.received(t + 3 * MS, 1, 100, true);
        assert_eq!(p.wait(t + 3 * MS, false), Wait::OnFd, "stopped: never");
    }

    #[test]
    fn zero_never_holds_off() {
        let t = Instant::now();
        let mut p = Pacer::new(Duration::ZERO, room(1 << 20));
        p.received(t, 1, 100, true);
        p.received(t + MS, 1, 100, true);
        assert!(!p.holding(t + MS));
        assert_eq!(p.wait(t + MS, false), Wait::OnFd);
    }

    #[test]
    fn after_idle_the_hold_off_starts_small_and_doubles_to_the_bound() {
        let t = Instant::now();
        let bound = 8 * MS;
        let mut p = Pacer::new(bound, room(16 << 20));
        let mut at = t;
        let mut holds = Vec::new();
        for _ in 0..7 {
            p.received(at, 10, 100, true);
            let Wait::For(d) = p.wait(at, false) else {
                panic!("no hold-off")
            };
            holds.push(d);
            at += d;
        }
        let us = Duration::from_micros;
        assert_eq!(holds, [500, 1000, 2000, 4000, 8000, 8000, 8000].map(us));
        // A spell of more than two bounds without receives: small again.
        at += 3 * bound;
        p.received(at, 1, 100, true);
        assert_eq!(p.wait(at, false), Wait::For(us(500)));
        // A long bound starts no higher.
        let mut p = Pacer::new(Duration::from_secs(1), room(16 << 20));
        p.received(t, 1, 100, true);
        assert_eq!(p.wait(t, false), Wait::For(FIRST_HOLD));
    }

    #[test]
    fn the_hold_off_ends_before_half_the_buffer_fills_at_any_rate() {
        let buffer = 4 << 20;
        for len in [64, 200, 1500, 9000] {
            for rate in [1e3, 5e4, 2e5, 8e5, 2e6, 1e7] {
                let mut p = Pacer::new(Duration::from_secs(1), room(buffer));
                let (_, most, _) = drive(&mut p, rate, len, 1.0);
                let bytes = most * charge(len) as f64;
                assert!(
                    bytes <= buffer as f64 * 1.01,
                    "{len} B at {rate}/s: {most} datagrams ({bytes} B) waited"
                );
            }
        }
    }

    #[test]
    fn the_receivers_room_caps_too() {
        let mut p = Pacer::new(
            Duration::from_secs(1),
            Room {
                socket_bytes: 1 << 30,
                receiver: Some(256),
            },
        );
        let (_, most, _) = drive(&mut p, 1e6, 100, 0.5);
        assert!(most <= 257.0, "{most} datagrams waited for 256 buffers");
    }

    #[test]
    fn wakes_are_of_af_packets_order_and_latency_stays_bounded() {
        let bound = 5 * MS;
        for (rate, most_wakes) in [(1e3, 250.0), (5e4, 250.0), (2e5, 250.0)] {
            let mut p = Pacer::new(bound, room(8 << 20));
            let (wakes, _, oldest) = drive(&mut p, rate, 178, 2.0);
            assert!(wakes <= most_wakes, "{rate}/s: {wakes} receives a second");
            assert!(
                oldest <= bound + Duration::from_micros(2),
                "{rate}/s: a datagram waited {oldest:?}"
            );
        }
    }

    #[test]
    fn the_rate_follows_a_rise_at_once_and_a_fall_smoothly() {
        let t = Instant::now();
        let mut p = Pacer::new(5 * MS, room(8 << 20));
        p.received(t, 1, 100, true);
        p.received(t + MS, 1000, 100, true);
        assert_eq!(p.rate(), 1e6, "a rise counts at once");
        p.received(t + 2 * MS, 1, 100, true);
        assert!(p.rate() > 1e5, "a fall is smoothed: {}", p.rate());
    }

    #[test]
    fn receives_within_a_cycle_do_not_overstate_the_rate() {
        // 50 k/s gathered for 5 ms (250 datagrams), taken ~32 at a time
        // 30 us apart, as io_uring does: the rate is 50 k/s, not 1 M/s.
        let bound = 5 * MS;
        let mut p = Pacer::new(bound, room(8 << 20));
        let mut at = Instant::now();
        p.received(at, 1, 178, true);
        let mut drained_at = at;
        for _ in 0..20 {
            at += p.wait(at, false).as_for().unwrap_or(bound);
            let mut left = ((at - drained_at).as_secs_f64() * 5e4) as usize;
            while left > 32 {
                p.received(at, 32, 178, false);
                left -= 32;
                at += Duration::from_micros(30);
                // Arrivals meanwhile come with the last receive.
                left += 1;
            }
            p.received(at, left, 178, true);
            drained_at = at;
        }
        assert!(p.rate() < 5.5e4, "{}", p.rate());
        assert_eq!(p.wait(at, false), Wait::For(bound));
    }

    #[test]
    fn charges_err_high() {
        assert_eq!(charge(0), 2048);
        assert_eq!(charge(178), 2048, "loopback charges 832");
        assert_eq!(charge(1450), 4096, "loopback charges 2120");
        assert_eq!(charge(usize::MAX), usize::MAX);
    }
}
