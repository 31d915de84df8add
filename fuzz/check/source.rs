//! The checks of the `source` fuzz target (see fuzz_targets/source.rs),
//! shared with tests/fuzz_regressions.rs, which replays the inputs that
//! once failed them.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::RawFd;
use std::sync::Mutex;

use zeek_udp_source::decap::Decapsulator;
use zeek_udp_source::path;
use zeek_udp_source::wire::GeneveOptions;
use zeek_udp_source::{Config, Encap, Event, LinkType, ReceiverKind, Source, Stats};

/// recvmmsg buffer of the truncating sources.
const SMALL_BUFFER: usize = 64;
/// The GENEVE option whose value names the network (Config::geneve_key_option).
const KEY_OPTION: (u16, u8) = (0x0102, 0x03);
/// libFuzzer's inputs stay below this (its default -max_len is 4096).
const MAX_DATAGRAM: usize = 65507;

struct Rig {
    source: Source,
    sender: UdpSocket,
    encap: Encap,
    captured_max: usize,
}

fn encap_of(pick: u8) -> Encap {
    match pick & 7 {
        0 => Encap::Vxlan,
        1 => Encap::Geneve,
        2 => Encap::GeneveVxlan,
        3 => Encap::Raw,
        n => Encap::Skip(u16::from(n) * 3),
    }
}

fn rig(pick: u8) -> Rig {
    let encap = encap_of(pick);
    let receiver = if pick & 8 == 0 {
        ReceiverKind::Recvmmsg
    } else {
        ReceiverKind::IoUring
    };
    let small = pick & 16 != 0 && receiver == ReceiverKind::Recvmmsg;
    let config = Config {
        receiver,
        recv_buffer_size: 1 << 20,
        recvmmsg_batch: 4,
        recvmmsg_buffer_size: if small { SMALL_BUFFER } else { MAX_DATAGRAM },
        geneve_key_option: Some(KEY_OPTION),
        ..Config::default()
    };
    // The grammar refuses port 0: parse with a port, then ask for any.
    let mut path = path::parse(&format!("127.0.0.1:1:{encap}")).expect("a valid path");
    path.addr.set_port(0);
    let source = Source::open_path(path, &config).unwrap_or_else(|e| panic!("open: {e}"));
    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender socket");
    sender
        .connect(source.local_addr().expect("local address"))
        .expect("connect sender");
    Rig {
        source,
        sender,
        encap,
        captured_max: config.recvmmsg_buffer_size,
    }
}

/// Sleeps until `fd` is readable; the datagram is on loopback, so a long
/// wait means it was lost, which a single datagram in flight never is.
fn wait_readable(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert!(n == 1, "the datagram did not arrive within 10 s");
}

/// Counters that must move by exactly one datagram.
fn moved_by_one(before: &Stats, after: &Stats, len: usize) {
    assert_eq!(after.received, before.received + 1);
    assert_eq!(after.bytes, before.bytes + len as u64);
    assert_eq!(after.delivered + after.rejected_total(), after.received);
}

fn check(rig: &mut Rig, datagram: &[u8]) {
    let before = *rig.source.counters();
    rig.sender.send(datagram).expect("send over loopback");
    let captured = &datagram[..datagram.len().min(rig.captured_max)];
    let expected =
        Decapsulator::new(rig.encap, LinkType::En10Mb).decap_captured(captured, datagram.len());
    let event = loop {
        match rig.source.next_event().expect("receive") {
            Event::Idle => wait_readable(rig.source.wait_fd()),
            Event::Packet(p) => {
                let inner = expected.clone().expect("delivered what decap rejects");
                let mut want = Vec::new();
                if let Some(ethertype) = inner.ethertype {
                    want.extend_from_slice(&[0; 12]);
                    want.extend_from_slice(&ethertype.to_be_bytes());
                }
                let header = want.len();
                want.extend_from_slice(&captured[inner.captured(captured.len())]);
                assert_eq!(p.data, &want[..], "delivered bytes");
                assert!(p.data.len() <= p.wire_len);
                assert_eq!(p.wire_len, header + inner.wire_len);
                assert!(p.timestamp.sec > 0, "a kernel timestamp");
                assert_eq!(p.link_type, inner.link_type);
                assert_eq!(p.vxlan_vni, inner.vxlan_vni);
                assert_eq!(p.geneve_vni, inner.geneve_vni);
                assert_eq!(p.geneve_options, &captured[inner.geneve_options.clone()]);
                let sent_options = GeneveOptions::new(&captured[inner.geneve_options.clone()]);
                assert_eq!(
                    p.geneve_option_value,
                    sent_options.option_value(KEY_OPTION.0, KEY_OPTION.1),
                    "the key option's value as sent"
                );
                for o in p.geneve_options() {
                    assert!(o.data.len() % 4 == 0);
                }
                rig.source.done();
                break None;
            }
            Event::Rejected(reason) => break Some(reason),
        }
    };
    if let Some(reason) = event {
        assert_eq!(Err(reason), expected.map(|_| ()), "reject reason");
    }
    let after = *rig.source.counters();
    moved_by_one(&before, &after, datagram.len());
    assert_eq!(
        after.truncated,
        before.truncated + u64::from(captured.len() < datagram.len())
    );
    // Nothing else is queued: the next call finds the socket empty.
    assert!(matches!(rig.source.next_event(), Ok(Event::Idle)));
}

/// One source per pick, opened on first use.
static RIGS: Mutex<Option<HashMap<u8, Rig>>> = Mutex::new(None);

/// Sends one fuzz input (pick byte, then the datagram) through its source
/// and checks everything above; panics on any violation.
pub fn run(data: &[u8]) {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let datagram = &datagram[..datagram.len().min(MAX_DATAGRAM)];
    let key = pick & 31;
    let mut rigs = RIGS.lock().unwrap_or_else(|e| e.into_inner());
    let rig = rigs
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| rig(key));
    check(rig, datagram);
}
