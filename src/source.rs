//! A packet source: one socket, one receiver, and a short loop over each
//! datagram: receive ([`crate::gro`] splits coalesced runs, [`crate::pace`]
//! spaces the receives), admit (the path's allowlist), decapsulate into a
//! view ([`crate::packet`]), count ([`crate::stats`]); with `dedup` or
//! `reorder`, the tap ([`crate::tap`]) judges each packet before it is
//! viewed.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use crate::decap::Inner;
use crate::error::Error;
use crate::gro::Coalescer;
use crate::pace::{Pacer, Room};
use crate::packet::Unwrap;
use crate::path::{self, SourcePath};
use crate::recv::{MmsgReceiver, Receiver, ReceiverKind, RecvMeta, UringReceiver};
use crate::reject::Reject;
use crate::socket::{self, Listener, RecvBuffer};
use crate::stats::{DropCounter, Stats};
use crate::tap::{self, Advice, Probe, Tap, Verdict};

pub use crate::config::{Config, GRO_BATCH, GRO_BUFFER};
pub use crate::pace::Wait;
pub use crate::packet::Packet;

/// What [`Source::next_event`] found.
#[derive(Debug)]
pub enum Event<'a> {
    /// A packet to analyse.
    Packet(Packet<'a>),
    /// A datagram was rejected (already counted and released).
    Rejected(Reject),
    /// Nothing is waiting.
    Idle,
}

/// One datagram's fate, without borrows.
enum Step {
    /// Deliver the packet `inner` finds, now.
    Deliver(Inner, RecvMeta),
    /// Rejected (counted, released).
    Reject(Reject),
    /// The tap took it: a copy suppressed, or a packet held (counted,
    /// released).
    Taken,
}

/// At most this many rejects are skipped in one [`Source::next_packet`]
/// (and in one call of the Zeek shim, `ZUS_REJECTS_PER_CALL`), so a flood
/// of garbage cannot keep the caller inside one call.
pub const REJECTS_PER_CALL: usize = 4096;

/// After this many receives in a row have failed, the source gives up
/// ([`Source::failure`]): an error that persists (a socket gone bad, a
/// kernel that cannot re-arm a receive) would otherwise be retried forever.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 64;

/// A UDP tunnel packet source.
pub struct Source {
    rx: Box<dyn Receiver>,
    listener: Listener,
    unwrap: Unwrap,
    path: SourcePath,
    stats: Stats,
    drops: DropCounter,
    pacer: Pacer,
    /// The datagram being handed out, within its (maybe coalesced) receive.
    gro: Coalescer,
    /// Receives that failed since the last one that did not.
    consecutive_errors: u32,
    /// Why the source gave up, once it has.
    failure: Option<String>,
    /// [`Source::shutdown`] ran.
    shut: bool,
    /// Dedup, reorder and the feed check; `None` when all are off.
    tap: Option<Tap>,
    /// The packet lent out now is a held one, owned by the tap.
    lent_from_tap: bool,
    /// How long datagrams may wait in the socket by the pacer's choice:
    /// held packets' windows are judged that far behind the clock.
    tap_lag: u64,
}

impl Source {
    /// Parses `path` (with or without `udp::`) and opens it.
    pub fn open(path: &str, config: &Config) -> Result<Source, Error> {
        Source::open_path(path::parse(path)?, config)
    }

    /// Opens an already parsed path.
    pub fn open_path(path: SourcePath, config: &Config) -> Result<Source, Error> {
        config.validate(&path)?;
        let listener = Listener::bind(path.addr, config.recv_buffer_size)?;
        if let Some(workers) = path.workers {
            let prog = crate::balance::program(path.encap, path.link_type, workers);
            listener
                .attach_reuseport_cbpf(&prog)
                .map_err(|source| Error::Socket {
                    addr: path.addr,
                    call: "SO_ATTACH_REUSEPORT_CBPF (workers=)",
                    source,
                })?;
        }
        if config.udp_gro {
            listener.enable_gro().map_err(|source| Error::Socket {
                addr: path.addr,
                call: "UDP_GRO (udp_gro)",
                source,
            })?;
        }
        let tap = Tap::new(
            path.dedup.or(config.dedup),
            path.reorder.or(config.reorder),
            config.check_feed,
        );
        let rx = receiver(&listener, &path, config)?;
        let room = Room {
            socket_bytes: listener.recv_buffer.granted,
            receiver: rx.room(),
        };
        Ok(Source {
            rx,
            listener,
            unwrap: Unwrap::new(&path, config.geneve_key_option),
            path,
            stats: Stats::default(),
            drops: DropCounter::default(),
            pacer: Pacer::new(config.batch_wait, room),
            gro: Coalescer::default(),
            consecutive_errors: 0,
            failure: None,
            shut: false,
            tap,
            lent_from_tap: false,
            tap_lag: u64::try_from(config.batch_wait.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// The next packet, skipping (and counting) rejected datagrams.
    /// `Ok(None)` when nothing is waiting. Errors are counted and not fatal.
    pub fn next_packet(&mut self) -> io::Result<Option<Packet<'_>>> {
        for _ in 0..REJECTS_PER_CALL {
            if self.held_ready() {
                return Ok(self.held_packet());
            }
            match self.step()? {
                Some(Step::Deliver(inner, meta)) => return Ok(Some(self.view(&inner, &meta))),
                Some(Step::Reject(_) | Step::Taken) => continue,
                None if self.held_due() => return Ok(self.held_packet()),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Like [`Source::next_packet`], but reports each rejected datagram, so a
    /// caller can raise a weird for it.
    pub fn next_event(&mut self) -> io::Result<Event<'_>> {
        for _ in 0..REJECTS_PER_CALL {
            if self.held_ready() {
                return Ok(self.held_packet().map_or(Event::Idle, Event::Packet));
            }
            return Ok(match self.step()? {
                Some(Step::Deliver(inner, meta)) => Event::Packet(self.view(&inner, &meta)),
                Some(Step::Reject(reason)) => Event::Rejected(reason),
                Some(Step::Taken) => continue,
                None if self.held_due() => self.held_packet().map_or(Event::Idle, Event::Packet),
                None => Event::Idle,
            });
        }
        Ok(Event::Idle)
    }

    /// One datagram through the loop: received, counted, admitted and
    /// decapsulated, then judged by the tap; or rejected for a reason.
    /// `None` when none is waiting.
    ///
    /// The verdict holds no borrow (the caller loops over rejects, which
    /// the borrow checker refuses around a borrowed packet), so the packet's
    /// view takes the same frame again in [`Source::view`].
    fn step(&mut self) -> io::Result<Option<Step>> {
        let Some(meta) = self.next_datagram()? else {
            return Ok(None);
        };
        self.stats.count_datagram(meta.wire_len, meta.truncated());
        self.stats.control_truncated += u64::from(meta.ancillary.truncated);
        let verdict = self.admit(&meta).and_then(|()| {
            let frame = self.rx.frame().narrow(self.gro.range());
            self.unwrap.inner(frame.datagram(), meta.wire_len)
        });
        let inner = match verdict {
            Ok(inner) => inner,
            Err(reason) => {
                self.stats.count_reject(reason);
                self.release();
                return Ok(Some(Step::Reject(reason)));
            }
        };
        if self.tap.is_some() && !self.tap_takes(&inner, &meta) {
            self.release();
            return Ok(Some(Step::Taken));
        }
        self.stats.delivered += 1;
        Ok(Some(Step::Deliver(inner, meta)))
    }

    /// Lets the tap judge a decapsulated packet: `true` to deliver it now;
    /// otherwise it was suppressed or held (and counted).
    fn tap_takes(&mut self, inner: &Inner, meta: &RecvMeta) -> bool {
        let Some(tap) = self.tap.as_mut() else {
            return true;
        };
        let timestamp = meta
            .ancillary
            .timestamp
            .unwrap_or_else(crate::Timestamp::now);
        if !tap.wants(timestamp) {
            return true;
        }
        let frame = self.rx.frame().narrow(self.gro.range());
        let datagram = frame.datagram();
        let bytes = datagram
            .get(inner.captured(datagram.len()))
            .unwrap_or_default();
        let probe = Probe {
            data: bytes,
            wire_len: inner.wire_len,
            // A bare EtherType behind GENEVE gets its Ethernet header only
            // in the view: judged as what it is, no IP.
            link_type: match inner.ethertype {
                Some(_) => crate::LinkType::Ppp,
                None => inner.link_type,
            },
            timestamp,
        };
        match tap.judge(&probe) {
            Verdict::Deliver => return true,
            Verdict::Suppress => self.stats.deduplicated += 1,
            Verdict::Hold(hold) => {
                let frame = self.rx.frame().narrow(self.gro.range());
                let packet = self.unwrap.view(frame, inner, meta);
                tap.hold(&packet, hold);
                self.stats.held += 1;
            }
        }
        false
    }

    /// A held packet may go now.
    fn held_ready(&mut self) -> bool {
        self.tap.as_mut().is_some_and(Tap::has_ready)
    }

    /// Nothing came: time passes for held packets (as far as the clock,
    /// less what the pacer may leave waiting in the socket). A held packet
    /// may go now.
    fn held_due(&mut self) -> bool {
        let Some(tap) = self.tap.as_mut() else {
            return false;
        };
        if tap.held() == 0 {
            return false;
        }
        tap.advance(tap::nanos(crate::Timestamp::now()).saturating_sub(self.tap_lag));
        tap.has_ready()
    }

    /// Lends the next held packet that may go.
    fn held_packet(&mut self) -> Option<Packet<'_>> {
        self.release_lent();
        let tap = self.tap.as_mut()?;
        if !tap.pop_held() {
            return None;
        }
        self.stats.delivered += 1;
        self.stats.held -= 1;
        self.stats.reordered = tap.reordered();
        self.lent_from_tap = true;
        self.tap.as_ref()?.lent()
    }

    /// The packet lent last goes back, wherever it came from.
    fn release_lent(&mut self) {
        if let Some(tap) = self.tap.as_mut() {
            if std::mem::take(&mut self.lent_from_tap) {
                tap.done();
                return;
            }
        }
        self.release();
    }

    /// The packet a delivered datagram holds.
    fn view(&mut self, inner: &Inner, meta: &RecvMeta) -> Packet<'_> {
        let frame = self.rx.frame().narrow(self.gro.range());
        self.unwrap.view(frame, inner, meta)
    }

    /// The next datagram: the next of a coalesced run, or a new receive
    /// unless a hold-off is running. `None` when none is waiting.
    fn next_datagram(&mut self) -> io::Result<Option<RecvMeta>> {
        if let Some(why) = &self.failure {
            return Err(io::Error::other(why.clone()));
        }
        if self.shut {
            return Ok(None);
        }
        if let Some(meta) = self.gro.next_datagram() {
            return Ok(Some(meta));
        }
        let from_kernel = !self.rx.has_pending();
        let now = from_kernel.then(Instant::now);
        if let Some(now) = now {
            if self.pacer.holding(now) {
                return Ok(None);
            }
        }
        let received = self.rx.next();
        self.note_receive(&received);
        let received = received?;
        if let Some(now) = now {
            let (count, len) = match &received {
                Some(meta) => (self.rx.batch_len(), meta.wire_len),
                None => (0, 0),
            };
            self.pacer.received(now, count, len, self.rx.drained());
        }
        let Some(meta) = received else {
            return Ok(None);
        };
        let (first, coalesced) = self.gro.start(meta);
        self.stats.coalesced += coalesced as u64;
        Ok(first)
    }

    /// Counts a failed receive; gives up when failures persist.
    fn note_receive<T>(&mut self, received: &io::Result<T>) {
        let Err(e) = received else {
            self.consecutive_errors = 0;
            return;
        };
        self.stats.receive_errors += 1;
        self.consecutive_errors += 1;
        if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            self.failure = Some(format!(
                "the {} receiver failed {} times in a row, the last time with: {e}; the source has stopped (restart it; if this repeats, try the other receiver)",
                self.rx.kind().name(),
                self.consecutive_errors
            ));
        }
    }

    /// The path's allowlist, if it has one, must hold the sender.
    fn admit(&self, meta: &RecvMeta) -> Result<(), Reject> {
        if self.path.allow.is_empty() {
            return Ok(());
        }
        match meta.peer {
            Some(peer) if self.path.allow.iter().any(|c| c.contains(peer.ip())) => Ok(()),
            _ => Err(Reject::SourceNotAllowed),
        }
    }

    /// Gives the receive buffer back once no datagram of it is left.
    fn release(&mut self) {
        if !self.gro.pending() {
            self.rx.release();
        }
    }

    /// How to wait before calling [`Source::next_packet`] again: with
    /// packets held, no longer than until the first one's window ends.
    pub fn wait(&self) -> Wait {
        let wait = self.pacer.wait(Instant::now(), self.has_pending());
        let Some(expiry) = self.tap.as_ref().and_then(Tap::next_expiry) else {
            return wait;
        };
        let now = tap::nanos(crate::Timestamp::now()).saturating_sub(self.tap_lag);
        let left = std::time::Duration::from_nanos(expiry.saturating_sub(now));
        match wait {
            Wait::Now => Wait::Now,
            _ if left.is_zero() => Wait::Now,
            Wait::For(d) => Wait::For(d.min(left)),
            Wait::OnFd => Wait::For(left),
        }
    }

    /// The caller is done with the packet from `next`; its buffer is reused.
    pub fn done(&mut self) {
        self.release_lent();
    }

    /// The caller's capture filter took out the packet from `next`: counts
    /// it as filtered (it stays delivered) and releases it, like `done`.
    pub fn filtered(&mut self) {
        self.stats.filtered += 1;
        self.release_lent();
    }

    /// What the feed check found ([`crate::tap::detect`]), each kind once:
    /// a feed without dedup that carries copies, or without reorder whose
    /// ACKs come before their data. For the operator's log.
    pub fn advice(&mut self) -> Option<Advice> {
        self.tap.as_mut()?.advice()
    }

    /// Why the source gave up, if it has: its receives kept failing. Every
    /// later receive returns this as an error.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Stops receiving and counts every datagram still queued (the rest of
    /// a coalesced run, a batch in user space, io_uring's completions, the
    /// socket) as received and rejected for [`Reject::UnreadAtShutdown`],
    /// so the counters are final: `received == delivered + rejected +
    /// deduplicated + held` and,
    /// for what was sent before, `sent == received + kernel_drops`. A packet
    /// still lent out is released. Later receives find nothing; calling it
    /// again does nothing.
    ///
    /// Packets held by reorder are not lost: they may all go now, and
    /// later calls of [`Source::next_packet`] hand them out (until then
    /// they are counted as `held`).
    pub fn shutdown(&mut self) {
        if self.shut {
            return;
        }
        self.shut = true;
        if let Some(tap) = self.tap.as_mut() {
            tap.flush();
        }
        self.pacer.stop();
        while let Some(meta) = self.gro.next_datagram() {
            self.stats.count_unread(meta.wire_len);
        }
        let budget = crate::drain::budget(self.listener.recv_buffer.granted);
        let fd = self.listener.socket.as_raw_fd();
        crate::drain::unread(self.rx.as_mut(), fd, budget, &mut self.stats);
    }

    /// Counters as they stand, without a syscall (kernel drops as of the
    /// last [`Source::stats`]).
    pub fn counters(&self) -> &Stats {
        &self.stats
    }

    /// Counters, with the kernel's drop counter read fresh.
    pub fn stats(&mut self) -> Stats {
        if let Some(raw) = socket::kernel_drops(self.listener.socket.as_raw_fd()) {
            self.drops.observe(raw);
        }
        self.stats.kernel_drops = self.drops.total();
        self.stats
    }

    /// Readable when packets may be waiting: the socket for recvmmsg, the
    /// eventfd for io_uring.
    pub fn wait_fd(&self) -> RawFd {
        self.rx.wait_fd()
    }

    /// Packets are waiting in user space; the next `next` makes no syscall.
    pub fn has_pending(&self) -> bool {
        self.rx.has_pending() || self.gro.pending()
    }

    /// The dedup and reorder windows in effect (path option, else setting).
    pub fn tap_windows(&self) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
        (
            self.tap.as_ref().and_then(Tap::dedup_window),
            self.tap.as_ref().and_then(Tap::reorder_window),
        )
    }

    /// The bound address (with the real port when the path said 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The receive buffer asked for and granted.
    pub fn recv_buffer(&self) -> RecvBuffer {
        self.listener.recv_buffer
    }

    /// The parsed path.
    pub fn path(&self) -> &SourcePath {
        &self.path
    }

    /// Which receiver is in use.
    pub fn receiver_kind(&self) -> ReceiverKind {
        self.rx.kind()
    }
}

/// The receiver `config` asks for, on the listener's socket.
fn receiver(
    listener: &Listener,
    path: &SourcePath,
    config: &Config,
) -> Result<Box<dyn Receiver>, Error> {
    let fd = listener.socket.as_raw_fd();
    let peers = config.peer_addresses || !path.allow.is_empty();
    Ok(match config.receiver {
        ReceiverKind::Recvmmsg => {
            let (batch, buffer_size, _) = config.recvmmsg_shape()?;
            let rx = MmsgReceiver::new(fd, batch, buffer_size, peers).map_err(|source| {
                Error::Socket {
                    addr: path.addr,
                    call: "mmap of the receive buffers",
                    source,
                }
            })?;
            Box::new(rx)
        }
        ReceiverKind::IoUring => Box::new(UringReceiver::new(fd, &config.uring, peers)?),
    })
}
