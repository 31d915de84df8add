//! A small pcapng writer: one section, one interface, nanosecond
//! timestamps. Readable by tcpdump, Wireshark and `zeek -r`.
//!
//! One interface, so one link type: libpcap (and with it tcpdump and
//! `zeek -r`) refuses a file whose interfaces differ in link type. An
//! Ethernet file takes packets of the other link types behind a
//! synthesized Ethernet header: zero MAC addresses and the EtherType of
//! what follows (IPv4 or IPv6 by the IP version, PPP 0x880B), which is how
//! Zeek's GENEVE analyzer dispatches GENEVE's protocol types.

use std::io::{self, Write};

use crate::cmsg::Timestamp;
use crate::link::LinkType;
use crate::wire::geneve::{PROTO_IPV4, PROTO_IPV6, PROTO_PPP};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_TSRESOL: u16 = 9;
const ETHERNET_LEN: usize = 14;

/// Writes packets into one pcapng stream of one link type.
pub struct PcapNgWriter<W: Write> {
    out: W,
    link: LinkType,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the section header and the one interface, of link type `link`.
    pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes()); // major
        body.extend_from_slice(&0u16.to_le_bytes()); // minor
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
        write_block(&mut out, SHB, &body)?;
        let mut body = Vec::with_capacity(20);
        body.extend_from_slice(&link.linktype().to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes()); // reserved
        body.extend_from_slice(&0u32.to_le_bytes()); // snaplen: no limit
        body.extend_from_slice(&IF_TSRESOL.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&[9, 0, 0, 0]); // 10^-9 s, padded
        body.extend_from_slice(&OPT_END.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        write_block(&mut out, IDB, &body)?;
        Ok(PcapNgWriter { out, link })
    }

    /// The file's link type.
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// The header a packet of link type `link` needs in front to be a
    /// packet of this file's link type (none if it already is one).
    fn header_for(&self, link: LinkType, data: &[u8]) -> io::Result<Option<[u8; ETHERNET_LEN]>> {
        if link == self.link {
            return Ok(None);
        }
        if self.link != LinkType::En10Mb {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {} packet cannot go into a {} file",
                    link.token(),
                    self.link.token()
                ),
            ));
        }
        let ethertype = match link {
            LinkType::Raw if data.first().is_some_and(|b| b >> 4 == 6) => PROTO_IPV6,
            LinkType::Raw => PROTO_IPV4,
            LinkType::Ppp => PROTO_PPP,
            LinkType::En10Mb => return Ok(None), // ok: equal to the file's, handled above
        };
        let mut header = [0u8; ETHERNET_LEN];
        header[12..].copy_from_slice(&ethertype.to_be_bytes());
        Ok(Some(header))
    }

    /// Writes one packet: captured bytes `data` of `wire_len` on the wire,
    /// with an optional comment (shown by Wireshark and `tshark -V`). A
    /// packet of another link type than the file's gets an Ethernet header
    /// in front if the file is Ethernet, and is refused (`InvalidInput`)
    /// otherwise.
    pub fn write(
        &mut self,
        link: LinkType,
        ts: Timestamp,
        data: &[u8],
        wire_len: usize,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let header = self.header_for(link, data)?;
        let extra = header.map_or(0, |h| h.len());
        let nanos = (ts.sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(ts.nsec));
        let captured = extra + data.len();
        let mut body = Vec::with_capacity(20 + captured + 3);
        body.extend_from_slice(&0u32.to_le_bytes()); // the one interface
        body.extend_from_slice(&((nanos >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(nanos as u32).to_le_bytes());
        body.extend_from_slice(&(captured as u32).to_le_bytes());
        body.extend_from_slice(&((extra + wire_len).max(captured) as u32).to_le_bytes());
        body.extend_from_slice(header.as_ref().map_or(&[][..], |h| &h[..]));
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
