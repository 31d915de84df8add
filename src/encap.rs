//! Builds tunnel datagrams around inner packets: the sending side of
//! [`crate::decap`], used by `udpsrc replay`, the tests and the benchmarks.

use std::net::IpAddr;

use crate::link::LinkType;
use crate::path::Encap;
use crate::wire::geneve::{PROTO_ETHERNET, PROTO_IPV4, PROTO_IPV6, PROTO_PPP};
use crate::wire::{Geneve, Udp, Vxlan};

/// The IANA VXLAN port, the destination inside `geneve+vxlan`.
const VXLAN_PORT: u16 = 4789;

/// How to wrap inner packets.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// The encapsulation to build.
    pub encap: Encap,
    /// VNI of VXLAN headers.
    pub vxlan_vni: u32,
    /// VNI of GENEVE headers.
    pub geneve_vni: u32,
    /// GENEVE options, TLV-encoded (see [`crate::wire::GeneveOption::emit`]).
    pub geneve_options: Vec<u8>,
    /// Addresses of the IP header between GENEVE and VXLAN (`geneve+vxlan`).
    pub inner_tunnel: (IpAddr, IpAddr),
}

impl Encoder {
    /// An encoder with VNI 0, no options and documentation addresses.
    pub fn new(encap: Encap) -> Self {
        Encoder {
            encap,
            vxlan_vni: 0,
            geneve_vni: 0,
            geneve_options: Vec::new(),
            inner_tunnel: ([192, 0, 2, 1].into(), [192, 0, 2, 2].into()),
        }
    }

    /// Clears `out` and writes the datagram carrying `inner`.
    /// `geneve+vxlan` carries Ethernet: give it `LinkType::En10Mb` frames.
    pub fn encode(&self, inner: &[u8], link_type: LinkType, out: &mut Vec<u8>) {
        out.clear();
        match self.encap {
            Encap::Raw => {}
            Encap::Skip(n) => out.resize(usize::from(n), 0),
            Encap::Vxlan => Vxlan::emit(self.vxlan_vni, out),
            Encap::Geneve => Geneve::emit(
                self.geneve_vni,
                geneve_protocol(inner, link_type),
                &self.geneve_options,
                out,
            ),
            Encap::GeneveVxlan => self.geneve_vxlan_headers(inner.len(), out),
        }
        out.extend_from_slice(inner);
    }

    fn geneve_vxlan_headers(&self, inner_len: usize, out: &mut Vec<u8>) {
        let (src, dst) = self.inner_tunnel;
        let proto = if src.is_ipv4() {
            PROTO_IPV4
        } else {
            PROTO_IPV6
        };
        Geneve::emit(self.geneve_vni, proto, &self.geneve_options, out);
        let udp_len = (Udp::HEADER_LEN + Vxlan::LEN + inner_len) as u16;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_header(s.octets(), d.octets(), udp_len, out),
            (s, d) => ipv6_header(v6_octets(s), v6_octets(d), udp_len, out),
        }
        Udp::emit(49152, VXLAN_PORT, udp_len, out);
        Vxlan::emit(self.vxlan_vni, out);
    }
}

/// The GENEVE protocol type for an inner packet of this link type.
pub fn geneve_protocol(inner: &[u8], link_type: LinkType) -> u16 {
    match link_type {
        LinkType::En10Mb => PROTO_ETHERNET,
        LinkType::Ppp => PROTO_PPP,
        LinkType::Raw => match inner.first().map(|b| b >> 4) {
            Some(6) => PROTO_IPV6,
            _ => PROTO_IPV4,
        },
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], payload_len: u16, out: &mut Vec<u8>) {
    let total = (20 + payload_len).to_be_bytes();
    let mut h = [
        0x45, 0, total[0], total[1], 0, 0, 0x40, 0, 64, 17, 0, 0, src[0], src[1], src[2], src[3],
        dst[0], dst[1], dst[2], dst[3],
    ];
    let sum = ipv4_checksum(&h).to_be_bytes();
    h[10] = sum[0];
    h[11] = sum[1];
    out.extend_from_slice(&h);
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv6_header(src: [u8; 16], dst: [u8; 16], payload_len: u16, out: &mut Vec<u8>) {
    let len = payload_len.to_be_bytes();
    out.extend_from_slice(&[0x60, 0, 0, 0, len[0], len[1], 17, 64]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
}
