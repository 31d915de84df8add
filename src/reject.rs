//! Why a datagram was not delivered. Each reason has a stable name that is
//! also the Zeek weird raised for it, so the names must never change.

use std::ffi::CStr;

/// A reason to reject a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reject {
    /// The datagram had no payload at all.
    EmptyDatagram = 0,
    /// Shorter than the 8-byte VXLAN header.
    VxlanTooShort,
    /// VXLAN header without the I (valid VNI) flag.
    VxlanNoIFlag,
    /// Shorter than the 8-byte GENEVE base header.
    GeneveTooShort,
    /// GENEVE version other than 0.
    GeneveVersion,
    /// GENEVE option length runs past the end of the datagram.
    GeneveOptionsTooLong,
    /// geneve+vxlan: the IP header after GENEVE is truncated or malformed.
    InnerIpBad,
    /// geneve+vxlan: the packet after GENEVE is not UDP (or a later fragment).
    InnerNotUdp,
    /// skip=N with N at or beyond the datagram's length.
    SkipBeyondDatagram,
    /// A well-formed tunnel header with nothing inside.
    EmptyInner,
    /// The sender is not on the path's `allow=` list.
    SourceNotAllowed,
    /// Still queued (in the socket or in user space) when the source was
    /// shut down: taken off and counted, never analysed.
    UnreadAtShutdown,
}

impl Reject {
    /// Number of reasons; the length of per-reason counter arrays.
    pub const COUNT: usize = 12;

    /// Every reason, in counter order.
    pub const ALL: [Reject; Reject::COUNT] = [
        Reject::EmptyDatagram,
        Reject::VxlanTooShort,
        Reject::VxlanNoIFlag,
        Reject::GeneveTooShort,
        Reject::GeneveVersion,
        Reject::GeneveOptionsTooLong,
        Reject::InnerIpBad,
        Reject::InnerNotUdp,
        Reject::SkipBeyondDatagram,
        Reject::EmptyInner,
        Reject::SourceNotAllowed,
        Reject::UnreadAtShutdown,
    ];

    /// Stable name, used for the Zeek weird, statistics and JSON keys.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or("")
    }

    /// [`Reject::name`] NUL-terminated, for the C ABI.
    pub fn c_name(self) -> &'static CStr {
        match self {
            Reject::EmptyDatagram => c"udp_empty_datagram",
            Reject::VxlanTooShort => c"vxlan_too_short",
            Reject::VxlanNoIFlag => c"vxlan_unset_I_flag",
            Reject::GeneveTooShort => c"geneve_too_short",
            Reject::GeneveVersion => c"geneve_invalid_version",
            Reject::GeneveOptionsTooLong => c"geneve_options_too_long",
            Reject::InnerIpBad => c"geneve_vxlan_bad_inner_ip",
            Reject::InnerNotUdp => c"geneve_vxlan_inner_not_udp",
            Reject::SkipBeyondDatagram => c"skip_beyond_datagram",
            Reject::EmptyInner => c"tunnel_without_inner_packet",
            Reject::SourceNotAllowed => c"udp_source_not_allowed",
            Reject::UnreadAtShutdown => c"unread_at_shutdown",
        }
    }

    /// One line for people.
    pub fn describe(self) -> &'static str {
        match self {
            Reject::EmptyDatagram => "zero-length UDP datagram",
            Reject::VxlanTooShort => "datagram shorter than the 8-byte VXLAN header",
            Reject::VxlanNoIFlag => "VXLAN header without the I flag (no valid VNI)",
            Reject::GeneveTooShort => "datagram shorter than the 8-byte GENEVE header",
            Reject::GeneveVersion => "GENEVE version is not 0",
            Reject::GeneveOptionsTooLong => "GENEVE options run past the end of the datagram",
            Reject::InnerIpBad => "IP header after GENEVE is truncated or malformed",
            Reject::InnerNotUdp => "packet after GENEVE is not UDP (or not a first fragment)",
            Reject::SkipBeyondDatagram => "skip=N reaches past the end of the datagram",
            Reject::EmptyInner => "tunnel header with no packet inside",
            Reject::SourceNotAllowed => "sender not on the path's allow= list",
            Reject::UnreadAtShutdown => "still queued when the source shut down",
        }
    }

    /// Index into per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}
