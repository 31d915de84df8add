//! Strips the tunnel: from a UDP payload to the packet Zeek analyses.
//!
//! The result is a set of offsets into the datagram rather than borrowed
//! slices, so a receiver can decide what to do with a datagram before it
//! lends out its buffer.

use std::ops::Range;

use crate::link::LinkType;
use crate::path::Encap;
use crate::reject::Reject;
use crate::wire::geneve::{PROTO_ETHERNET, PROTO_IPV4, PROTO_IPV6, PROTO_PPP};
use crate::wire::{Geneve, Vxlan, ip};

/// Where the inner packet sits in a datagram, and what the tunnel said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    /// Offset of the inner packet's first byte.
    pub offset: usize,
    /// Link type of the inner packet.
    pub link_type: LinkType,
    /// VNI of the VXLAN header, for `vxlan` and `geneve+vxlan`.
    pub vxlan_vni: Option<u32>,
    /// VNI of the GENEVE header, for `geneve` and `geneve+vxlan`.
    pub geneve_vni: Option<u32>,
    /// The GENEVE options area (empty when there is none).
    pub geneve_options: Range<usize>,
    /// GENEVE carried this EtherType without an Ethernet header (ARP, MPLS,
    /// ...): the packet needs a synthesized Ethernet header in front, so that
    /// Zeek dispatches on the EtherType as its own GENEVE analyzer would.
    pub ethertype: Option<u16>,
}

/// Decapsulates datagrams of one encapsulation.
#[derive(Clone, Copy, Debug)]
pub struct Decapsulator {
    encap: Encap,
    link_type: LinkType,
}

impl Decapsulator {
    /// `link_type` is the path's `dlt=`; GENEVE's protocol type can override it.
    pub fn new(encap: Encap, link_type: LinkType) -> Self {
        Decapsulator { encap, link_type }
    }

    /// Finds the inner packet in `datagram` (the captured bytes).
    pub fn decap(&self, datagram: &[u8]) -> Result<Inner, Reject> {
        if datagram.is_empty() {
            return Err(Reject::EmptyDatagram);
        }
        let mut inner = Inner {
            offset: 0,
            link_type: self.link_type,
            vxlan_vni: None,
            geneve_vni: None,
            geneve_options: 0..0,
            ethertype: None,
        };
        let payload = match self.encap {
            Encap::Raw => datagram,
            Encap::Skip(n) => datagram
                .get(usize::from(n)..)
                .filter(|rest| !rest.is_empty())
                .ok_or(Reject::SkipBeyondDatagram)?,
            Encap::Vxlan => self.vxlan(datagram, &mut inner)?,
            Encap::Geneve => self.geneve(datagram, &mut inner)?,
            Encap::GeneveVxlan => {
                let after_geneve = self.geneve(datagram, &mut inner)?;
                // What follows GENEVE is IP, never Ethernet: go by the IP header.
                inner.link_type = self.link_type;
                inner.ethertype = None;
                self.vxlan(ip::udp_payload(after_geneve)?, &mut inner)?
            }
        };
        if payload.is_empty() {
            return Err(Reject::EmptyInner);
        }
        inner.offset = datagram.len() - payload.len();
        Ok(inner)
    }

    fn vxlan<'a>(&self, buf: &'a [u8], inner: &mut Inner) -> Result<&'a [u8], Reject> {
        let vxlan = Vxlan::new_checked(buf)?;
        inner.vxlan_vni = Some(vxlan.vni());
        Ok(vxlan.payload())
    }

    /// GENEVE always starts the datagram, so its options start at BASE_LEN.
    fn geneve<'a>(&self, datagram: &'a [u8], inner: &mut Inner) -> Result<&'a [u8], Reject> {
        let geneve = Geneve::new_checked(datagram)?;
        inner.geneve_vni = Some(geneve.vni());
        inner.geneve_options = Geneve::BASE_LEN..geneve.header_len();
        inner.link_type = match geneve.protocol() {
            PROTO_ETHERNET => LinkType::En10Mb,
            PROTO_IPV4 | PROTO_IPV6 => LinkType::Raw,
            PROTO_PPP => LinkType::Ppp,
            // Senders that leave the type unset: trust the path's dlt=.
            0 => self.link_type,
            other => {
                inner.ethertype = Some(other);
                LinkType::En10Mb
            }
        };
        Ok(geneve.payload())
    }
}
