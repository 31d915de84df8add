//! A packet source: one socket, one receiver, and a short loop over each
//! datagram: receive ([`crate::gro`] splits coalesced runs, [`crate::pace`]
//! spaces the receives), admit (the path's allowlist), decapsulate into a
//! view ([`crate::packet`]), count ([`crate::stats`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use crate::decap::Inner;
use crate::error::Error;
use crate::gro::Coalescer;
use crate::pace::Pacer;
use crate::packet::Unwrap;
use crate::path::{self, SourcePath};
use crate::recv::{MmsgReceiver, Receiver, ReceiverKind, RecvMeta, UringReceiver};
use crate::reject::Reject;
use crate::socket::{self, Listener, RecvBuffer};
use crate::stats::{DropCounter, Stats};

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
        Ok(Source {
            rx: receiver(&listener, &path, config)?,
            listener,
            unwrap: Unwrap::new(&path, config.geneve_key_option),
            path,
            stats: Stats::default(),
            drops: DropCounter::default(),
            pacer: Pacer::new(config.batch_wait),
            gro: Coalescer::default(),
            consecutive_errors: 0,
            failure: None,
            shut: false,
        })
    }

    /// The next packet, skipping (and counting) rejected datagrams.
    /// `Ok(None)` when nothing is waiting. Errors are counted and not fatal.
    pub fn next_packet(&mut self) -> io::Result<Option<Packet<'_>>> {
        for _ in 0..REJECTS_PER_CALL {
            match self.step()? {
                Some(Ok((inner, meta))) => return Ok(Some(self.view(&inner, &meta))),
                Some(Err(_)) => continue,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Like [`Source::next_packet`], but reports each rejected datagram, so a
    /// caller can raise a weird for it.
    pub fn next_event(&mut self) -> io::Result<Event<'_>> {
        Ok(match self.step()? {
            Some(Ok((inner, meta))) => Event::Packet(self.view(&inner, &meta)),
            Some(Err(reason)) => Event::Rejected(reason),
            None => Event::Idle,
        })
    }

    /// One datagram through the loop: received, counted, admitted and
    /// decapsulated, or rejected for a reason. `None` when none is waiting.
    ///
    /// The verdict holds no borrow (the caller loops over rejects, which
    /// the borrow checker refuses around a borrowed packet), so the packet's
    /// view takes the same frame again in [`Source::view`].
    fn step(&mut self) -> io::Result<Option<Result<(Inner, RecvMeta), Reject>>> {
        let Some(meta) = self.next_datagram()? else {
            return Ok(None);
        };
        self.stats.count_datagram(meta.wire_len, meta.truncated());
        self.stats.control_truncated += u64::from(meta.ancillary.truncated);
        let verdict = self.admit(&meta).and_then(|()| {
            let frame = self.rx.frame().narrow(self.gro.range());
            self.unwrap.inner(frame.datagram(), meta.wire_len)
        });
        Ok(Some(match verdict {
            Ok(inner) => {
                self.stats.delivered += 1;
                Ok((inner, meta))
            }
            Err(reason) => {
                self.stats.count_reject(reason);
                self.release();
                Err(reason)
            }
        }))
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
        if from_kernel && self.pacer.holding() {
            return Ok(None);
        }
        let received = self.rx.next();
        self.note_receive(&received);
        let Some(meta) = received? else {
            return Ok(None);
        };
        if from_kernel {
            self.pacer.received(self.rx.drained());
        }
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

    /// How to wait before calling [`Source::next_packet`] again.
    pub fn wait(&self) -> Wait {
        self.pacer.wait(self.has_pending())
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
