//! Receive buffer memory: one anonymous mapping, asked to be backed by
//! transparent huge pages. Datagram slots are kilobytes apart, so with 4 KiB
//! pages nearly every packet would cost a TLB miss.

use std::io;
use std::ops::{Deref, DerefMut};

/// Zeroed, page-aligned bytes that stay at one address until dropped.
pub struct Buffers {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value.
unsafe impl Send for Buffers {}

impl Buffers {
    /// Maps `len` bytes (at least one).
    pub fn new(len: usize) -> io::Result<Self> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Advice only: where THP is off, 4 KiB pages still work.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        Ok(Buffers {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Deref for Buffers {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped at `ptr` for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for Buffers {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
