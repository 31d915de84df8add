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
    /// io_uring could not be set up.
    #[error(
        "io_uring is unavailable ({call}: {source}); the kernel may be older than 6.0 or io_uring may be disabled (sysctl kernel.io_uring_disabled, seccomp); use the recvmmsg receiver instead"
    )]
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
