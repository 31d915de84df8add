//! Owned copies of held packets. A receiver lends a datagram only until
//! the next receive, so a packet held past it is copied: its bytes and
//! GENEVE options into one buffer, with its metadata beside them.
//!
//! Buffers are recycled through a free list, so after warm-up holding
//! allocates nothing; the list exists only when reorder is on (the pool is
//! part of [`super::Reorder`]), so the path without it costs nothing.

use std::net::SocketAddr;

use crate::cmsg::Timestamp;
use crate::link::LinkType;
use crate::source::Packet;

/// A packet that owns its bytes.
#[derive(Debug, Default)]
pub struct OwnedPacket {
    /// The packet's captured bytes, then the GENEVE options.
    buf: Vec<u8>,
    data_len: usize,
    wire_len: usize,
    timestamp: Timestamp,
    link_type: Option<LinkType>,
    vxlan_vni: Option<u32>,
    geneve_vni: Option<u32>,
    peer: Option<SocketAddr>,
    geneve_option_value: Option<u64>,
}

impl OwnedPacket {
    /// Copies `p` into `buf` (cleared first; its capacity is reused).
    pub fn copy(p: &Packet<'_>, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(p.data);
        buf.extend_from_slice(p.geneve_options);
        OwnedPacket {
            buf,
            data_len: p.data.len(),
            wire_len: p.wire_len,
            timestamp: p.timestamp,
            link_type: Some(p.link_type),
            vxlan_vni: p.vxlan_vni,
            geneve_vni: p.geneve_vni,
            peer: p.peer,
            geneve_option_value: p.geneve_option_value,
        }
    }

    /// The packet, as it was received.
    pub fn packet(&self) -> Packet<'_> {
        let (data, options) = self.buf.split_at(self.data_len.min(self.buf.len()));
        Packet {
            data,
            wire_len: self.wire_len,
            timestamp: self.timestamp,
            link_type: self.link_type.unwrap_or(LinkType::En10Mb),
            vxlan_vni: self.vxlan_vni,
            geneve_vni: self.geneve_vni,
            geneve_options: options,
            peer: self.peer,
            geneve_option_value: self.geneve_option_value,
        }
    }

    /// Bytes of memory it takes (its buffer's capacity): what counts
    /// against the byte budget.
    pub fn footprint(&self) -> usize {
        self.buf.capacity()
    }

    /// Its buffer, for reuse.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}
