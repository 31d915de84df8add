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
use crate::wire::{Geneve, Ip, Malformed, Udp, Vxlan};

/// Where the inner packet sits in a datagram, and what the tunnel said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    /// Offset of the inner packet's first byte.
    pub offset: usize,
    /// The inner packet's length on the wire: to the end of the datagram,
    /// or for `geneve+vxlan` to where the UDP length ends it (what follows
    /// is padding, no part of the packet).
    pub wire_len: usize,
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

impl Inner {
    /// Where its captured bytes lie in a datagram of which `captured` bytes
    /// are at hand: from `offset` to the end of the packet or of the capture.
    pub fn captured(&self, captured: usize) -> Range<usize> {
        let end = self.offset.saturating_add(self.wire_len).min(captured);
        self.offset..end.max(self.offset)
    }
}

/// `skip=N`: the inner packet starts N bytes into a datagram of `wire_len`.
/// Where N reaches past what the buffer captured but not past the datagram,
/// the inner packet is there, none of it captured: it is delivered
/// truncated, like any datagram longer than its buffer. Rejecting it as
/// beyond the datagram would be untrue, and would make the receivers
/// disagree: their buffers differ in size (recvmmsg_buffer_size vs. an
/// io_uring buffer less its recvmsg header, address and control data).
fn skip(n: usize, wire_len: usize, mut inner: Inner) -> Result<Inner, Reject> {
    if n >= wire_len {
        return Err(Reject::SkipBeyondDatagram);
    }
    inner.offset = n;
    inner.wire_len = wire_len - n;
    Ok(inner)
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

    /// Finds the inner packet in a whole datagram.
    pub fn decap(&self, datagram: &[u8]) -> Result<Inner, Reject> {
        self.decap_captured(datagram, datagram.len())
    }

    /// Finds the inner packet in the `captured` bytes of a datagram of
    /// `wire_len` bytes: more than captured when the receive buffer was too
    /// small. A length field may reach past the captured bytes, but not past
    /// `wire_len`.
    pub fn decap_captured(&self, datagram: &[u8], wire_len: usize) -> Result<Inner, Reject> {
        if datagram.is_empty() {
            return Err(Reject::EmptyDatagram);
        }
        let wire_len = wire_len.max(datagram.len());
        // Where the inner packet ends on the wire.
        let mut end = wire_len;
        let mut inner = Inner {
            offset: 0,
            wire_len: 0,
            link_type: self.link_type,
            vxlan_vni: None,
            geneve_vni: None,
            geneve_options: 0..0,
            ethertype: None,
        };
        let payload = match self.encap {
            Encap::Raw => datagram,
            Encap::Skip(n) => return skip(usize::from(n), wire_len, inner),
            Encap::Vxlan => self.vxlan(datagram, &mut inner)?,
            Encap::Geneve => self.geneve(datagram, &mut inner)?,
            Encap::GeneveVxlan => {
                let (frame, frame_end) = self.geneve_vxlan(datagram, wire_len, &mut inner)?;
                end = frame_end;
                frame
            }
        };
        inner.offset = datagram.len() - payload.len();
        inner.wire_len = end.saturating_sub(inner.offset);
        if payload.is_empty() || inner.wire_len == 0 {
            return Err(Reject::EmptyInner);
        }
        Ok(inner)
    }

    /// GENEVE, then IP and UDP, then VXLAN: the inner frame (its captured
    /// bytes and what follows them) and where the UDP length ends it.
    fn geneve_vxlan<'a>(
        &self,
        datagram: &'a [u8],
        wire_len: usize,
        inner: &mut Inner,
    ) -> Result<(&'a [u8], usize), Reject> {
        let after_geneve = self.geneve(datagram, inner)?;
        // What follows GENEVE is IP, never Ethernet: go by the IP header.
        inner.link_type = self.link_type;
        inner.ethertype = None;
        let ip_at = datagram.len() - after_geneve.len();
        let (udp_at, udp) = tunnel_udp(after_geneve, wire_len - ip_at)?;
        self.vxlan(udp.payload(), inner)?;
        let udp_at = ip_at + udp_at;
        let frame = datagram.get(udp_at + Udp::HEADER_LEN + Vxlan::LEN..);
        Ok((frame.unwrap_or_default(), udp_at + udp.total_len()))
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

/// The UDP datagram in the IP packet of `wire_len` bytes between GENEVE and
/// VXLAN, and its offset in that packet.
fn tunnel_udp(packet: &[u8], wire_len: usize) -> Result<(usize, Udp<'_>), Reject> {
    let reject = |length: Reject| {
        move |e| match e {
            Malformed::Header => Reject::InnerIpBad,
            Malformed::Length => length,
        }
    };
    let ip = Ip::new_checked(packet, wire_len).map_err(reject(Reject::InnerIpLength))?;
    if !ip.has_udp_header() {
        return Err(Reject::InnerNotUdp);
    }
    let udp =
        Udp::new_checked(ip.payload(), ip.payload_len()).map_err(reject(Reject::InnerUdpLength))?;
    Ok((ip.header_len(), udp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encap::Encoder;

    /// A geneve+vxlan datagram around `frame`, IPv4 or IPv6 between GENEVE
    /// and VXLAN, and where that IP header and the UDP header start.
    fn geneve_vxlan(frame: &[u8], v6: bool) -> (Vec<u8>, usize, usize) {
        let mut enc = Encoder::new(Encap::GeneveVxlan);
        if v6 {
            enc.inner_tunnel = (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            );
        }
        let mut d = Vec::new();
        enc.encode(frame, LinkType::En10Mb, &mut d);
        (
            d,
            Geneve::BASE_LEN,
            Geneve::BASE_LEN + if v6 { 40 } else { 20 },
        )
    }

    /// Writes a big-endian u16 length field.
    fn set(d: &mut [u8], at: usize, value: usize) {
        d[at..at + 2].copy_from_slice(&(value as u16).to_be_bytes());
    }

    /// The IP length field: IPv4 total length or IPv6 payload length.
    fn set_ip_len(d: &mut [u8], ip: usize, udp: usize, ip_payload: usize) {
        if d[ip] >> 4 == 4 {
            set(d, ip + 2, udp - ip + ip_payload);
        } else {
            set(d, ip + 4, udp - ip - 40 + ip_payload);
        }
    }

    fn decap(d: &[u8]) -> Result<Inner, Reject> {
        Decapsulator::new(Encap::GeneveVxlan, LinkType::En10Mb).decap(d)
    }

    #[test]
    fn a_100_byte_datagram_claiming_1400_is_rejected() {
        for v6 in [false, true] {
            let (mut d, ip, udp) = geneve_vxlan(&[0x11; 100 - 8 - 28 - 8], v6);
            d.truncate(100);
            set_ip_len(&mut d, ip, udp, 1400 - (udp - ip));
            assert_eq!(decap(&d), Err(Reject::InnerIpLength), "v6 {v6}");
            // Within the IP length, the UDP length claims too much.
            let (mut d, ip, udp) = geneve_vxlan(&[0x11; 64], v6);
            let udp_len = d.len() - udp;
            set(&mut d, udp + 4, udp_len + 1);
            assert_eq!(decap(&d), Err(Reject::InnerUdpLength), "v6 {v6}");
            set(&mut d, udp + 4, 7);
            assert_eq!(decap(&d), Err(Reject::InnerUdpLength), "v6 {v6}");
            if !v6 {
                // A total length that leaves no room for the header.
                set(&mut d, udp + 4, udp_len);
                set(&mut d, ip + 2, 10);
                assert_eq!(decap(&d), Err(Reject::InnerIpLength));
            }
        }
    }

    #[test]
    fn shorter_length_fields_leave_the_trailing_bytes_out() {
        let frame: Vec<u8> = (0..64).collect();
        for v6 in [false, true] {
            let (mut d, ip, udp) = geneve_vxlan(&frame, v6);
            d.extend([0xee; 10]);
            // Lengths as sent: the 10 bytes after them are padding.
            let inner = decap(&d).unwrap();
            assert_eq!(&d[inner.captured(d.len())], &frame[..], "v6 {v6}");
            assert_eq!(inner.wire_len, frame.len());
            // Both lengths 4 bytes shorter still: the frame ends there.
            set_ip_len(&mut d, ip, udp, 8 + 8 + 60);
            set(&mut d, udp + 4, 8 + 8 + 60);
            let inner = decap(&d).unwrap();
            assert_eq!(&d[inner.captured(d.len())], &frame[..60], "v6 {v6}");
            assert_eq!(inner.wire_len, 60);
            // Only the UDP length shorter: it ends the frame.
            set_ip_len(&mut d, ip, udp, 8 + 8 + 64);
            set(&mut d, udp + 4, 8 + 8 + 50);
            let inner = decap(&d).unwrap();
            assert_eq!(&d[inner.captured(d.len())], &frame[..50], "v6 {v6}");
            // Lengths that end right after VXLAN: nothing inside.
            set(&mut d, udp + 4, 8 + 8);
            assert_eq!(decap(&d), Err(Reject::EmptyInner), "v6 {v6}");
        }
    }

    #[test]
    fn truncated_captures_stay_deliverable() {
        let frame: Vec<u8> = (0..200).map(|i| i as u8).collect();
        for v6 in [false, true] {
            let (d, _, udp) = geneve_vxlan(&frame, v6);
            let cut = udp + 16 + 50;
            let decap = Decapsulator::new(Encap::GeneveVxlan, LinkType::En10Mb);
            let inner = decap.decap_captured(&d[..cut], d.len()).unwrap();
            assert_eq!(&d[inner.captured(cut)], &frame[..50], "v6 {v6}");
            assert_eq!(inner.wire_len, frame.len());
            // Told the capture is the whole datagram, the lengths lie.
            let whole = decap.decap(&d[..cut]);
            assert_eq!(whole, Err(Reject::InnerIpLength), "v6 {v6}");
        }
    }

    #[test]
    fn other_encapsulations_run_to_the_end_of_the_wire() {
        let frame = [0x45u8; 60];
        let mut d = Vec::new();
        Encoder::new(Encap::Vxlan).encode(&frame, LinkType::En10Mb, &mut d);
        let decap = Decapsulator::new(Encap::Vxlan, LinkType::En10Mb);
        let inner = decap.decap_captured(&d[..30], 500).unwrap();
        assert_eq!((inner.offset, inner.wire_len), (8, 492));
        assert_eq!(inner.captured(30), 8..30);
    }
}
