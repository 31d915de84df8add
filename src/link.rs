//! Link types of inner packets, as Zeek (pcap DLT) and pcap files (LINKTYPE) number them.

/// The link layer of a decapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LinkType {
    /// Ethernet II frame.
    En10Mb = 1,
    /// A bare IPv4 or IPv6 packet.
    Raw = 2,
    /// PPP.
    Ppp = 3,
}

impl LinkType {
    /// The pcap DLT value Zeek's `Packet::Init` expects on Linux.
    pub fn dlt(self) -> i32 {
        match self {
            LinkType::En10Mb => 1, // DLT_EN10MB
            LinkType::Raw => 12,   // DLT_RAW as libpcap defines it on Linux
            LinkType::Ppp => 9,    // DLT_PPP
        }
    }

    /// The LINKTYPE value written into pcap and pcapng files.
    pub fn linktype(self) -> u16 {
        match self {
            LinkType::En10Mb => 1,
            LinkType::Raw => 101,
            LinkType::Ppp => 9,
        }
    }

    /// Maps a pcap/pcapng LINKTYPE (or Linux DLT) back, if it is one we carry.
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        match value {
            1 => Some(LinkType::En10Mb),
            101 | 12 | 14 => Some(LinkType::Raw),
            9 => Some(LinkType::Ppp),
            _ => None,
        }
    }

    /// The path token (`dlt=<token>`).
    pub fn token(self) -> &'static str {
        match self {
            LinkType::En10Mb => "en10mb",
            LinkType::Raw => "raw",
            LinkType::Ppp => "ppp",
        }
    }
}
