//! The inner packet's flow, one key for every place that needs it: both
//! directions of a connection get one key and one hash, so a replayed
//! trace can give each flow one outer UDP source port (RFC 7348 section 5,
//! RFC 8926 section 3.3), the balancing program ([`crate::balance`]) sends
//! each flow to one worker, and per-flow state can be keyed by it.
//!
//! [`FlowKey::hash`] is the hash that the balancing program computes in the
//! kernel, written again in Rust; tests/balance.rs holds the two together.

use crate::link::LinkType;
use crate::wire::ip::{SCTP, TCP, UDP};
use crate::wire::{Ip, ethernet};

/// The multiplier of each mixing round (an integer hash's, "hash prospector").
pub const MIX_MULTIPLIER: u32 = 0x045d_9f3b;
/// Mixing rounds; a final `h ^= h >> 16` follows them.
pub const MIX_ROUNDS: usize = 2;

/// The endpoints of a packet's flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Lower endpoint (address, port), so both directions agree. An
    /// address is its bytes read big-endian, IPv4 in the low 32 bits
    /// ([`Ip::addresses`]).
    pub a: (u128, u16),
    /// Higher endpoint.
    pub b: (u128, u16),
    /// IP protocol number (for IPv6, after the extension headers).
    pub proto: u8,
}

/// The flow of a packet of this link type, `wire_len` bytes long on the
/// wire of which `packet` was captured; `None` when it is not IP, is
/// malformed, or its ports were not captured.
///
/// Ports count for TCP, UDP and SCTP, and not in fragments (the first one
/// included), so that every fragment of a packet has the flow of the others.
pub fn flow_key(link: LinkType, packet: &[u8], wire_len: usize) -> Option<FlowKey> {
    let ip = match link {
        LinkType::Raw => packet,
        LinkType::En10Mb => ethernet::ip_payload(packet)?,
        LinkType::Ppp => return None,
    };
    let link_len = packet.len() - ip.len();
    let ip = Ip::new_checked(ip, wire_len.max(packet.len()) - link_len).ok()?;
    FlowKey::of(&ip)
}

impl FlowKey {
    /// The flow of a checked IP packet (see [`flow_key`]).
    pub fn of(ip: &Ip<'_>) -> Option<FlowKey> {
        FlowKey::directed(ip).map(|(key, _)| key)
    }

    /// [`FlowKey::of`], and the packet's direction: 0 when its sender is
    /// `a`, 1 when it is `b`.
    pub fn directed(ip: &Ip<'_>) -> Option<(FlowKey, usize)> {
        let proto = ip.protocol();
        let (sport, dport) = match proto {
            TCP | UDP | SCTP if !ip.is_fragment() => {
                let l4 = ip.payload().get(..4)?;
                (
                    u16::from_be_bytes([l4[0], l4[1]]),
                    u16::from_be_bytes([l4[2], l4[3]]),
                )
            }
            _ => (0, 0),
        };
        let (src, dst) = ip.addresses();
        Some(FlowKey::between(proto, (src, sport), (dst, dport)))
    }

    /// The key of a packet of protocol `proto` from `src` to `dst`
    /// (address as in [`Ip::addresses`], port), and its direction: 0 when
    /// its sender is `a`, 1 when it is `b`.
    #[inline]
    pub fn between(proto: u8, src: (u128, u16), dst: (u128, u16)) -> (FlowKey, usize) {
        match src <= dst {
            true => (
                FlowKey {
                    a: src,
                    b: dst,
                    proto,
                },
                0,
            ),
            false => (
                FlowKey {
                    a: dst,
                    b: src,
                    proto,
                },
                1,
            ),
        }
    }

    /// The symmetric flow hash: the XOR of the address words and the ports
    /// (XOR ignores direction), mixed. It is what the balancing program
    /// computes, so that `hash() % workers` is the worker it picks.
    pub fn hash(&self) -> u32 {
        // The XOR of the four big-endian 32-bit words.
        let words = |x: u128| (x >> 96) as u32 ^ (x >> 64) as u32 ^ (x >> 32) as u32 ^ x as u32;
        mix(words(self.a.0) ^ words(self.b.0) ^ u32::from(self.a.1) ^ u32::from(self.b.1))
    }
}

/// Spreads the bits of the XORed fields over the whole word.
fn mix(mut h: u32) -> u32 {
    for _ in 0..MIX_ROUNDS {
        h = ((h >> 16) ^ h).wrapping_mul(MIX_MULTIPLIER);
    }
    (h >> 16) ^ h
}
