//! Ancillary data of received datagrams: the kernel's receive timestamp
//! (SO_TIMESTAMPNS).
//!
//! The socket's drop counter is not asked for here (SO_RXQ_OVFL): a control
//! message per datagram costs the receive path more than one SO_MEMINFO read
//! whenever statistics are wanted, and SO_MEMINFO also sees the drops after
//! the last datagram.
//!
//! Parsed from a byte slice rather than through a `msghdr`, so the same
//! code serves recvmmsg's control buffers and io_uring's provided buffers.

use std::mem::size_of;

/// A receive timestamp from the kernel, in the realtime clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub sec: i64,
    /// Nanoseconds within the second.
    pub nsec: u32,
}

impl Timestamp {
    /// The realtime clock now: the time of a datagram that came without
    /// the kernel's timestamp (never 0, nor an older packet's time).
    pub fn now() -> Timestamp {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec into a live value.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        Timestamp {
            sec: ts.tv_sec,
            nsec: ts.tv_nsec.clamp(0, 999_999_999) as u32,
        }
    }

    /// Seconds since the epoch as a float, as Zeek shows times.
    pub fn as_secs_f64(&self) -> f64 {
        self.sec as f64 + f64::from(self.nsec) * 1e-9
    }
}

/// What one datagram's control data said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ancillary {
    /// When the kernel received the datagram.
    pub timestamp: Option<Timestamp>,
    /// UDP GRO: the buffer holds several datagrams, each this long but the
    /// last, which may be shorter.
    pub gro_size: Option<u16>,
    /// The kernel had more control data than [`CONTROL_LEN`] holds
    /// (MSG_CTRUNC): some of it, maybe the timestamp, is missing. Counted;
    /// the datagram itself is whole.
    pub truncated: bool,
}

/// Room for the timestamp and GRO messages (32 + 24 bytes), with slack.
pub const CONTROL_LEN: usize = 64;

// SAFETY (both): CMSG_SPACE only computes with its argument.
const TIMESTAMP_SPACE: usize =
    unsafe { libc::CMSG_SPACE(size_of::<libc::timespec>() as u32) } as usize;
const GRO_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
const _: () = assert!(
    CONTROL_LEN >= TIMESTAMP_SPACE + GRO_SPACE,
    "the control buffer must hold a timestamp and a GRO segment size"
);
const _: () = assert!(CONTROL_LEN % 8 == 0, "control buffers are made of u64s");

/// MSG_CTRUNC in a receive's flags.
pub fn control_truncated(msg_flags: libc::c_int) -> bool {
    msg_flags & libc::MSG_CTRUNC != 0
}

const HDR_LEN: usize = size_of::<libc::cmsghdr>();

fn align(len: usize) -> usize {
    let a = size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// Walks the control messages in `control`; unknown ones are skipped and a
/// malformed tail ends the walk.
pub fn parse(control: &[u8]) -> Ancillary {
    let mut out = Ancillary::default();
    let mut rest = control;
    while rest.len() >= HDR_LEN {
        // SAFETY: HDR_LEN bytes are in bounds; read_unaligned has no alignment needs.
        let hdr: libc::cmsghdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
        // Compared before any arithmetic: a hostile length cannot overflow.
        let len = hdr.cmsg_len as usize;
        if len < HDR_LEN || len > rest.len() {
            break;
        }
        let data = rest.get(align(HDR_LEN)..len).unwrap_or_default();
        if hdr.cmsg_level == libc::SOL_SOCKET {
            match hdr.cmsg_type {
                libc::SCM_TIMESTAMPNS => out.timestamp = timespec(data),
                libc::SCM_TIMESTAMP => out.timestamp = timeval(data),
                _ => {}
            }
        } else if hdr.cmsg_level == libc::SOL_UDP && hdr.cmsg_type == crate::socket::UDP_GRO {
            out.gro_size = int_at(data)
                .and_then(|v| u16::try_from(v).ok())
                .filter(|&v| v > 0);
        }
        rest = rest.get(align(len)..).unwrap_or_default();
    }
    out
}

fn timespec(data: &[u8]) -> Option<Timestamp> {
    if data.len() < size_of::<libc::timespec>() {
        return None;
    }
    // SAFETY: length checked above; read_unaligned has no alignment needs.
    let ts: libc::timespec = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    Some(Timestamp {
        sec: ts.tv_sec,
        nsec: ts.tv_nsec.clamp(0, 999_999_999) as u32,
    })
}

fn timeval(data: &[u8]) -> Option<Timestamp> {
    if data.len() < size_of::<libc::timeval>() {
        return None;
    }
    // SAFETY: length checked above; read_unaligned has no alignment needs.
    let tv: libc::timeval = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    Some(Timestamp {
        sec: tv.tv_sec,
        nsec: (tv.tv_usec.clamp(0, 999_999) * 1000) as u32,
    })
}

fn int_at(data: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}
