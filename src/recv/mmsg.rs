//! The recvmmsg(2) receiver: one syscall fills up to `batch` preallocated
//! buffers; datagrams are then lent out one by one without copying.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;

use super::buffers::Buffers;
use super::{Frame, HEADROOM, Receiver, ReceiverKind, RecvMeta, peer_from_bytes};
use crate::cmsg::{self, CONTROL_LEN};

/// Control buffers are `u64`s so each is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = CONTROL_LEN / 8;

/// Receives batches with recvmmsg(2).
pub struct MmsgReceiver {
    fd: RawFd,
    buffer_size: usize,
    buffers: Buffers,
    control: Box<[u64]>,
    names: Box<[libc::sockaddr_storage]>,
    /// Room offered for each sender's address; 0 when not asked for.
    name_room: libc::socklen_t,
    /// Never read: kept alive because `headers` point into it.
    _iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// Datagrams in the current batch.
    filled: usize,
    /// Index of the next datagram to lend out.
    next: usize,
    /// Index of the datagram lent out, if any.
    current: Option<usize>,
}

// SAFETY: the raw pointers in `iovecs` and `headers` point into boxed slices
// owned by the same struct; nothing else aliases them.
unsafe impl Send for MmsgReceiver {}

impl MmsgReceiver {
    /// `batch` datagrams of at most `buffer_size` bytes each per syscall;
    /// with `peers`, each datagram's sender too.
    pub fn new(fd: RawFd, batch: usize, buffer_size: usize, peers: bool) -> io::Result<Self> {
        let batch = batch.max(1);
        let buffer_size = buffer_size.max(1);
        // Each slot is HEADROOM bytes, then the datagram's buffer.
        // Config::validate bounds both; checked so no caller can make it wrap.
        let stride = buffer_size.checked_add(HEADROOM);
        let total = stride.and_then(|s| s.checked_mul(batch)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{batch} buffers of {buffer_size} bytes do not fit in memory"),
            )
        })?;
        let stride = HEADROOM + buffer_size;
        let mut buffers = Buffers::new(total)?;
        let mut control = vec![0u64; batch * CONTROL_WORDS].into_boxed_slice();
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut names =
            vec![unsafe { zeroed::<libc::sockaddr_storage>() }; batch].into_boxed_slice();
        let mut iovecs: Box<[libc::iovec]> = (0..batch)
            .map(|i| libc::iovec {
                iov_base: buffers[i * stride + HEADROOM..].as_mut_ptr().cast(),
                iov_len: buffer_size,
            })
            .collect();
        let headers = (0..batch)
            .map(|i| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                if peers {
                    h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                }
                h.msg_hdr.msg_iov = &mut iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = control[i * CONTROL_WORDS..].as_mut_ptr().cast();
                h
            })
            .collect();
        let mut rx = MmsgReceiver {
            fd,
            buffer_size,
            buffers,
            control,
            names,
            name_room: if peers {
                size_of::<libc::sockaddr_storage>() as libc::socklen_t
            } else {
                0
            },
            _iovecs: iovecs,
            headers,
            filled: 0,
            next: 0,
            current: None,
        };
        rx.reset_headers(batch);
        Ok(rx)
    }

    /// The kernel overwrites name and control lengths; restore them.
    fn reset_headers(&mut self, count: usize) {
        for h in &mut self.headers[..count] {
            h.msg_hdr.msg_namelen = self.name_room;
            h.msg_hdr.msg_controllen = CONTROL_LEN;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    /// Fetches a new batch; returns how many datagrams arrived.
    fn fill(&mut self) -> io::Result<usize> {
        self.reset_headers(self.filled);
        self.filled = 0;
        self.next = 0;
        // MSG_TRUNC makes msg_len the datagram's real length, so truncation
        // is visible and the true size is known.
        // SAFETY: headers point into buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                self.fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(super::in_step("recvmmsg()", err)),
            };
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Slot `i`: its headroom and its received bytes.
    fn slot(&self, i: usize) -> std::ops::Range<usize> {
        let len = (self.headers[i].msg_len as usize).min(self.buffer_size);
        let start = i * (HEADROOM + self.buffer_size);
        start..start + HEADROOM + len
    }

    fn meta(&self, i: usize) -> RecvMeta {
        let h = &self.headers[i].msg_hdr;
        let wire_len = self.headers[i].msg_len as usize;
        let control_len = h.msg_controllen.min(CONTROL_LEN);
        // SAFETY: the control buffer is CONTROL_LEN bytes of initialised u64s.
        let control: &[u8] = unsafe {
            std::slice::from_raw_parts(
                self.control[i * CONTROL_WORDS..].as_ptr().cast(),
                control_len,
            )
        };
        let name_len = h.msg_namelen.min(self.name_room) as usize;
        // SAFETY: sockaddr_storage is plain data of at least name_len bytes.
        let name: &[u8] = unsafe {
            std::slice::from_raw_parts(
                (&self.names[i] as *const libc::sockaddr_storage).cast(),
                name_len,
            )
        };
        let mut ancillary = cmsg::parse(control);
        ancillary.truncated = cmsg::control_truncated(h.msg_flags);
        RecvMeta {
            captured: wire_len.min(self.buffer_size),
            wire_len,
            ancillary,
            peer: peer_from_bytes(name),
        }
    }
}

impl Receiver for MmsgReceiver {
    fn next(&mut self) -> io::Result<Option<RecvMeta>> {
        self.current = None;
        if self.next >= self.filled && self.fill()? == 0 {
            return Ok(None);
        }
        let i = self.next;
        self.next += 1;
        self.current = Some(i);
        Ok(Some(self.meta(i)))
    }

    fn frame(&mut self) -> Frame<'_> {
        match self.current {
            Some(i) => {
                let slot = self.slot(i);
                Frame::new(&mut self.buffers[slot], HEADROOM)
            }
            None => Frame::empty(),
        }
    }

    fn release(&mut self) {
        // A buffer is reused only by the next fill, after the whole batch.
        self.current = None;
    }

    fn wait_fd(&self) -> RawFd {
        self.fd
    }

    fn has_pending(&self) -> bool {
        self.next < self.filled
    }

    fn drained(&self) -> bool {
        self.filled < self.headers.len()
    }

    fn batch_len(&self) -> usize {
        self.filled
    }

    fn kind(&self) -> ReceiverKind {
        ReceiverKind::Recvmmsg
    }
}
