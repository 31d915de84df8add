//! The listening socket: SO_REUSEPORT so workers share a port, a large
//! receive buffer, kernel timestamps and the kernel's drop counter.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::Error;

/// UDP_GRO (linux/udp.h): socket option and control message; not in
/// libc's glibc targets.
pub const UDP_GRO: libc::c_int = 104;

/// SO_MEMINFO and its array length (linux/sock_diag.h); not in every libc.
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;

/// The receive buffer that was asked for and the one the kernel granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvBuffer {
    /// Bytes asked for; 0 means the kernel's default.
    pub requested: usize,
    /// Bytes granted (the kernel reports double, for its bookkeeping; this is half of that).
    pub granted: usize,
}

/// The largest receive buffer the kernel gives any socket, whatever
/// rmem_max or CAP_NET_ADMIN: SO_RCVBUF takes an int, which it doubles.
pub const MAX_RECV_BUFFER: usize = i32::MAX as usize / 2;

impl RecvBuffer {
    /// A warning for people when the kernel granted less than asked.
    pub fn warning(&self) -> Option<String> {
        let (granted, requested) = (self.granted, self.requested);
        if requested == 0 || granted >= requested {
            return None;
        }
        let asked =
            format!("udp receive buffer is {granted} bytes, less than the {requested} asked for");
        let hard_cap =
            format!("{MAX_RECV_BUFFER} bytes (INT_MAX/2) is the most the kernel gives any socket");
        Some(if granted >= MAX_RECV_BUFFER {
            format!("{asked}: {hard_cap}; ask for at most that")
        } else if requested > MAX_RECV_BUFFER {
            format!(
                "{asked}: the kernel caps it at net.core.rmem_max without CAP_NET_ADMIN, and {hard_cap}; raise rmem_max (sysctl -w net.core.rmem_max={MAX_RECV_BUFFER}) to avoid drops under bursts"
            )
        } else {
            format!(
                "{asked}: the kernel caps it at net.core.rmem_max without CAP_NET_ADMIN; raise that (sysctl -w net.core.rmem_max={requested}) to avoid drops under bursts"
            )
        })
    }
}

/// A bound, non-blocking UDP socket ready for a receiver.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: Socket,
    /// Its receive buffer.
    pub recv_buffer: RecvBuffer,
}

impl Listener {
    /// Creates the socket, sets every option and binds it.
    pub fn bind(addr: SocketAddr, recv_buffer: usize) -> Result<Listener, Error> {
        let fail = |call| move |source| Error::Socket { addr, call, source };
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(fail("socket()"))?;
        socket.set_nonblocking(true).map_err(fail("O_NONBLOCK"))?;
        // SO_REUSEPORT lets workers of the same user share the port. Not
        // SO_REUSEADDR: with it, any user's socket with SO_REUSEADDR could
        // bind the port too and take the datagrams. And not for port 0:
        // nobody can mean to share an ephemeral port, and the kernel may
        // hand a sharing socket a port that another sharing socket holds.
        if addr.port() != 0 {
            socket.set_reuse_port(true).map_err(fail("SO_REUSEPORT"))?;
        }
        if addr.is_ipv6() {
            // Explicit, so `[::]` does not depend on net.ipv6.bindv6only:
            // it takes IPv4 (as v4-mapped) and IPv6 alike.
            socket.set_only_v6(false).map_err(fail("IPV6_V6ONLY"))?;
        }
        let fd = socket.as_raw_fd();
        setsockopt_int(fd, libc::SO_TIMESTAMPNS, 1).map_err(fail("SO_TIMESTAMPNS"))?;
        let granted = size_recv_buffer(&socket, recv_buffer).map_err(fail("SO_RCVBUF"))?;
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|e| Error::bind(addr, e))?;
        Ok(Listener {
            socket,
            recv_buffer: RecvBuffer {
                requested: recv_buffer,
                granted,
            },
        })
    }

    /// Lets the kernel hand over a run of same-size datagrams from one
    /// sender as one buffer (UDP GRO, Linux 5.0), their size in a control
    /// message; [`crate::cmsg::Ancillary::gro_size`].
    pub fn enable_gro(&self) -> io::Result<()> {
        setsockopt_at(self.socket.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1)
    }

    /// The address actually bound (port 0 resolves to the kernel's choice).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("socket has no inet address"))
    }
}

/// SO_ATTACH_REUSEPORT_CBPF (asm-generic/socket.h); not in every libc.
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

impl Listener {
    /// Makes `prog` choose the socket of the port's SO_REUSEPORT group for
    /// each datagram (its result is an index in bind order). Any member may
    /// attach it; the last attached program serves the whole group.
    pub fn attach_reuseport_cbpf(&self, prog: &[libc::sock_filter]) -> io::Result<()> {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: fprog points at `prog`, alive for the call; size matches.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&fprog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Asks for `bytes` of receive buffer, forcing past rmem_max where the
/// process may (CAP_NET_ADMIN), and returns what was granted.
fn size_recv_buffer(socket: &Socket, bytes: usize) -> io::Result<usize> {
    if bytes > 0 {
        let want = bytes.min(MAX_RECV_BUFFER);
        socket.set_recv_buffer_size(want)?;
        if socket.recv_buffer_size()? / 2 < want {
            // Fails with EPERM without CAP_NET_ADMIN; the capped size stands.
            let _ = setsockopt_int(socket.as_raw_fd(), libc::SO_RCVBUFFORCE, want as i32);
        }
    }
    Ok(socket.recv_buffer_size()? / 2)
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    setsockopt_at(fd, libc::SOL_SOCKET, opt, value)
}

fn setsockopt_at(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value points at a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's cumulative drop counter (`sk_drops`) right now, read with
/// SO_MEMINFO. Unlike a per-datagram SO_RXQ_OVFL it sees drops after the
/// last datagram that was received.
pub fn kernel_drops(fd: RawFd) -> Option<u32> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = size_of::<[u32; SK_MEMINFO_VARS]>() as libc::socklen_t;
    // SAFETY: `info` and `len` are live and `len` is the size of `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize >= (libc::SK_MEMINFO_DROPS as usize + 1) * 4)
        .then(|| info[libc::SK_MEMINFO_DROPS as usize])
}
