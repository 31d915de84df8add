//! Just enough IPv4/IPv6 and UDP to step over the IP/UDP headers that
//! `geneve+vxlan` puts between GENEVE and VXLAN.

use crate::reject::Reject;

const UDP: u8 = 17;
const UDP_HEADER_LEN: usize = 8;
/// IPv6 extension headers that can be stepped over to reach UDP.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;
/// A bound on extension headers, so hostile chains cost little.
const MAX_EXT_HEADERS: usize = 8;

/// Returns the UDP payload of the IPv4 or IPv6 packet in `buf`.
pub fn udp_payload(buf: &[u8]) -> Result<&[u8], Reject> {
    let Some(first) = buf.first() else {
        return Err(Reject::InnerIpBad);
    };
    let after_ip = match first >> 4 {
        4 => ipv4_udp(buf)?,
        6 => ipv6_udp(buf)?,
        _ => return Err(Reject::InnerIpBad),
    };
    if after_ip.len() < UDP_HEADER_LEN {
        return Err(Reject::InnerIpBad);
    }
    Ok(&after_ip[UDP_HEADER_LEN..])
}

/// The bytes after the IPv4 header, which must carry the first fragment of UDP.
fn ipv4_udp(buf: &[u8]) -> Result<&[u8], Reject> {
    if buf.len() < 20 {
        return Err(Reject::InnerIpBad);
    }
    let header_len = usize::from(buf[0] & 0x0f) * 4;
    if header_len < 20 || header_len > buf.len() {
        return Err(Reject::InnerIpBad);
    }
    let fragment_offset = u16::from_be_bytes([buf[6], buf[7]]) & 0x1fff;
    if buf[9] != UDP || fragment_offset != 0 {
        return Err(Reject::InnerNotUdp);
    }
    Ok(&buf[header_len..])
}

/// The bytes after the IPv6 header and any extension headers before UDP.
fn ipv6_udp(buf: &[u8]) -> Result<&[u8], Reject> {
    if buf.len() < 40 {
        return Err(Reject::InnerIpBad);
    }
    let mut next = buf[6];
    let mut rest = &buf[40..];
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            UDP => return Ok(rest),
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                if rest.len() < 8 {
                    return Err(Reject::InnerIpBad);
                }
                let len = (usize::from(rest[1]) + 1) * 8;
                if len > rest.len() {
                    return Err(Reject::InnerIpBad);
                }
                next = rest[0];
                rest = &rest[len..];
            }
            FRAGMENT => {
                if rest.len() < 8 {
                    return Err(Reject::InnerIpBad);
                }
                let offset = u16::from_be_bytes([rest[2], rest[3]]) >> 3;
                if offset != 0 {
                    return Err(Reject::InnerNotUdp);
                }
                next = rest[0];
                rest = &rest[8..];
            }
            _ => return Err(Reject::InnerNotUdp),
        }
    }
    Err(Reject::InnerNotUdp)
}
