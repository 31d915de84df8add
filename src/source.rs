//! A packet source: one socket, one receiver, one decapsulator, and the
//! counters that account for every datagram.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::cmsg::Timestamp;
use crate::decap::{Decapsulator, Inner};
use crate::error::Error;
use crate::gro::{Segment, Segments};
use crate::link::LinkType;
use crate::path::{self, SourcePath};
use crate::recv::{MmsgReceiver, Receiver, ReceiverKind, RecvMeta, UringReceiver};
use crate::reject::Reject;
use crate::socket::{self, Listener, RecvBuffer};
use crate::stats::{DropCounter, Stats};
use crate::wire::GeneveOptions;

pub use crate::config::{Config, GRO_BATCH, GRO_BUFFER};

/// How the caller should wait for this source next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wait {
    /// Packets are waiting: call again at once.
    Now,
    /// Sleep on [`Source::wait_fd`] until it is readable.
    OnFd,
    /// Sleep this long without watching the fd (datagrams are gathering).
    For(Duration),
}

/// A decapsulated packet, borrowed from the receiver until
/// [`Source::done`] or the next [`Source::next_packet`].
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The inner packet's captured bytes.
    pub data: &'a [u8],
    /// The inner packet's length on the wire (larger when truncated).
    pub wire_len: usize,
    /// The kernel's receive timestamp.
    pub timestamp: Timestamp,
    /// Link type of `data`.
    pub link_type: LinkType,
    /// VXLAN VNI, for `vxlan` and `geneve+vxlan`.
    pub vxlan_vni: Option<u32>,
    /// GENEVE VNI, for `geneve` and `geneve+vxlan`.
    pub geneve_vni: Option<u32>,
    /// The raw GENEVE options area (empty if none).
    pub geneve_options: &'a [u8],
    /// Who sent the tunnel datagram (`None` unless [`Config::peer_addresses`]
    /// or the path's `allow=` asked for it).
    pub peer: Option<SocketAddr>,
    /// The value of [`Config::geneve_key_option`] in this packet, if both are there.
    pub geneve_option_value: Option<u64>,
}

impl<'a> Packet<'a> {
    /// The GENEVE options, one by one.
    pub fn geneve_options(&self) -> GeneveOptions<'a> {
        GeneveOptions::new(self.geneve_options)
    }

    /// The datagram did not fit its buffer; `data` is shorter than `wire_len`.
    pub fn truncated(&self) -> bool {
        self.data.len() < self.wire_len
    }
}

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

/// One datagram's fate, without borrows, so loops over it stay simple.
enum Step {
    Deliver(Inner, RecvMeta),
    Reject(Reject),
    Empty,
}

/// A synthesized Ethernet header: zero MAC addresses and the EtherType.
const ETHERNET_LEN: usize = 14;

/// At most this many rejects are skipped in one [`Source::next_packet`]
/// (and in one call of the Zeek shim, `ZUS_REJECTS_PER_CALL`), so a flood
/// of garbage cannot keep the caller inside one call.
pub const REJECTS_PER_CALL: usize = 4096;

/// After this many receives in a row have failed, the source gives up
/// ([`Source::failure`]): an error that persists (a socket gone bad, a
/// kernel that cannot re-arm a receive) would otherwise be retried forever.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 64;

/// Counts the datagrams of one receive of `wire_len` bytes (several for a
/// coalesced run of `gro_size` each) as unread at shutdown; returns how many.
fn count_unread(stats: &mut Stats, wire_len: usize, gro_size: Option<u16>) -> usize {
    let Some(size) = gro_size else {
        stats.count_unread(wire_len);
        return 1;
    };
    let mut run = Segments::new(usize::from(size), wire_len, wire_len);
    let mut n = 0;
    while let Some(segment) = run.next_segment() {
        stats.count_unread(segment.wire_len);
        n += 1;
    }
    n
}

/// A UDP tunnel packet source.
pub struct Source {
    rx: Box<dyn Receiver>,
    listener: Listener,
    decap: Decapsulator,
    path: SourcePath,
    stats: Stats,
    drops: DropCounter,
    last_timestamp: Timestamp,
    batch_wait: Duration,
    geneve_key_option: Option<(u16, u8)>,
    /// While set, receives are held off until then (gathering).
    gather_until: Option<Instant>,
    /// The rest of a coalesced (UDP GRO) receive, and what it said.
    segments: Segments,
    coalesced: RecvMeta,
    /// The current datagram's bytes within the receiver's current buffer.
    segment: Range<usize>,
    /// Receives that failed since the last one that did not.
    consecutive_errors: u32,
    /// Why the source gave up, once it has.
    failure: Option<String>,
    /// [`Source::shutdown`] ran.
    shut: bool,
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
        let fd = listener.socket.as_raw_fd();
        let peers = config.peer_addresses || !path.allow.is_empty();
        if config.udp_gro {
            listener.enable_gro().map_err(|source| Error::Socket {
                addr: path.addr,
                call: "UDP_GRO (udp_gro)",
                source,
            })?;
        }
        let rx: Box<dyn Receiver> =
            match config.receiver {
                ReceiverKind::Recvmmsg => {
                    let (batch, buffer_size, _) = config.recvmmsg_shape()?;
                    Box::new(MmsgReceiver::new(fd, batch, buffer_size, peers).map_err(
                        |source| Error::Socket {
                            addr: path.addr,
                            call: "mmap of the receive buffers",
                            source,
                        },
                    )?)
                }
                ReceiverKind::IoUring => Box::new(UringReceiver::new(fd, &config.uring, peers)?),
            };
        Ok(Source {
            rx,
            listener,
            decap: Decapsulator::new(path.encap, path.link_type),
            path,
            stats: Stats::default(),
            drops: DropCounter::default(),
            last_timestamp: Timestamp::default(),
            batch_wait: config.batch_wait,
            geneve_key_option: config.geneve_key_option,
            gather_until: None,
            segments: Segments::default(),
            coalesced: RecvMeta::default(),
            segment: 0..0,
            consecutive_errors: 0,
            failure: None,
            shut: false,
        })
    }

    fn step(&mut self) -> io::Result<Step> {
        if let Some(why) = &self.failure {
            return Err(io::Error::other(why.clone()));
        }
        if self.shut {
            return Ok(Step::Empty);
        }
        let meta = match self.segments.next_segment() {
            Some(segment) => self.enter(segment),
            None => match self.receive()? {
                Some(meta) => meta,
                None => return Ok(Step::Empty),
            },
        };
        self.stats.count_datagram(meta.wire_len, meta.truncated());
        let datagram = self
            .rx
            .current()
            .get(self.segment.clone())
            .unwrap_or_default();
        match self
            .check_sender(&meta)
            .and_then(|()| self.decap.decap(datagram))
        {
            Ok(inner) => {
                self.stats.delivered += 1;
                Ok(Step::Deliver(inner, meta))
            }
            Err(reason) => {
                self.stats.count_reject(reason);
                self.release();
                Ok(Step::Reject(reason))
            }
        }
    }

    /// One receive: a datagram, or the first of a coalesced run. `None`
    /// when nothing came (traffic has stopped: the caller sleeps on the fd)
    /// or a hold-off is running.
    fn receive(&mut self) -> io::Result<Option<RecvMeta>> {
        let receiving = !self.rx.has_pending();
        if receiving && self.gathering() {
            return Ok(None);
        }
        let meta = match self.rx.next() {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                self.consecutive_errors = 0;
                return Ok(None);
            }
            Err(e) => {
                self.receive_failed(&e);
                return Err(e);
            }
        };
        self.consecutive_errors = 0;
        if receiving {
            self.after_receive();
        }
        self.segment = 0..meta.captured;
        let Some(size) = meta.ancillary.gro_size else {
            return Ok(Some(meta));
        };
        self.segments = Segments::new(usize::from(size), meta.captured, meta.wire_len);
        self.stats.coalesced += self.segments.count() as u64;
        self.coalesced = meta;
        Ok(self.segments.next_segment().map(|s| self.enter(s)))
    }

    /// Counts a failed receive; gives up when failures persist.
    fn receive_failed(&mut self, e: &io::Error) {
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

    /// Makes a datagram of a coalesced receive the current one.
    fn enter(&mut self, segment: Segment) -> RecvMeta {
        self.segment = segment.range.clone();
        RecvMeta {
            captured: segment.range.len(),
            wire_len: segment.wire_len,
            ..self.coalesced
        }
    }

    /// Gives the receive buffer back once no datagram of it is left.
    fn release(&mut self) {
        if !self.segments.pending() {
            self.rx.release();
        }
    }

    /// The path's allowlist, if it has one, must hold the sender.
    fn check_sender(&self, meta: &RecvMeta) -> Result<(), Reject> {
        if self.path.allow.is_empty() {
            return Ok(());
        }
        match meta.peer {
            Some(peer) if self.path.allow.iter().any(|c| c.contains(peer.ip())) => Ok(()),
            _ => Err(Reject::SourceNotAllowed),
        }
    }

    /// A hold-off is running; clears it once it is over.
    fn gathering(&mut self) -> bool {
        match self.gather_until {
            Some(until) if Instant::now() < until => true,
            _ => {
                self.gather_until = None;
                false
            }
        }
    }

    /// A receive that emptied the kernel's queue holds off the next one
    /// until `batch_wait` after it, so datagrams gather into one fuller
    /// batch, as af_packet's block timeout does; meanwhile the caller works
    /// through this batch. A full batch means more is waiting: no hold-off.
    /// Starting the window here, not when the batch runs out, also saves
    /// the receive that would only have found the queue empty.
    fn after_receive(&mut self) {
        if !self.batch_wait.is_zero() && self.rx.drained() {
            self.gather_until = Some(Instant::now() + self.batch_wait);
        }
    }

    /// How to wait before calling [`Source::next_packet`] again.
    pub fn wait(&self) -> Wait {
        if self.has_pending() {
            return Wait::Now;
        }
        match self.gather_until {
            Some(until) => Wait::For(until.saturating_duration_since(Instant::now())),
            None => Wait::OnFd,
        }
    }

    fn packet(&mut self, inner: Inner, meta: RecvMeta) -> Packet<'_> {
        let timestamp = meta.ancillary.timestamp.unwrap_or(self.last_timestamp);
        self.last_timestamp = timestamp;
        let segment = self.segment.clone();
        let (buf, at) = self.rx.current_with_headroom();
        // Datagrams of a coalesced receive after the first have the ones
        // before them (handed out already) as headroom.
        let at = at + segment.start;
        let buf = &mut buf[..at + segment.len()];
        let mut start = at + inner.offset;
        let mut wire_len = meta.wire_len - inner.offset;
        if let Some(ethertype) = inner.ethertype {
            // Headroom plus the tunnel header always leave room for it.
            start -= ETHERNET_LEN;
            wire_len += ETHERNET_LEN;
            let header = &mut buf[start..start + ETHERNET_LEN];
            header[..12].fill(0);
            header[12..].copy_from_slice(&ethertype.to_be_bytes());
        }
        let buf: &[u8] = buf;
        let datagram = &buf[at..];
        let options = &datagram[inner.geneve_options];
        let geneve_option_value = self
            .geneve_key_option
            .and_then(|(class, kind)| GeneveOptions::new(options).option_value(class, kind));
        Packet {
            data: &buf[start..],
            wire_len,
            timestamp,
            link_type: inner.link_type,
            vxlan_vni: inner.vxlan_vni,
            geneve_vni: inner.geneve_vni,
            geneve_options: options,
            peer: meta.peer,
            geneve_option_value,
        }
    }

    /// The next packet, skipping (and counting) rejected datagrams.
    /// `Ok(None)` when nothing is waiting. Errors are counted and not fatal.
    pub fn next_packet(&mut self) -> io::Result<Option<Packet<'_>>> {
        for _ in 0..REJECTS_PER_CALL {
            match self.step()? {
                Step::Deliver(inner, meta) => return Ok(Some(self.packet(inner, meta))),
                Step::Reject(_) => continue,
                Step::Empty => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Like [`Source::next_packet`], but reports each rejected datagram, so a
    /// caller can raise a weird for it.
    pub fn next_event(&mut self) -> io::Result<Event<'_>> {
        Ok(match self.step()? {
            Step::Deliver(inner, meta) => Event::Packet(self.packet(inner, meta)),
            Step::Reject(reason) => Event::Rejected(reason),
            Step::Empty => Event::Idle,
        })
    }

    /// The caller is done with the packet from `next`; its buffer is reused.
    pub fn done(&mut self) {
        self.release();
    }

    /// The caller's capture filter took out the packet from `next`: counts
    /// it as filtered (it stays delivered) and releases it, like `done`.
    pub fn filtered(&mut self) {
        self.stats.filtered += 1;
        self.release();
    }

    /// Why the source gave up, if it has: its receives kept failing. Every
    /// later receive returns this as an error.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Stops receiving and counts every datagram still queued (the rest of
    /// a coalesced run, a batch in user space, io_uring's completions, the
    /// socket) as received and rejected for [`Reject::UnreadAtShutdown`],
    /// so the counters are final: `received == delivered + rejected` and,
    /// for what was sent before, `sent == received + kernel_drops`. A packet
    /// still lent out is released. Later receives find nothing; calling it
    /// again does nothing.
    pub fn shutdown(&mut self) {
        if self.shut {
            return;
        }
        self.shut = true;
        self.gather_until = None;
        while let Some(segment) = self.segments.next_segment() {
            self.stats.count_unread(segment.wire_len);
        }
        self.rx.release();
        self.rx.stop();
        let mut budget = self.drain_budget();
        while budget > 0 {
            let Ok(Some(meta)) = self.rx.next() else {
                break;
            };
            let n = count_unread(&mut self.stats, meta.wire_len, meta.ancillary.gro_size);
            budget = budget.saturating_sub(n);
        }
        self.rx.release();
        let stats = &mut self.stats;
        crate::recv::drain_socket(self.listener.socket.as_raw_fd(), budget, |len, gro| {
            count_unread(stats, len, gro);
        });
    }

    /// At most this many datagrams are taken off at shutdown: more than
    /// the receive buffer (twice its granted size, as the kernel accounts)
    /// can hold of the smallest datagrams, plus what user space holds, so a
    /// sender that keeps sending cannot keep shutdown going.
    fn drain_budget(&self) -> usize {
        /// Below any datagram's true size in the kernel (sk_buff and data).
        const MIN_TRUESIZE: usize = 256;
        (self.listener.recv_buffer.granted.saturating_mul(2) / MIN_TRUESIZE).saturating_add(1 << 16)
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
        self.rx.has_pending() || self.segments.pending()
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
