//! A Zeek packet source for mirrored traffic that arrives in UDP tunnels
//! (VXLAN, GENEVE, GENEVE+VXLAN): bind a UDP port, strip the tunnel, hand the
//! inner packets to Zeek.
//!
//! The engine is plain Rust: [`path`] parses `udp::<addr>:<port>[:options]`,
//! [`socket`] sets up the listening socket, [`recv`] holds the recvmmsg and
//! io_uring receivers, [`decap`] and [`wire`] strip the tunnel, [`stats`]
//! accounts for every datagram, and [`source::Source`] ties them together.

pub mod allow;
pub mod balance;
pub mod capi;
pub mod cmsg;
pub mod config;
pub mod decap;
mod drain;
pub mod encap;
pub mod error;
pub mod flow;
pub mod gro;
pub mod link;
pub mod pace;
pub mod packet;
pub mod path;
pub mod pcapng;
pub mod recv;
pub mod reject;
pub mod socket;
pub mod source;
pub mod stats;
pub mod trace;
pub mod wire;

pub use cmsg::Timestamp;
pub use error::Error;
pub use link::LinkType;
pub use path::{Encap, SourcePath};
pub use recv::ReceiverKind;
pub use reject::Reject;
pub use source::{Config, Event, Packet, Source, Wait};
pub use stats::Stats;
