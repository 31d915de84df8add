//! A small pcapng writer: one section, one interface per link type (added
//! when first used), nanosecond timestamps. Readable by tcpdump, Wireshark
//! and `zeek -r`.

use std::io::{self, Write};

use crate::cmsg::Timestamp;
use crate::link::LinkType;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_TSRESOL: u16 = 9;

/// Writes packets of any of our link types into one pcapng stream.
pub struct PcapNgWriter<W: Write> {
    out: W,
    /// Interface id per link type, in order of first use.
    interfaces: Vec<LinkType>,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the section header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes()); // major
        body.extend_from_slice(&0u16.to_le_bytes()); // minor
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
        write_block(&mut out, SHB, &body)?;
        Ok(PcapNgWriter {
            out,
            interfaces: Vec::new(),
        })
    }

    fn interface(&mut self, link: LinkType) -> io::Result<u32> {
        if let Some(i) = self.interfaces.iter().position(|l| *l == link) {
            return Ok(i as u32);
        }
        let mut body = Vec::with_capacity(20);
        body.extend_from_slice(&link.linktype().to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes()); // reserved
        body.extend_from_slice(&0u32.to_le_bytes()); // snaplen: no limit
        body.extend_from_slice(&IF_TSRESOL.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&[9, 0, 0, 0]); // 10^-9 s, padded
        body.extend_from_slice(&OPT_END.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        write_block(&mut self.out, IDB, &body)?;
        self.interfaces.push(link);
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// Writes one packet: captured bytes `data` of `wire_len` on the wire,
    /// with an optional comment (shown by Wireshark and `tshark -V`).
    pub fn write(
        &mut self,
        link: LinkType,
        ts: Timestamp,
        data: &[u8],
        wire_len: usize,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let id = self.interface(link)?;
        let nanos = (ts.sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(ts.nsec));
        let mut body = Vec::with_capacity(20 + data.len() + 3);
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&((nanos >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(nanos as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(wire_len.max(data.len()) as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().next_multiple_of(4), 0);
        if let Some(text) = comment.filter(|c| !c.is_empty() && c.len() < 0xffff) {
            body.extend_from_slice(&OPT_COMMENT.to_le_bytes());
            body.extend_from_slice(&(text.len() as u16).to_le_bytes());
            body.extend_from_slice(text.as_bytes());
            body.resize(body.len().next_multiple_of(4), 0);
            body.extend_from_slice(&OPT_END.to_le_bytes());
            body.extend_from_slice(&0u16.to_le_bytes());
        }
        write_block(&mut self.out, EPB, &body)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}
