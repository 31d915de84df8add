//! From a received datagram to the packet handed out: the tunnel's rules
//! ([`crate::decap`]) applied to the captured bytes, then a view that
//! already carries the link type, any synthesized Ethernet header and the
//! GENEVE options.

use std::net::SocketAddr;

use crate::cmsg::Timestamp;
use crate::decap::{Decapsulator, Inner};
use crate::link::LinkType;
use crate::path::{Encap, SourcePath};
use crate::recv::{Frame, HEADROOM, RecvMeta};
use crate::reject::Reject;
use crate::wire::GeneveOptions;

/// A decapsulated packet, borrowed from the receiver until
/// [`crate::Source::done`] or the next [`crate::Source::next_packet`].
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The inner packet's captured bytes.
    pub data: &'a [u8],
    /// The inner packet's length on the wire (larger when truncated).
    pub wire_len: usize,
    /// The kernel's receive timestamp (or the time of reading, for a
    /// datagram that came without one).
    pub timestamp: Timestamp,
    /// Link type of `data`.
    pub link_type: LinkType,
    /// VXLAN VNI, for `vxlan` and `geneve+vxlan`.
    pub vxlan_vni: Option<u32>,
    /// GENEVE VNI, for `geneve` and `geneve+vxlan`.
    pub geneve_vni: Option<u32>,
    /// The raw GENEVE options area (empty if none).
    pub geneve_options: &'a [u8],
    /// Who sent the tunnel datagram (`None` unless
    /// [`crate::Config::peer_addresses`] or the path's `allow=` asked for it).
    pub peer: Option<SocketAddr>,
    /// The value of [`crate::Config::geneve_key_option`] in this packet, if
    /// both are there.
    pub geneve_option_value: Option<u64>,
}

impl<'a> Packet<'a> {
    /// The GENEVE options, one by one.
    pub fn geneve_options(&self) -> GeneveOptions<'a> {
        GeneveOptions::new(self.geneve_options)
    }

    /// The datagram did not fit its buffer; `data` is shorter than `wire_len`.
    pub fn truncated(&self) -> bool {
        self.data.len() < self.wire_len
    }
}

/// A synthesized Ethernet header: zero MAC addresses and the EtherType.
pub const ETHERNET_LEN: usize = 14;

// The tunnel header moves down by ETHERNET_LEN into the headroom to make
// room for a synthesized header (Unwrap::view); every receiver keeps
// HEADROOM in front of a datagram.
const _: () = assert!(ETHERNET_LEN <= HEADROOM);

/// Decapsulation as a source does it, for one path.
#[derive(Clone, Copy, Debug)]
pub struct Unwrap {
    decap: Decapsulator,
    encap: Encap,
    link_type: LinkType,
    geneve_key_option: Option<(u16, u8)>,
}

impl Unwrap {
    /// For `path`, with the GENEVE option whose value is wanted, if any.
    pub fn new(path: &SourcePath, geneve_key_option: Option<(u16, u8)>) -> Self {
        Unwrap {
            decap: Decapsulator::new(path.encap, path.link_type),
            encap: path.encap,
            link_type: path.link_type,
            geneve_key_option,
        }
    }

    /// Where the inner packet is in `datagram` (the captured bytes of one
    /// `wire_len` long), or why there is none.
    ///
    /// `skip=N` that reaches past what the buffer captured but not past the
    /// datagram finds the inner packet there, none of it captured: it is
    /// delivered truncated, like any datagram longer than its buffer.
    /// Rejecting it as beyond the datagram would be untrue, and would make
    /// the receivers disagree: their buffers differ in size
    /// (recvmmsg_buffer_size vs. an io_uring buffer less its recvmsg
    /// header, address and control data).
    pub fn inner(&self, datagram: &[u8], wire_len: usize) -> Result<Inner, Reject> {
        match (self.encap, self.decap.decap(datagram)) {
            (Encap::Skip(n), Err(Reject::SkipBeyondDatagram | Reject::EmptyDatagram))
                if usize::from(n) < wire_len =>
            {
                Ok(Inner {
                    offset: usize::from(n),
                    link_type: self.link_type,
                    vxlan_vni: None,
                    geneve_vni: None,
                    geneve_options: 0..0,
                    ethertype: None,
                })
            }
            (_, decapsulated) => decapsulated,
        }
    }

    /// The packet `inner` found in `frame`, whose datagram `meta` describes.
    pub fn view<'a>(&self, frame: Frame<'a>, inner: &Inner, meta: &RecvMeta) -> Packet<'a> {
        let (buf, mut at) = frame.into_parts();
        let captured = buf.len() - at;
        // The offset may lie past the captured bytes (skip=N, see `inner`).
        let mut start = at + inner.offset.min(captured);
        let mut wire_len = meta.wire_len.saturating_sub(inner.offset);
        if let (Some(ethertype), Some(below)) = (inner.ethertype, at.checked_sub(ETHERNET_LEN)) {
            // The header goes right before the inner packet, where the end
            // of the tunnel header is: move the tunnel header (whose GENEVE
            // options are lent out too) into the headroom first.
            buf.copy_within(at..start, below);
            (at, start) = (below, start - ETHERNET_LEN);
            wire_len += ETHERNET_LEN;
            let header = &mut buf[start..start + ETHERNET_LEN];
            header[..12].fill(0);
            header[12..].copy_from_slice(&ethertype.to_be_bytes());
        }
        let buf: &'a [u8] = buf;
        let datagram = &buf[at..];
        let options = datagram
            .get(inner.geneve_options.clone())
            .unwrap_or_default();
        Packet {
            data: &buf[start..],
            wire_len,
            timestamp: meta.ancillary.timestamp.unwrap_or_else(Timestamp::now),
            link_type: inner.link_type,
            vxlan_vni: inner.vxlan_vni,
            geneve_vni: inner.geneve_vni,
            geneve_options: options,
            peer: meta.peer,
            geneve_option_value: self
                .geneve_key_option
                .and_then(|(class, kind)| GeneveOptions::new(options).option_value(class, kind)),
        }
    }
}
