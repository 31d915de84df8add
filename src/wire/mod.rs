//! Zero-copy views over tunnel headers, in the style of smoltcp's `wire`:
//! each view is checked once when made, then its accessors cannot fail.

pub mod ethernet;
pub mod geneve;
pub mod ip;
pub mod vxlan;

pub use geneve::{Geneve, GeneveOption, GeneveOptions};
pub use vxlan::Vxlan;

/// Reads a big-endian 24-bit value (a VNI) at `at`; the caller has checked the length.
fn be24(b: &[u8], at: usize) -> u32 {
    u32::from(b[at]) << 16 | u32::from(b[at + 1]) << 8 | u32::from(b[at + 2])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
