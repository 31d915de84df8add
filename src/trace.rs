//! Reading pcap and pcapng traces, and finding the tunnel datagram (the
//! outer UDP payload) in a captured frame.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcapng::{Block, PcapNgReader};

use crate::wire::{Ip, Udp, ethernet};

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracePacket {
    /// Capture time since the epoch.
    pub timestamp: Duration,
    /// LINKTYPE of `data` (1 Ethernet, 101 raw IP, ...).
    pub linktype: u32,
    /// Length on the wire.
    pub orig_len: u32,
    /// Captured bytes.
    pub data: Vec<u8>,
}

/// A trace that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Not a pcap or pcapng file, or a corrupt one.
    #[error("{path} is not a readable pcap or pcapng file: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// No captured frame is larger (pcap's own limit for most link types).
const MAX_RECORD: u32 = 256 * 1024;

/// Reads every packet of a pcap or pcapng file (told apart by magic number).
pub fn read(path: &Path) -> Result<Vec<TracePacket>, TraceError> {
    let name = path.display().to_string();
    let io = |source| TraceError::Io {
        path: name.clone(),
        source,
    };
    let format = |e: pcap_file::PcapError| TraceError::Format {
        path: name.clone(),
        reason: e.to_string(),
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| TraceError::Format {
            path: name.clone(),
            reason: "shorter than any pcap header".into(),
        })?;
    let file = BufReader::new(File::open(path).map_err(io)?);
    if magic == PCAPNG_MAGIC {
        read_pcapng(file).map_err(format)
    } else {
        read_pcap(&name, file)
    }
}

/// Classic pcap, parsed by hand: real captures break rules (records longer
/// than the snaplen, say) that stricter parsers refuse.
fn read_pcap(path: &str, mut file: impl Read) -> Result<Vec<TracePacket>, TraceError> {
    let format = |reason: &str| TraceError::Format {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let mut header = [0u8; 24];
    file.read_exact(&mut header)
        .map_err(|_| format("shorter than a pcap file header"))?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => return Err(format("no pcap or pcapng magic number at its start")),
    };
    let word = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = word(&header[20..24]) & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut record = [0u8; 16];
    loop {
        match file.read_exact(&mut record) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format(&e.to_string())),
        }
        let (sec, frac, incl, orig) = (
            word(&record[0..4]),
            word(&record[4..8]),
            word(&record[8..12]),
            word(&record[12..16]),
        );
        if incl > MAX_RECORD {
            return Err(format(&format!(
                "a record claims {incl} bytes; the file is corrupt"
            )));
        }
        let mut data = vec![0u8; incl as usize];
        file.read_exact(&mut data)
            .map_err(|_| format("the last record is cut short"))?;
        let sub = if nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        out.push(TracePacket {
            timestamp: Duration::new(u64::from(sec), sub.min(999_999_999)),
            linktype,
            orig_len: orig,
            data,
        });
    }
    Ok(out)
}

fn read_pcapng(file: impl Read) -> Result<Vec<TracePacket>, pcap_file::PcapError> {
    let mut reader = PcapNgReader::new(file)?;
    let mut out = Vec::new();
    // Link types of the current section's interfaces, by interface id.
    let mut links: Vec<u32> = Vec::new();
    while let Some(block) = reader.next_block() {
        let packet = match block? {
            Block::SectionHeader(_) => {
                links.clear();
                continue;
            }
            Block::InterfaceDescription(i) => {
                links.push(u32::from(i.linktype));
                continue;
            }
            Block::EnhancedPacket(p) => TracePacket {
                timestamp: p.timestamp,
                linktype: links.get(p.interface_id as usize).copied().unwrap_or(1),
                orig_len: p.original_len,
                data: p.data.into_owned(),
            },
            Block::SimplePacket(p) => TracePacket {
                timestamp: Duration::ZERO,
                linktype: links.first().copied().unwrap_or(1),
                orig_len: p.original_len,
                data: p.data.into_owned(),
            },
            _ => continue,
        };
        out.push(packet);
    }
    Ok(out)
}

impl TracePacket {
    /// The outer UDP datagram of the frame (its payload is the tunnel
    /// datagram): Ethernet (with VLAN tags), raw IP or Linux cooked capture,
    /// then IPv4 or IPv6, then UDP, each cut at its length field and checked
    /// against the frame's length on the wire. `None` when the frame holds
    /// no UDP, or only a later fragment of it.
    pub fn outer_udp(&self) -> Option<Udp<'_>> {
        outer_udp(self.linktype, &self.data, self.orig_len as usize)
    }
}

/// The outer UDP payload of a frame captured whole; see
/// [`TracePacket::outer_udp`].
pub fn udp_payload(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    outer_udp(linktype, frame, frame.len()).map(|udp| udp.payload())
}

fn outer_udp(linktype: u32, frame: &[u8], wire_len: usize) -> Option<Udp<'_>> {
    let ip = match linktype {
        1 => ethernet::ip_payload(frame)?,
        101 | 12 | 14 => frame,
        113 => frame.get(16..)?, // LINKTYPE_LINUX_SLL
        _ => return None,
    };
    let link_len = frame.len() - ip.len();
    let ip = Ip::new_checked(ip, wire_len.max(frame.len()) - link_len)
        .ok()
        .filter(Ip::has_udp_header)?;
    Udp::new_checked(ip.payload(), ip.payload_len()).ok()
}
