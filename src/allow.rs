//! The source allowlist (`allow=` in the path): which senders may feed the
//! analysis. Anyone who can reach the port could otherwise inject packets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// An IPv4 or IPv6 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (one host).
    /// An IPv4-mapped prefix (`::ffff:10.0.0.0/104`) becomes the IPv4
    /// prefix it stands for (`10.0.0.0/8`): the receivers report senders
    /// on a dual-stack socket as IPv4, so the mapped form would never match.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        if len > max {
            return None;
        }
        let mapped = match addr {
            IpAddr::V6(v6) if len >= MAPPED_LEN => v6.to_ipv4_mapped(),
            _ => None,
        };
        Some(match mapped {
            Some(v4) => Cidr {
                addr: IpAddr::V4(v4),
                len: len - MAPPED_LEN,
            },
            None => Cidr { addr, len },
        })
    }

    /// Whether `ip` lies in the prefix. An IPv4-mapped IPv6 sender counts
    /// as IPv4, and an IPv4 sender lies in an IPv6 prefix that holds its
    /// mapped form: `[::/0]` holds everyone.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.to_ipv6_mapped().octets(), self.len)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    /// Whether some IPv4 sender lies in the prefix.
    pub fn holds_ipv4(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => true,
            IpAddr::V6(net) => {
                self.len <= MAPPED_LEN
                    && prefix_eq(
                        &net.octets(),
                        &Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets(),
                        self.len,
                    )
            }
        }
    }

    /// Whether some IPv6 sender (not IPv4-mapped) lies in the prefix.
    pub fn holds_ipv6(&self) -> bool {
        // Mapped prefixes of /96 or longer became IPv4 in `parse`; any
        // shorter IPv6 prefix holds unmapped addresses too.
        self.addr.is_ipv6()
    }
}

/// The length of the `::ffff:0:0/96` prefix of IPv4-mapped addresses.
const MAPPED_LEN: u8 = 96;

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) & (0xff << (8 - rest)) == 0
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.len),
            IpAddr::V6(a) => write!(f, "[{a}/{}]", self.len),
        }
    }
}

/// Parses the value of `allow=`: prefixes separated by commas; IPv6 ones in
/// brackets, since `:` separates path options (`allow=10.0.0.0/8,[fd00::/8]`).
pub fn parse_list(value: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let bare = item
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(item);
        let cidr = Cidr::parse(bare).ok_or_else(|| {
            format!(
                "'{}' is not an address or prefix: expected e.g. allow=10.0.0.0/8,[fd00::/8]",
                crate::path::shown(item)
            )
        })?;
        out.push(cidr);
    }
    Ok(out)
}
