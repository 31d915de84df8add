//! The io_uring receiver: one multishot `RecvMsg` fed from a provided-buffer
//! ring. The kernel picks a buffer per datagram and posts a completion; a
//! buffer goes back to the ring when its datagram is released.
//!
//! The ring is set up with DEFER_TASKRUN where the kernel has it: arriving
//! datagrams only queue work and signal the eventfd once, and the work runs
//! in bulk when we ask for completions, so a busy source reaps batches and an
//! idle one sleeps on the eventfd. SINGLE_ISSUER needs one thread to own the
//! ring, so the ring starts disabled and is enabled on first use, by whichever
//! thread receives.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, types};

use super::buffers::Buffers;
use super::{Frame, HEADROOM, Receiver, ReceiverKind, RecvMeta, in_step, peer_from_bytes};
use crate::cmsg::{self, CONTROL_LEN};
use crate::error::{Error, uring_step};

/// The buffer group of our ring (one per io_uring instance).
const BGID: u16 = 0;
/// user_data of the multishot request.
const RECV_TAG: u64 = 0x7564_7072;
/// user_data of the request that cancels it.
const CANCEL_TAG: u64 = 0x6361_6e63;
/// Waits for the cancelled receive's last completion at most this often:
/// it comes with the first, but a kernel that never posts it must not hang
/// shutdown or drop.
const STOP_ROUNDS: usize = 64;

/// Settings of the io_uring receiver.
#[derive(Clone, Copy, Debug)]
pub struct UringConfig {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// Provided buffers: a power of two, at most 32768.
    pub buffers: u32,
    /// Each buffer is `1 << buffer_shift` bytes, holding header, address,
    /// control data and payload.
    pub buffer_shift: u32,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            sq_entries: 2,
            cq_entries: 256,
            buffers: 1024,
            buffer_shift: 14,
        }
    }
}

/// The kernel's bounds on ring sizes (IORING_MAX_ENTRIES, IORING_MAX_CQ_ENTRIES)
/// and on a provided-buffer ring's entries.
const MAX_SQ_ENTRIES: u32 = 32768;
const MAX_CQ_ENTRIES: u32 = 2 * MAX_SQ_ENTRIES;
const MAX_BUFFERS: u32 = 32768;
const SHIFTS: std::ops::RangeInclusive<u32> = 9..=20;
/// All provided buffers together: more would be a typo, not a plan.
const MAX_BUFFER_BYTES: u64 = 1 << 30;

impl UringConfig {
    /// Checks every io_uring setting; the refusal names the Zeek knob.
    pub fn validate(&self) -> Result<(), Error> {
        use crate::config::refuse;
        if !self.buffers.is_power_of_two() || self.buffers > MAX_BUFFERS {
            return Err(refuse(
                "io_uring_buffers",
                format!(
                    "{} is not a power of two from 1 to {MAX_BUFFERS}",
                    self.buffers
                ),
            ));
        }
        if !SHIFTS.contains(&self.buffer_shift) {
            return Err(refuse(
                "io_uring_buffer_shift",
                format!(
                    "{} is outside {}..={} (512 B to 1 MiB buffers)",
                    self.buffer_shift,
                    SHIFTS.start(),
                    SHIFTS.end()
                ),
            ));
        }
        let bytes = u64::from(self.buffers) << self.buffer_shift;
        if bytes > MAX_BUFFER_BYTES {
            return Err(refuse(
                "io_uring_buffers",
                format!(
                    "{} buffers of {} bytes are {bytes} bytes, more than {MAX_BUFFER_BYTES}: lower io_uring_buffers or io_uring_buffer_shift",
                    self.buffers,
                    1u64 << self.buffer_shift
                ),
            ));
        }
        if !(1..=MAX_SQ_ENTRIES).contains(&self.sq_entries) {
            return Err(refuse(
                "io_uring_sq_entries",
                format!("{} is outside 1..={MAX_SQ_ENTRIES}", self.sq_entries),
            ));
        }
        if !(self.sq_entries..=MAX_CQ_ENTRIES).contains(&self.cq_entries) {
            return Err(refuse(
                "io_uring_cq_entries",
                format!(
                    "{} is outside {}..={MAX_CQ_ENTRIES} (no fewer than io_uring_sq_entries)",
                    self.cq_entries, self.sq_entries
                ),
            ));
        }
        Ok(())
    }
}

/// Bytes in front of every payload in a provided buffer, reused as its
/// headroom: the recvmsg header and the control data (and the address,
/// when asked for).
/// `struct io_uring_recvmsg_out` is four u32s.
const HEADROOM_IN_BUFFER: usize = 4 * size_of::<u32>() + CONTROL_LEN;
const _: () = assert!(HEADROOM_IN_BUFFER >= HEADROOM);

/// io_uring_enter(2) flag: wait for / reap completions, running deferred work
/// (linux/io_uring.h; the crate keeps its constant private).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// `struct io_uring_buf` (linux/io_uring.h), the layout of a
/// [`types::BufRingEntry`]; `resv` of entry 0 is the ring's tail.
#[repr(C)]
struct RawEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(size_of::<RawEntry>() == size_of::<types::BufRingEntry>());

/// The provided-buffer ring shared with the kernel.
struct BufRing {
    base: *mut types::BufRingEntry,
    map_len: usize,
    mask: u16,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<Self> {
        let map_len = usize::from(entries) * size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for MAP_FAILED below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            base: base.cast(),
            map_len,
            mask: entries - 1,
            tail: 0,
        })
    }

    /// Queues a buffer for the kernel; visible after [`BufRing::publish`].
    ///
    /// Written field by field through raw pointers: the kernel reads this
    /// memory concurrently, so no `&mut` may cover it, and the first
    /// entry's `resv` is the ring's tail, which only `publish` writes.
    fn push(&mut self, addr: *mut u8, len: u32, bid: u16) {
        // SAFETY: the index is masked into the mapping, whose entries have
        // the layout of RawEntry (asserted below); each write stays within
        // its field.
        unsafe {
            let entry = self
                .base
                .cast::<RawEntry>()
                .add(usize::from(self.tail & self.mask));
            std::ptr::addr_of_mut!((*entry).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*entry).len).write(len);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our mapping and
        // the kernel reads it atomically; u16 and AtomicU16 share layout.
        unsafe {
            let tail = types::BufRingEntry::tail(self.base).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// The datagram lent out: which buffer, and where its payload sits.
#[derive(Clone, Copy)]
struct Lent {
    bid: u16,
    start: usize,
    len: usize,
}

/// Receives with io_uring multishot recvmsg.
pub struct UringReceiver {
    // Field order is drop order: the ring (and the kernel's use of the
    // buffers) goes before the buffer ring and the buffers.
    ring: IoUring,
    bufring: BufRing,
    buffers: Buffers,
    buffer_size: usize,
    /// Provided buffers in the ring.
    buffer_count: usize,
    msghdr: Box<libc::msghdr>,
    fd: RawFd,
    eventfd: OwnedFd,
    started: bool,
    armed: bool,
    /// [`Receiver::stop`] was called: never re-arm.
    stopped: bool,
    deferred: bool,
    current: Option<Lent>,
    /// Completions taken from the CQ in one go, handed out one by one.
    batch: Vec<(i32, u32)>,
    /// Next index into `batch`.
    batch_next: usize,
    /// When `batch` was taken, the kernel already had more: deferred work
    /// (a receive re-queued after its inline retries, or a new datagram)
    /// or overflowed completions.
    more_waiting: bool,
    /// Recycled buffers not yet made visible to the kernel.
    unpublished: bool,
    /// Times the kernel found the buffer ring empty (it then waits in the
    /// socket buffer until we re-arm, and may be dropped there).
    pub ring_exhausted: u64,
}

// SAFETY: the raw pointers (buffer ring, msghdr) point into memory owned by
// this struct; the ring itself is only used through &mut self.
unsafe impl Send for UringReceiver {}

impl UringReceiver {
    /// Sets up the ring, the buffer ring and the eventfd for `fd`.
    /// With `peers`, each buffer also receives the datagram's sender.
    pub fn new(fd: RawFd, config: &UringConfig, peers: bool) -> Result<Self, Error> {
        config.validate()?;
        let fail = |call| move |source| Error::IoUring { call, source };
        let (ring, deferred) = build_ring(config).map_err(fail(uring_step::SETUP))?;
        probe_multishot().map_err(fail(uring_step::PROBE))?;
        let entries = config.buffers as u16;
        let buffer_size = 1usize << config.buffer_shift;
        let mut bufring = BufRing::new(entries).map_err(fail("mmap of the buffer ring"))?;
        // SAFETY: the mapping lives in `bufring`, dropped after `ring`.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufring.base as u64, entries, BGID, 0)
                .map_err(fail(uring_step::PBUF_RING))?;
        }
        let mut buffers = Buffers::new(usize::from(entries) * buffer_size)
            .map_err(fail("mmap of the buffers"))?;
        for bid in 0..entries {
            let addr = buffers[usize::from(bid) * buffer_size..].as_mut_ptr();
            bufring.push(addr, buffer_size as u32, bid);
        }
        bufring.publish();
        let eventfd = new_eventfd().map_err(fail("eventfd"))?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(fail("IORING_REGISTER_EVENTFD"))?;
        // SAFETY: msghdr is plain data; only the two lengths matter here.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        if peers {
            msghdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        msghdr.msg_controllen = CONTROL_LEN;
        Ok(UringReceiver {
            ring,
            bufring,
            buffers,
            buffer_size,
            buffer_count: usize::from(entries),
            msghdr,
            fd,
            eventfd,
            started: false,
            armed: false,
            stopped: false,
            deferred,
            current: None,
            batch: Vec::with_capacity(config.cq_entries as usize),
            batch_next: 0,
            more_waiting: false,
            unpublished: false,
            ring_exhausted: 0,
        })
    }

    /// Submits the multishot receive.
    fn arm(&mut self) -> io::Result<()> {
        self.publish();
        if !self.started {
            if self.deferred {
                self.ring.submitter().register_enable_rings()?;
            }
            self.started = true;
        }
        let entry = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.msghdr, BGID)
            .flags(libc::MSG_TRUNC as u32)
            .build()
            .user_data(RECV_TAG);
        // SAFETY: the msghdr and the buffers outlive the request (owned by self,
        // dropped after the ring).
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission queue is full"))?;
        }
        self.ring.submit()?;
        self.armed = true;
        Ok(())
    }

    /// Runs deferred work and flushes overflowed completions into the CQ.
    fn reap(&mut self) -> io::Result<()> {
        let sq = self.ring.submission();
        if sq.taskrun() || sq.cq_overflow() {
            drop(sq);
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Runs deferred work whatever the flags say. The kernel runs a bounded
    /// number of work items per enter and keeps the rest on a retry list
    /// that neither sets IORING_SQ_TASKRUN nor signals the eventfd: without
    /// this, datagrams could wait there until the next one arrives.
    fn run_deferred(&mut self) -> io::Result<()> {
        // SAFETY: no submissions, no argument; GETEVENTS with min_complete
        // 0 only runs pending work and returns.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)?;
        }
        Ok(())
    }

    /// Moves every completion in the CQ into `batch` (one head update).
    fn refill(&mut self) -> bool {
        self.batch.clear();
        self.batch_next = 0;
        self.batch.extend(
            self.ring
                .completion()
                .filter(|c| c.user_data() == RECV_TAG)
                .map(|c| (c.result(), c.flags())),
        );
        let sq = self.ring.submission();
        self.more_waiting = sq.taskrun() || sq.cq_overflow();
        !self.batch.is_empty()
    }

    /// The next completion, looking harder only when there is none at hand.
    fn pop(&mut self) -> io::Result<Option<(i32, u32)>> {
        if self.batch_next < self.batch.len() {
            self.batch_next += 1;
            return Ok(Some(self.batch[self.batch_next - 1]));
        }
        // The kernel takes buffers only now (in task work): show it the
        // recycled ones first.
        self.publish();
        if self.refill() {
            return self.pop();
        }
        self.reap()?;
        if self.refill() {
            return self.pop();
        }
        // About to report "nothing": clear the eventfd first, then look once
        // more, so work that raced with the clearing is not slept through.
        self.drain_eventfd();
        self.run_deferred()?;
        if self.refill() {
            return self.pop();
        }
        Ok(None)
    }

    fn drain_eventfd(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live u64; the fd is non-blocking.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                size_of::<u64>(),
            )
        };
    }

    fn recycle(&mut self, bid: u16) {
        let addr = self.buffers[usize::from(bid) * self.buffer_size..].as_mut_ptr();
        self.bufring.push(addr, self.buffer_size as u32, bid);
        self.unpublished = true;
    }

    fn publish(&mut self) {
        if self.unpublished {
            self.bufring.publish();
            self.unpublished = false;
        }
    }

    /// Turns a successful completion into a lent datagram.
    fn lend(&mut self, bid: u16, used: usize) -> Option<RecvMeta> {
        let base = usize::from(bid) * self.buffer_size;
        let buf = &self.buffers[base..base + used.min(self.buffer_size)];
        let out = types::RecvMsgOut::parse(buf, &self.msghdr).ok()?;
        let payload = out.payload_data();
        let start = payload.as_ptr() as usize - self.buffers.as_ptr() as usize;
        let mut ancillary = cmsg::parse(out.control_data());
        ancillary.truncated = cmsg::control_truncated(out.flags() as libc::c_int);
        let meta = RecvMeta {
            captured: payload.len(),
            wire_len: (out.incoming_payload_len() as usize).max(payload.len()),
            ancillary,
            peer: peer_from_bytes(out.name_data()),
        };
        self.current = Some(Lent {
            bid,
            start,
            len: payload.len(),
        });
        Some(meta)
    }
}

impl UringReceiver {
    /// Cancels the multishot receive and waits for its last completion;
    /// the datagrams it brought until then join `batch`.
    fn cancel(&mut self) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(RECV_TAG)
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: a cancel request refers to no memory.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission queue is full"))?;
        }
        for _ in 0..STOP_ROUNDS {
            if !self.armed {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let completions: Vec<(i32, u32)> = self
                .ring
                .completion()
                .filter(|c| c.user_data() == RECV_TAG)
                .map(|c| (c.result(), c.flags()))
                .collect();
            for (result, flags) in completions {
                if !cqueue::more(flags) {
                    self.armed = false;
                }
                // The last one is the cancellation (or a receive's error),
                // not a datagram: only its buffer, if any, matters.
                match cqueue::buffer_select(flags) {
                    Some(_) if result >= 0 => self.batch.push((result, flags)),
                    Some(bid) => self.recycle(bid),
                    None => {}
                }
            }
        }
        Ok(())
    }
}

impl Drop for UringReceiver {
    /// The kernel must be done with the buffers before they are unmapped:
    /// closing the ring alone cancels the receive asynchronously, after
    /// the fields below have gone.
    fn drop(&mut self) {
        self.stop();
    }
}

fn build_ring(config: &UringConfig) -> io::Result<(IoUring, bool)> {
    let deferred = IoUring::builder()
        .setup_cqsize(config.cq_entries)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_r_disabled()
        .build(config.sq_entries);
    match deferred {
        Ok(ring) => Ok((ring, true)),
        // Kernels before 6.1 lack DEFER_TASKRUN; plain rings still work.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(config.cq_entries)
            .build(config.sq_entries)
            .map(|ring| (ring, false)),
        Err(e) => Err(e),
    }
}

/// Multishot recvmsg came in Linux 6.0, provided-buffer rings in 5.19: on
/// 5.19 the ring sets up and every receive then fails. So try one at open,
/// on a throwaway ring and socket: a kernel without it refuses the request
/// with EINVAL at once; one with it fails it for want of buffers (ENOBUFS)
/// or waits, and the cancel that follows ends it.
fn probe_multishot() -> io::Result<()> {
    // Declared before the ring, so they outlive it whatever happens.
    let (probe, _other) = std::os::unix::net::UnixDatagram::pair()?;
    // SAFETY: msghdr is plain data; the kernel only reads its lengths.
    let msghdr: libc::msghdr = unsafe { zeroed() };
    let mut ring = IoUring::new(2)?;
    let recv = opcode::RecvMsgMulti::new(types::Fd(probe.as_raw_fd()), &msghdr, BGID)
        .build()
        .user_data(RECV_TAG);
    let cancel = opcode::AsyncCancel::new(RECV_TAG)
        .build()
        .user_data(CANCEL_TAG);
    // SAFETY: msghdr and the socket outlive the ring (declared before it).
    unsafe {
        let mut sq = ring.submission();
        sq.push(&recv)
            .and_then(|()| sq.push(&cancel))
            .map_err(|_| io::Error::other("probe ring is full"))?;
    }
    let mut recv_result = None;
    for _ in 0..STOP_ROUNDS {
        ring.submit_and_wait(1)?;
        for c in ring.completion() {
            if c.user_data() == RECV_TAG && !cqueue::more(c.flags()) {
                recv_result = Some(c.result());
            }
        }
        if recv_result.is_some() {
            break;
        }
    }
    match recv_result {
        Some(r) if r == -libc::EINVAL => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        _ => Ok(()),
    }
}

fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Receiver for UringReceiver {
    fn next(&mut self) -> io::Result<Option<RecvMeta>> {
        self.release();
        loop {
            if !self.armed && !self.stopped {
                self.arm()
                    .map_err(|e| in_step("submitting the multishot recvmsg", e))?;
            }
            let Some((result, flags)) = self
                .pop()
                .map_err(|e| in_step("reaping io_uring completions", e))?
            else {
                return Ok(None);
            };
            if !cqueue::more(flags) {
                self.armed = false;
            }
            let bid = cqueue::buffer_select(flags);
            if result < 0 {
                if let Some(bid) = bid {
                    self.recycle(bid);
                }
                if result == -libc::ENOBUFS {
                    // Every buffer was in use; they are back now, so re-arm.
                    self.ring_exhausted += 1;
                    self.publish();
                    continue;
                }
                return Err(in_step(
                    "a multishot recvmsg completion",
                    io::Error::from_raw_os_error(-result),
                ));
            }
            let Some(bid) = bid else {
                return Err(io::Error::other("io_uring completion without a buffer"));
            };
            match self.lend(bid, result as usize) {
                Some(meta) => return Ok(Some(meta)),
                None => {
                    self.recycle(bid);
                    return Err(io::Error::other(
                        "io_uring completion too short for its recvmsg header",
                    ));
                }
            }
        }
    }

    fn frame(&mut self) -> Frame<'_> {
        match self.current {
            // Before the payload lie the recvmsg header, the address (if
            // asked for) and the control data, all parsed already: the
            // headroom (asserted at HEADROOM_IN_BUFFER).
            Some(l) => {
                let base = usize::from(l.bid) * self.buffer_size;
                Frame::new(&mut self.buffers[base..l.start + l.len], l.start - base)
            }
            None => Frame::empty(),
        }
    }

    fn release(&mut self) {
        if let Some(lent) = self.current.take() {
            self.recycle(lent.bid);
        }
    }

    fn wait_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    fn has_pending(&self) -> bool {
        self.batch_next < self.batch.len()
    }

    fn drained(&self) -> bool {
        // The kernel runs a multishot receive for a bounded number of
        // datagrams per pass, so a short batch alone proves nothing: ask
        // whether work was left. A receive that ended (ENOBUFS, a full CQ)
        // leaves datagrams in the socket until the re-arm.
        !self.more_waiting
            && self.batch.len() < self.ring.params().cq_entries() as usize
            && self.batch.iter().all(|&(_, flags)| cqueue::more(flags))
    }

    fn batch_len(&self) -> usize {
        self.batch.len()
    }

    fn room(&self) -> Option<usize> {
        // With deferred task work, arriving datagrams stay in the socket
        // until we ask; without it the kernel moves them into buffers and
        // completions as they come, and the receive stops when either runs
        // out.
        if self.deferred {
            return None;
        }
        let cq = self.ring.params().cq_entries() as usize;
        Some(cq.min(self.buffer_count))
    }

    fn kind(&self) -> ReceiverKind {
        ReceiverKind::IoUring
    }

    fn stop(&mut self) {
        self.stopped = true;
        if self.armed {
            // Fails only if the ring itself is unusable (another thread's,
            // under SINGLE_ISSUER); then nothing more can be done.
            let _ = self.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// The running kernel's (major, minor).
    fn kernel() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    #[test]
    fn the_probe_agrees_with_the_kernel_version() {
        match probe_multishot() {
            Ok(()) => assert!(kernel() >= (6, 0), "{:?}", kernel()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                assert!(kernel() < (6, 0), "{:?}", kernel())
            }
            Err(e) => println!("SKIPPED: io_uring unavailable here: {e}"),
        }
    }

    /// The metadata of the next `n` datagrams.
    fn receive(rx: &mut UringReceiver, n: usize) -> Vec<RecvMeta> {
        let mut got = Vec::new();
        while got.len() < n {
            match rx.next().unwrap() {
                Some(meta) => got.push(meta),
                None => {
                    let mut pfd = libc::pollfd {
                        fd: rx.wait_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one live pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1000) };
                }
            }
        }
        got
    }

    #[test]
    fn truncated_control_data_is_flagged() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let fd = sock.as_raw_fd();
        // A timestamp and IP_PKTINFO fill CONTROL_LEN; IP_TTL overflows it.
        for (level, opt) in [
            (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
            (libc::IPPROTO_IP, libc::IP_PKTINFO),
            (libc::IPPROTO_IP, libc::IP_RECVTTL),
        ] {
            let one: libc::c_int = 1;
            // SAFETY: the value points at a live c_int of the size passed.
            let rc =
                unsafe { libc::setsockopt(fd, level, opt, (&one as *const libc::c_int).cast(), 4) };
            assert_eq!(rc, 0);
        }
        let mut rx = match UringReceiver::new(fd, &UringConfig::default(), false) {
            Ok(rx) => rx,
            Err(e) => return println!("SKIPPED: io_uring unavailable here: {e}"),
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7; 32], sock.local_addr().unwrap()).unwrap();
        let meta = receive(&mut rx, 1)[0];
        assert!(meta.ancillary.truncated, "{meta:?}");
        assert!(
            meta.ancillary.timestamp.is_some(),
            "the timestamp came first"
        );
        assert_eq!(meta.captured, 32, "the datagram is whole");
    }

    fn socket_drained(fd: RawFd) -> usize {
        let mut n = 0;
        crate::recv::drain_socket(fd, 1000, |_, _| n += 1);
        n
    }

    #[test]
    fn after_stop_the_kernel_takes_no_more_datagrams() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let to = sock.local_addr().unwrap();
        let mut rx = match UringReceiver::new(sock.as_raw_fd(), &UringConfig::default(), false) {
            Ok(rx) => rx,
            Err(e) => return println!("SKIPPED: io_uring unavailable here: {e}"),
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let send = |n| {
            for i in 0..n {
                tx.send_to(&[i as u8; 32], to).unwrap();
            }
        };
        send(10);
        receive(&mut rx, 10);
        assert!(rx.armed, "the multishot receive is running");
        rx.stop();
        assert!(!rx.armed, "its last completion was reaped");
        send(10);
        assert!(rx.next().unwrap().is_none(), "nothing new reaches the ring");
        assert_eq!(
            socket_drained(sock.as_raw_fd()),
            10,
            "the datagrams stay in the socket"
        );
    }
}
