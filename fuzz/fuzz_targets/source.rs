//! The whole source path on hostile datagrams: each input is sent as one
//! UDP datagram over loopback to a real [`Source`] and taken off it with
//! `next_event`, so the receiver, the control messages, decapsulation, the
//! synthesized Ethernet header and the counters all run as in Zeek.
//!
//! The first byte picks the source: bits 0-2 the encapsulation (also the
//! skip length), bit 3 the receiver, bit 4 a 64-byte recvmmsg buffer (so
//! the datagram arrives truncated). The rest is the datagram.
//!
//! Checked: no panic; exactly one event per datagram, and the counters
//! move by exactly one datagram; a delivered packet is the datagram's bytes
//! after the tunnel header, as `Decapsulator::decap` locates it on the
//! captured bytes (with the 14-byte Ethernet header GENEVE's EtherTypes
//! need), never longer than its wire length, with a kernel timestamp, and
//! with the GENEVE options and key option value that were sent; a
//! rejection gives the reason `decap` gives.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../check/source.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::run(data));
