//! Errors a person sees: each says what was wrong and what to do.

use std::io;
use std::net::SocketAddr;

use crate::path::PathError;

/// Why a source could not be opened or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface path did not parse.
    #[error(transparent)]
    Path(#[from] PathError),
    /// bind() failed; `hint` says what to do about it.
    #[error("cannot listen on udp {addr}: {hint}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What to do about it.
        hint: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A socket call other than bind() failed.
    #[error("cannot set up the udp socket for {addr}: {call} failed: {source}")]
    Socket {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Which call failed.
        call: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// io_uring could not be set up; the message says which step failed,
    /// why, and what to do.
    #[error("cannot use io_uring: {call} failed: {source}; {}", uring_hint(.call, .source))]
    IoUring {
        /// Which step failed.
        call: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A setting is out of range.
    #[error("bad setting PacketSource::UDP::{name}: {problem}")]
    Config {
        /// The setting's name, as Zeek's knob without `PacketSource::UDP::`.
        name: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

impl Error {
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Self {
        let port = addr.port();
        let hint = match source.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "port {port} is in use by a socket without SO_REUSEPORT or owned by another user; stop that program (`ss -ulpn 'sport = :{port}'` shows it) or choose another port"
            ),
            Some(libc::EADDRNOTAVAIL) => format!(
                "{} is not an address of this host; listen on 0.0.0.0 or [::], or on an address that `ip addr` shows",
                addr.ip()
            ),
            Some(libc::EACCES) => format!(
                "port {port} is privileged; use a port from 1024 up (VXLAN's 4789 and GENEVE's 6081 need no privileges)"
            ),
            _ => source.to_string(),
        };
        Error::Bind { addr, hint, source }
    }
}

/// Steps of the io_uring setup that [`uring_hint`] knows by name.
pub(crate) mod uring_step {
    pub const SETUP: &str = "io_uring_setup";
    pub const PROBE: &str = "the multishot recvmsg probe";
    pub const PBUF_RING: &str = "IORING_REGISTER_PBUF_RING";
}

/// What to do about an io_uring setup step that failed with `source`.
fn uring_hint(call: &str, source: &io::Error) -> &'static str {
    const OTHER: &str = "use the recvmmsg receiver (PacketSource::UDP::implementation = RECVMMSG, udpsrc --receiver recvmmsg)";
    match (call, source.raw_os_error().unwrap_or(0)) {
        (_, libc::EPERM | libc::EACCES) => {
            "io_uring is not allowed here (sysctl kernel.io_uring_disabled, or a seccomp filter such as a container runtime's): allow it, or use the recvmmsg receiver"
        }
        (_, libc::ENOSYS) => {
            "this kernel has no io_uring (built without it, or a seccomp filter hides it): use the recvmmsg receiver"
        }
        (_, libc::EMFILE | libc::ENFILE) => {
            "too many open files: raise the limit (ulimit -n, LimitNOFILE=) or close other sources"
        }
        (uring_step::SETUP, libc::ENOMEM) => {
            "the ring needs locked memory beyond RLIMIT_MEMLOCK (kernels before 5.12) or memory is short: raise ulimit -l, lower io_uring_sq_entries/io_uring_cq_entries, or use the recvmmsg receiver"
        }
        (_, libc::ENOMEM) => {
            "out of memory for the buffers: lower PacketSource::UDP::io_uring_buffers or io_uring_buffer_shift"
        }
        (uring_step::PROBE, libc::EINVAL) => {
            "this kernel has provided-buffer rings but no multishot recvmsg (Linux 6.0 or later has it): use the recvmmsg receiver"
        }
        (uring_step::PBUF_RING, libc::EINVAL) => {
            "this kernel has no provided-buffer rings (Linux 5.19 or later has them): use the recvmmsg receiver"
        }
        (uring_step::SETUP, libc::EINVAL) => {
            "this kernel refuses the ring's sizes or flags (io_uring_sq_entries, io_uring_cq_entries; or it is older than 5.19): adjust them or use the recvmmsg receiver"
        }
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(call: &'static str, errno: i32) -> String {
        Error::IoUring {
            call,
            source: io::Error::from_raw_os_error(errno),
        }
        .to_string()
    }

    #[test]
    fn io_uring_errors_name_the_step_the_cause_and_the_remedy() {
        let cases = [
            (uring_step::SETUP, libc::EPERM, "kernel.io_uring_disabled"),
            (
                uring_step::SETUP,
                libc::ENOSYS,
                "this kernel has no io_uring",
            ),
            ("eventfd", libc::EMFILE, "too many open files"),
            (
                "mmap of the buffers",
                libc::ENOMEM,
                "lower PacketSource::UDP::io_uring_buffers",
            ),
            (uring_step::SETUP, libc::ENOMEM, "RLIMIT_MEMLOCK"),
            (
                uring_step::PROBE,
                libc::EINVAL,
                "no multishot recvmsg (Linux 6.0",
            ),
            (
                uring_step::PBUF_RING,
                libc::EINVAL,
                "no provided-buffer rings",
            ),
            (
                "IORING_REGISTER_EVENTFD",
                libc::EBUSY,
                "use the recvmmsg receiver",
            ),
        ];
        for (call, errno, want) in cases {
            let got = message(call, errno);
            let cause = io::Error::from_raw_os_error(errno).to_string();
            assert!(
                got.starts_with(&format!("cannot use io_uring: {call} failed: {cause}; ")),
                "{got}"
            );
            assert!(got.contains(want), "{got}\nwanted: {want}");
            assert!(!got.contains("older than 6.0"), "{got}");
        }
    }
}
