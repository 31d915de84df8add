//! GENEVE (RFC 8926 section 3.4).
//!
//! ```text
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//! ```

use super::{be16, be24};
use crate::reject::Reject;

/// Protocol type: an Ethernet frame follows (Transparent Ethernet Bridging).
pub const PROTO_ETHERNET: u16 = 0x6558;
/// Protocol type: an IPv4 packet follows.
pub const PROTO_IPV4: u16 = 0x0800;
/// Protocol type: an IPv6 packet follows.
pub const PROTO_IPV6: u16 = 0x86DD;
/// Protocol type: a PPP frame follows.
pub const PROTO_PPP: u16 = 0x880B;

/// A checked view of a GENEVE header, its options and what follows.
#[derive(Clone, Copy, Debug)]
pub struct Geneve<'a> {
    buf: &'a [u8],
}

impl<'a> Geneve<'a> {
    /// Length of the fixed header, without options.
    pub const BASE_LEN: usize = 8;

    /// Checks the length, the version and that the options fit.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Reject> {
        if buf.len() < Self::BASE_LEN {
            return Err(Reject::GeneveTooShort);
        }
        if buf[0] >> 6 != 0 {
            return Err(Reject::GeneveVersion);
        }
        let view = Geneve { buf };
        if view.header_len() > buf.len() {
            return Err(Reject::GeneveOptionsTooLong);
        }
        Ok(view)
    }

    /// Total header length: base header plus options.
    pub fn header_len(&self) -> usize {
        Self::BASE_LEN + usize::from(self.buf[0] & 0x3f) * 4
    }

    /// The O bit: a control (OAM) packet.
    pub fn is_oam(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// The C bit: critical options are present.
    pub fn has_critical(&self) -> bool {
        self.buf[1] & 0x40 != 0
    }

    /// The EtherType of the payload.
    pub fn protocol(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// The 24-bit virtual network identifier.
    pub fn vni(&self) -> u32 {
        be24(self.buf, 4)
    }

    /// The raw options area.
    pub fn options_bytes(&self) -> &'a [u8] {
        &self.buf[Self::BASE_LEN..self.header_len()]
    }

    /// The options, one by one.
    pub fn options(&self) -> GeneveOptions<'a> {
        GeneveOptions::new(self.options_bytes())
    }

    /// What follows the header and options.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len()..]
    }

    /// Writes a GENEVE header with `options` (already TLV-encoded, a multiple
    /// of 4 bytes, at most 252) into `out`.
    pub fn emit(vni: u32, protocol: u16, options: &[u8], out: &mut Vec<u8>) {
        let words = (options.len() / 4).min(63) as u8;
        let p = protocol.to_be_bytes();
        let v = vni.to_be_bytes();
        out.extend_from_slice(&[words, 0, p[0], p[1], v[1], v[2], v[3], 0]);
        out.extend_from_slice(&options[..usize::from(words) * 4]);
    }
}

/// One GENEVE option TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveOption<'a> {
    /// Option class (namespace of the type).
    pub class: u16,
    /// Option type; the high bit marks a critical option.
    pub kind: u8,
    /// Option data, a multiple of 4 bytes.
    pub data: &'a [u8],
}

impl GeneveOption<'_> {
    /// Encodes one option TLV; `data` is padded with zeros to a multiple of 4.
    pub fn emit(class: u16, kind: u8, data: &[u8], out: &mut Vec<u8>) {
        let words = data.len().div_ceil(4).min(31);
        let c = class.to_be_bytes();
        out.extend_from_slice(&[c[0], c[1], kind, words as u8]);
        let take = data.len().min(words * 4);
        out.extend_from_slice(&data[..take]);
        out.resize(out.len() + words * 4 - take, 0);
    }
}

/// Parses an option id `<class>:<type>` (decimal or 0x-hex), as in
/// `geneve_key_option` and `udpsrc --geneve-option`.
pub fn parse_option_id(spec: &str) -> Option<(u16, u8)> {
    let num = |s: &str| match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse::<u32>().ok(),
    };
    let (class, kind) = spec.split_once(':')?;
    Some((
        u16::try_from(num(class)?).ok()?,
        u8::try_from(num(kind)?).ok()?,
    ))
}

/// Iterator over option TLVs. It stops at the first option whose length runs
/// past the options area; [`GeneveOptions::malformed`] tells whether it did.
#[derive(Clone, Copy, Debug)]
pub struct GeneveOptions<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> GeneveOptions<'a> {
    /// Iterates the options in a raw options area.
    pub fn new(area: &'a [u8]) -> Self {
        GeneveOptions {
            rest: area,
            malformed: false,
        }
    }

    /// True once iteration met an option that does not fit.
    pub fn malformed(&self) -> bool {
        self.malformed
    }

    /// The first option with this class and type.
    pub fn find_option(mut self, class: u16, kind: u8) -> Option<GeneveOption<'a>> {
        self.find(|o| o.class == class && o.kind == kind)
    }

    /// The first up to 8 data bytes of that option, big-endian, as a number:
    /// a network's identity where a sender puts it in an option (GCP NSI).
    pub fn option_value(self, class: u16, kind: u8) -> Option<u64> {
        let opt = self.find_option(class, kind)?;
        Some(
            opt.data
                .iter()
                .take(8)
                .fold(0u64, |v, b| v << 8 | u64::from(*b)),
        )
    }
}

impl<'a> Iterator for GeneveOptions<'a> {
    type Item = GeneveOption<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            self.malformed |= !self.rest.is_empty();
            self.rest = &[];
            return None;
        }
        let len = 4 + usize::from(self.rest[3] & 0x1f) * 4;
        if len > self.rest.len() {
            self.malformed = true;
            self.rest = &[];
            return None;
        }
        let opt = GeneveOption {
            class: be16(self.rest, 0),
            kind: self.rest[2],
            data: &self.rest[4..len],
        };
        self.rest = &self.rest[len..];
        Some(opt)
    }
}
