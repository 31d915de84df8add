//! Receivers: how datagrams get from the socket into user space. Both
//! implementations lend out one datagram at a time from preallocated buffers;
//! the borrow ends with [`Receiver::release`].

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::cmsg::Ancillary;

pub mod buffers;
pub mod mmsg;
pub mod uring;

pub use mmsg::MmsgReceiver;
pub use uring::UringReceiver;

/// Writable bytes every receiver keeps in front of a datagram, so a
/// link-layer header can be put there without copying the packet.
pub const HEADROOM: usize = 16;

/// Which receiver to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReceiverKind {
    /// Batches of `recvmmsg(2)`.
    #[default]
    Recvmmsg,
    /// io_uring multishot recvmsg with a provided-buffer ring.
    IoUring,
}

impl ReceiverKind {
    /// Its name in settings and statistics.
    pub fn name(self) -> &'static str {
        match self {
            ReceiverKind::Recvmmsg => "recvmmsg",
            ReceiverKind::IoUring => "io_uring",
        }
    }

    /// Parses `recvmmsg` / `io_uring` (also `io-uring`, `iouring`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "recvmmsg" => Some(ReceiverKind::Recvmmsg),
            "io_uring" | "io-uring" | "iouring" | "uring" => Some(ReceiverKind::IoUring),
            _ => None,
        }
    }
}

/// A received datagram's captured bytes in their buffer, with at least
/// [`HEADROOM`] writable bytes in front (one coordinate system: offsets
/// into [`Frame::datagram`]).
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Frame<'a> {
    /// The datagram is `buf[at..]`; receivers keep `at >= HEADROOM`.
    pub(crate) fn new(buf: &'a mut [u8], at: usize) -> Self {
        let at = at.min(buf.len());
        Frame { buf, at }
    }

    /// No datagram.
    pub fn empty() -> Self {
        Frame {
            buf: &mut [],
            at: 0,
        }
    }

    /// The datagram's captured bytes.
    pub fn datagram(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// The part `range` of the datagram (one datagram of a coalesced run)
    /// as a frame of its own; what lies before it becomes its headroom.
    pub fn narrow(self, range: std::ops::Range<usize>) -> Frame<'a> {
        let end = self.at.saturating_add(range.end).min(self.buf.len());
        let at = self.at.saturating_add(range.start).min(end);
        Frame {
            buf: &mut self.buf[..end],
            at,
        }
    }

    /// The whole buffer and where the datagram starts in it.
    pub(crate) fn into_parts(self) -> (&'a mut [u8], usize) {
        (self.buf, self.at)
    }
}

/// One datagram as the receiver saw it; its bytes are in [`Receiver::frame`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RecvMeta {
    /// Bytes received into the buffer.
    pub captured: usize,
    /// The datagram's full length; larger than `captured` when truncated.
    pub wire_len: usize,
    /// The kernel's timestamp and drop counter.
    pub ancillary: Ancillary,
    /// The sender's address.
    pub peer: Option<SocketAddr>,
}

impl RecvMeta {
    /// The datagram did not fit its buffer.
    pub fn truncated(&self) -> bool {
        self.captured < self.wire_len
    }
}

/// A source of datagrams from one socket.
pub trait Receiver: Send {
    /// The next datagram, releasing the previous one if the caller has not.
    /// `Ok(None)`: nothing is waiting. An error is reported and not fatal:
    /// the next call tries again.
    fn next(&mut self) -> io::Result<Option<RecvMeta>>;

    /// The datagram that `next` returned last, in its buffer (empty if
    /// none).
    fn frame(&mut self) -> Frame<'_>;

    /// Gives the current datagram's buffer back.
    fn release(&mut self);

    /// A descriptor that becomes readable when `next` would find something.
    fn wait_fd(&self) -> RawFd;

    /// Datagrams are already waiting in user space: `next` needs no syscall.
    fn has_pending(&self) -> bool;

    /// The last receive left the kernel's queue empty: it brought fewer
    /// datagrams than it had room for. A hint, not a promise (more may have
    /// arrived since); it decides whether the next receive may wait.
    fn drained(&self) -> bool;

    /// Datagrams (buffers, with UDP GRO) the last receive from the kernel
    /// brought, for the pacer's rate estimate.
    fn batch_len(&self) -> usize;

    /// Datagrams the receiver can take in while the caller holds receives
    /// off, where that room fills before the socket's buffer does; `None`:
    /// it takes nothing until asked (see [`crate::pace::Room`]).
    fn room(&self) -> Option<usize> {
        None
    }

    /// Which implementation this is.
    fn kind(&self) -> ReceiverKind;

    /// Stops taking datagrams off the socket behind the caller's back
    /// (io_uring's multishot receive): what was taken already stays for
    /// `next`, which from now on hands out only that and then `None`.
    fn stop(&mut self) {}
}

/// `e` with the receive step that failed in front, so a message names it.
pub(crate) fn in_step(step: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{step}: {e}"))
}

/// Takes up to `limit` datagrams still queued in the socket `fd` off it
/// without copying their bytes, calling `each` with each one's length and,
/// for a coalesced run (UDP GRO), its segment size. Stops at the first
/// empty receive.
pub(crate) fn drain_socket(fd: RawFd, limit: usize, mut each: impl FnMut(usize, Option<u16>)) {
    let mut control = [0u64; crate::cmsg::CONTROL_LEN / 8];
    for _ in 0..limit {
        // A zero-length buffer: MSG_TRUNC still returns the full length.
        let mut iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = crate::cmsg::CONTROL_LEN;
        // SAFETY: hdr points at live iov and control buffers of the sizes given.
        let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let len = hdr.msg_controllen.min(crate::cmsg::CONTROL_LEN);
        // SAFETY: the control buffer holds CONTROL_LEN initialised bytes.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(control.as_ptr().cast(), len) };
        each(n as usize, crate::cmsg::parse(bytes).gro_size);
    }
}

/// Converts a `sockaddr` the kernel wrote into `name` to a `SocketAddr`;
/// IPv4-mapped IPv6 addresses come back as IPv4.
pub(crate) fn peer_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET if name.len() >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: length checked; read_unaligned has no alignment needs.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(name.as_ptr().cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if name.len() >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: length checked; read_unaligned has no alignment needs.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned(name.as_ptr().cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, sin6.sin6_scope_id)),
            })
        }
        _ => None,
    }
}
