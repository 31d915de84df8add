//! Settings outside the path (Zeek's `PacketSource::UDP::*` knobs), their
//! defaults (the one place: the C ABI's `zus_config_default` hands these
//! out) and their bounds. Every setting is checked here, with checked
//! arithmetic, before anything is allocated or bound: a bad one is refused
//! with [`Error::Config`], naming the knob as users know it and its range.

use std::time::Duration;

use crate::error::Error;
use crate::path::SourcePath;
use crate::recv::HEADROOM;
use crate::recv::ReceiverKind;
use crate::recv::uring::UringConfig;

/// Settings that are not part of the path (Zeek's `PacketSource::UDP::*`).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Which receiver to use.
    pub receiver: ReceiverKind,
    /// SO_RCVBUF to ask for; 0 keeps the kernel's default.
    pub recv_buffer_size: usize,
    /// Datagrams per recvmmsg call.
    pub recvmmsg_batch: usize,
    /// Bytes per recvmmsg buffer; larger datagrams arrive truncated.
    pub recvmmsg_buffer_size: usize,
    /// io_uring settings.
    pub uring: UringConfig,
    /// After a receive that emptied the socket, hold the next one off for
    /// at most this long, so datagrams gather and arrive in one batch
    /// (zero: never wait): the bound on the latency it adds. The hold-off
    /// itself adapts ([`crate::pace`]): short after an idle spell, and
    /// ended before the socket's buffer could fill at the arrival rate.
    pub batch_wait: Duration,
    /// A GENEVE option (class, type) whose value identifies the network,
    /// for senders that leave the VNI 0 (GCP NSI); see
    /// [`crate::Packet::geneve_option_value`].
    pub geneve_key_option: Option<(u16, u8)>,
    /// Ask the kernel for each datagram's sender ([`crate::Packet::peer`]).
    /// Costs a copy per datagram; paths with `allow=` get it regardless.
    pub peer_addresses: bool,
    /// UDP GRO: let the kernel hand over runs of same-size datagrams from
    /// one sender in one buffer (recvmmsg only; buffers grow to 64 KiB and
    /// a call takes at most [`GRO_BATCH`] of them).
    pub udp_gro: bool,
    /// Duplicate suppression window (`PacketSource::UDP::dedup`; `None`:
    /// off); a path's `dedup=` takes precedence. See [`crate::tap`].
    pub dedup: Option<Duration>,
    /// Reorder repair window (`PacketSource::UDP::reorder`; `None`: off);
    /// a path's `reorder=` takes precedence. See [`crate::tap`].
    pub reorder: Option<Duration>,
    /// With dedup or reorder off, check a sample of the feed for what they
    /// would repair and say so once ([`crate::Source::advice`]).
    pub check_feed: bool,
}

pub use crate::gro::{GRO_BATCH, GRO_BUFFER};

/// The kernel takes at most this many messages per recvmmsg (UIO_MAXIOV).
pub const MAX_RECVMMSG_BATCH: usize = 1024;
/// No UDP datagram is longer than 65535 bytes; GRO runs stay within 64 KiB.
pub const MAX_RECVMMSG_BUFFER: usize = GRO_BUFFER;
pub use crate::socket::MAX_RECV_BUFFER;
/// A hold-off longer than this is no batching but a stall.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(10);
/// Half af_packet's default block timeout (10 ms), so no more latency than
/// Zeek's af_packet users accept, and at most ~200 wake-ups a second at
/// any rate. A hold-off is sized from the rate seen before it, so a rate
/// that jumps during one can fill the socket: at this bound and loopback's
/// 832 bytes per small datagram, the default buffer (8 MiB of the kernel's
/// accounting where rmem_max is 4 MiB) takes a jump to about 2 Mpkt/s.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(5);

impl Default for Config {
    fn default() -> Self {
        Config {
            receiver: ReceiverKind::Recvmmsg,
            recv_buffer_size: 16 * 1024 * 1024,
            recvmmsg_batch: 1024,
            recvmmsg_buffer_size: 9216 + 32,
            uring: UringConfig::default(),
            batch_wait: DEFAULT_BATCH_WAIT,
            geneve_key_option: None,
            peer_addresses: true,
            udp_gro: false,
            dedup: None,
            reorder: None,
            check_feed: true,
        }
    }
}

/// A refusal of `knob`, named as in Zeek without `PacketSource::UDP::`.
pub(crate) fn refuse(knob: &'static str, problem: String) -> Error {
    Error::Config {
        name: knob,
        problem,
    }
}

impl Config {
    /// Checks every setting, and their combination with `path`.
    pub fn validate(&self, path: &SourcePath) -> Result<(), Error> {
        if self.recv_buffer_size > MAX_RECV_BUFFER {
            return Err(refuse(
                "udp_recv_buffer_size",
                format!(
                    "{} bytes is more than the kernel can grant; use 0 (the kernel's default) to {MAX_RECV_BUFFER} bytes (udpsrc: --rcvbuf)",
                    self.recv_buffer_size
                ),
            ));
        }
        if self.batch_wait > MAX_BATCH_WAIT {
            return Err(refuse(
                "batch_wait",
                format!(
                    "{:?} would hold packets back too long; use 0 (no hold-off) to {MAX_BATCH_WAIT:?}",
                    self.batch_wait
                ),
            ));
        }
        self.validate_gro(path)?;
        validate_window("dedup", self.dedup)?;
        validate_window("reorder", self.reorder)?;
        match self.receiver {
            ReceiverKind::Recvmmsg => self.recvmmsg_shape().map(|_| ()),
            ReceiverKind::IoUring => self.uring.validate(),
        }
    }

    fn validate_gro(&self, path: &SourcePath) -> Result<(), Error> {
        if !self.udp_gro {
            return Ok(());
        }
        if self.receiver != ReceiverKind::Recvmmsg {
            return Err(refuse(
                "udp_gro",
                "works with the recvmmsg receiver only: use it, or turn udp_gro off (udpsrc: --gro)".to_string(),
            ));
        }
        if path.workers.is_some() {
            // The kernel picks the worker for the first datagram of a
            // run; the rest follow it whatever their inner flow.
            return Err(refuse(
                "udp_gro",
                "cannot be combined with workers=: a coalesced run reaches one worker whatever its inner flows".to_string(),
            ));
        }
        Ok(())
    }

    /// The recvmmsg receiver's (batch, buffer size, bytes to map), with
    /// UDP GRO's adjustments; refuses sizes out of range.
    pub fn recvmmsg_shape(&self) -> Result<(usize, usize, usize), Error> {
        if !(1..=MAX_RECVMMSG_BATCH).contains(&self.recvmmsg_batch) {
            return Err(refuse(
                "recvmmsg_buffers",
                format!(
                    "{} datagrams per recvmmsg call is outside 1..={MAX_RECVMMSG_BATCH} (the kernel takes at most {MAX_RECVMMSG_BATCH})",
                    self.recvmmsg_batch
                ),
            ));
        }
        if !(1..=MAX_RECVMMSG_BUFFER).contains(&self.recvmmsg_buffer_size) {
            return Err(refuse(
                "recvmmsg_buffer_size",
                format!(
                    "{} bytes is outside 1..={MAX_RECVMMSG_BUFFER} (no UDP datagram is longer than 65535 bytes)",
                    self.recvmmsg_buffer_size
                ),
            ));
        }
        let (mut batch, mut size) = (self.recvmmsg_batch, self.recvmmsg_buffer_size);
        if self.udp_gro {
            (batch, size) = crate::gro::recvmmsg_shape(batch, size);
        }
        // Within the bounds above this cannot overflow; checked anyway, so
        // a later change of a bound cannot make it wrap.
        let bytes = size
            .checked_add(HEADROOM)
            .and_then(|stride| stride.checked_mul(batch))
            .ok_or_else(|| {
                refuse(
                    "recvmmsg_buffers",
                    format!("{batch} buffers of {size} bytes do not fit in memory"),
                )
            })?;
        Ok((batch, size, bytes))
    }
}

/// A dedup or reorder window: whole microseconds from 1 µs to
/// [`crate::path::MAX_WINDOW`] (`None` is off).
fn validate_window(knob: &'static str, window: Option<Duration>) -> Result<(), Error> {
    let Some(w) = window else {
        return Ok(());
    };
    if w.is_zero() || w > crate::path::MAX_WINDOW || w.subsec_nanos() % 1000 != 0 {
        return Err(refuse(
            knob,
            format!(
                "{w:?} is not a window of whole microseconds from 1us to 1s (0 turns {knob} off)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: Config) -> Result<(), String> {
        let path = crate::path::parse("127.0.0.1:4789").unwrap();
        config.validate(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        check(Config::default()).unwrap();
        check(Config {
            receiver: ReceiverKind::IoUring,
            ..Config::default()
        })
        .unwrap();
    }

    #[test]
    fn each_bound_names_its_knob_and_range() {
        let d = Config::default();
        let cases = [
            (
                Config {
                    recvmmsg_buffer_size: 1 << 62,
                    ..d
                },
                "PacketSource::UDP::recvmmsg_buffer_size: 4611686018427387904 bytes is outside 1..=65536",
            ),
            (
                Config {
                    recvmmsg_buffer_size: 0,
                    ..d
                },
                "recvmmsg_buffer_size: 0 bytes is outside 1..=65536",
            ),
            (
                Config {
                    recvmmsg_batch: usize::MAX,
                    ..d
                },
                "PacketSource::UDP::recvmmsg_buffers: 18446744073709551615 datagrams per recvmmsg call is outside 1..=1024",
            ),
            (
                Config {
                    recvmmsg_batch: 0,
                    ..d
                },
                "recvmmsg_buffers: 0 datagrams",
            ),
            (
                Config {
                    recv_buffer_size: 1 << 40,
                    ..d
                },
                "PacketSource::UDP::udp_recv_buffer_size: 1099511627776 bytes is more than the kernel can grant; use 0 (the kernel's default) to 1073741823 bytes (udpsrc: --rcvbuf)",
            ),
            (
                Config {
                    batch_wait: Duration::from_secs(3600),
                    ..d
                },
                "PacketSource::UDP::batch_wait: 3600s would hold packets back too long; use 0 (no hold-off) to 10s",
            ),
            (
                Config {
                    udp_gro: true,
                    receiver: ReceiverKind::IoUring,
                    ..d
                },
                "PacketSource::UDP::udp_gro: works with the recvmmsg receiver only",
            ),
            (
                Config {
                    dedup: Some(Duration::from_secs(2)),
                    ..d
                },
                "PacketSource::UDP::dedup: 2s is not a window of whole microseconds from 1us to 1s (0 turns dedup off)",
            ),
            (
                Config {
                    reorder: Some(Duration::from_nanos(1500)),
                    ..d
                },
                "PacketSource::UDP::reorder: 1.5µs is not a window",
            ),
        ];
        for (config, want) in cases {
            let got = check(config).unwrap_err();
            assert!(got.contains(want), "{got}\nwanted: {want}");
        }
    }
}
