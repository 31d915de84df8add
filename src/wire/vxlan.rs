//! VXLAN (RFC 7348 section 5).
//!
//! ```text
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

use super::be24;
use crate::reject::Reject;

/// The I flag: the VNI is valid. RFC 7348 says it MUST be set.
const FLAG_I: u8 = 0x08;

/// A checked view of a VXLAN header and what follows it.
#[derive(Clone, Copy, Debug)]
pub struct Vxlan<'a> {
    buf: &'a [u8],
}

impl<'a> Vxlan<'a> {
    /// Header length.
    pub const LEN: usize = 8;

    /// Checks the length and the I flag.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Reject> {
        if buf.len() < Self::LEN {
            return Err(Reject::VxlanTooShort);
        }
        if buf[0] & FLAG_I == 0 {
            return Err(Reject::VxlanNoIFlag);
        }
        Ok(Vxlan { buf })
    }

    /// The 24-bit VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        be24(self.buf, 4)
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[Self::LEN..]
    }

    /// Writes a VXLAN header for `vni` (the low 24 bits) into `out`.
    pub fn emit(vni: u32, out: &mut Vec<u8>) {
        let v = vni.to_be_bytes();
        out.extend_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}
