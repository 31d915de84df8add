//! `udpsrc replay` into `udpsrc listen`, through the real binary.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pcap_file::DataLink;
use pcap_file::pcapng::{Block, PcapNgReader, blocks::enhanced_packet::EnhancedPacketOption};

const BIN: &str = env!("CARGO_BIN_EXE_udpsrc");

/// Two TCP flows and one UDP flow, both directions, interleaved.
fn ethernet_frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..30u32 {
        let (a, b, sport, dport) = match i % 3 {
            0 => ([10, 0, 0, 1], [10, 0, 0, 2], 40001, 80),
            1 => ([10, 0, 0, 7], [192, 0, 2, 9], 40002, 443),
            _ => ([10, 0, 0, 3], [10, 0, 0, 4], 5353, 53),
        };
        let reverse = (i / 3) % 2 == 1;
        let (src, dst, sp, dp) = if reverse {
            (b, a, dport, sport)
        } else {
            (a, b, sport, dport)
        };
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64);
        let payload = vec![i as u8; 20 + i as usize * 7];
        let mut f = Vec::new();
        if i % 3 == 2 {
            eth.udp(sp, dp).write(&mut f, &payload).unwrap();
        } else {
            eth.tcp(sp, dp, i, 1000).write(&mut f, &payload).unwrap();
        }
        out.push(f);
    }
    out
}

/// Starts `udpsrc listen` and waits until its socket is bound.
fn listen(port: u16, path: &str, out: &Path, count: usize, extra: &[&str]) -> Child {
    let count = count.to_string();
    let mut args = vec!["-c", &count, "--duration", "20", "--quiet", "--json"];
    args.extend_from_slice(extra);
    spawn_listen(port, path, out, &args)
}

/// Starts `udpsrc listen <path> -w <out> <args>` and waits until its
/// socket holds `port`.
fn spawn_listen(port: u16, path: &str, out: &Path, args: &[&str]) -> Child {
    let child = Command::new(BIN)
        .args(["listen", path, "-w"])
        .arg(out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // A plain bind fails once the listener holds the port.
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN).arg("replay").args(args).output().unwrap()
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "listen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// (link type, data, comment) of every packet in a pcapng file.
fn read_pcapng(path: &Path) -> Vec<(u32, Vec<u8>, String)> {
    let mut r = PcapNgReader::new(File::open(path).unwrap()).unwrap();
    let mut links = Vec::new();
    let mut out = Vec::new();
    while let Some(block) = r.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(i) => links.push(u32::from(i.linktype)),
            Block::EnhancedPacket(p) => {
                let comment = p
                    .options
                    .iter()
                    .find_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default();
                out.push((links[p.interface_id as usize], p.data.to_vec(), comment));
            }
            _ => {}
        }
    }
    out
}

/// Listens on a fresh port with `options` (writing `out`, stopping after
/// `count` packets), replays `trace` into it with `replay_args`, checks both
/// succeeded, and returns replay's stdout and what listen wrote.
fn through_listen(
    trace: &Path,
    options: &str,
    out: &Path,
    count: usize,
    listen_args: &[&str],
    replay_args: &[&str],
) -> (String, Vec<(u32, Vec<u8>, String)>) {
    let port = common::unique_port();
    let sep = if options.is_empty() { "" } else { ":" };
    let child = listen(
        port,
        &format!("udp::127.0.0.1:{port}{sep}{options}"),
        out,
        count,
        listen_args,
    );
    let to = format!("127.0.0.1:{port}");
    let mut args = vec![trace.to_str().unwrap(), "--to", &to, "-q"];
    args.extend_from_slice(replay_args);
    let r = replay(&args);
    assert!(
        r.status.success(),
        "replay {replay_args:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    finish(child);
    (
        String::from_utf8_lossy(&r.stdout).into_owned(),
        read_pcapng(out),
    )
}

#[test]
fn replay_into_listen_round_trips_every_encapsulation() {
    let dir = common::tmpdir("roundtrip");
    let frames = ethernet_frames();
    let trace = dir.join("eth.pcap");
    common::write_pcap(&trace, DataLink::ETHERNET, &frames);
    for (encap, vni_args, want_comment) in [
        ("vxlan", vec!["--vni", "77"], "vxlan_vni=77"),
        (
            "geneve",
            vec!["--vni", "4711", "--geneve-option", "0x0103:0x80:0a0b0c0d"],
            "geneve_vni=4711 geneve_options=1",
        ),
        (
            "geneve+vxlan",
            vec!["--vni", "42", "--geneve-vni", "9"],
            "vxlan_vni=42 geneve_vni=9 geneve_options=0",
        ),
        ("raw", vec![], ""),
        ("skip=8", vec![], ""),
    ] {
        for receiver in ["recvmmsg", "io_uring"] {
            let out = dir.join(format!("{}-{receiver}.pcapng", encap.replace('+', "_")));
            let mut args = vec!["--encap", encap];
            args.extend(vni_args.iter().copied());
            let (stdout, got) = through_listen(
                &trace,
                encap,
                &out,
                frames.len(),
                &["--receiver", receiver],
                &args,
            );
            assert!(
                stdout.starts_with(&format!("sent {} packets", frames.len())),
                "{stdout}"
            );
            assert_eq!(got.len(), frames.len(), "{encap} {receiver}: packet count");
            for ((link, data, comment), want) in got.iter().zip(&frames) {
                assert_eq!(*link, 1, "{encap}: Ethernet interface");
                assert_eq!(data, want, "{encap} {receiver}: bytes");
                assert!(comment.starts_with("peer=127.0.0.1:"), "{comment}");
                assert!(
                    comment.ends_with(want_comment),
                    "{encap}: comment '{comment}'"
                );
            }
        }
    }
}

#[test]
fn raw_ip_trace_in_geneve_comes_out_as_raw_ip() {
    let dir = common::tmpdir("rawip");
    let packets: Vec<Vec<u8>> = (0..10).map(|i| common::ipv6_packet(i, 100)).collect();
    let trace = dir.join("raw.pcap");
    common::write_pcap(&trace, DataLink::RAW, &packets);
    let out = dir.join("raw.pcapng");
    let (_, got) = through_listen(
        &trace,
        "geneve",
        &out,
        packets.len(),
        &[],
        &["--encap", "geneve"],
    );
    assert_eq!(got.len(), packets.len());
    for ((link, data, _), want) in got.iter().zip(&packets) {
        assert_eq!(*link, 101, "LINKTYPE_RAW from the GENEVE protocol type");
        assert_eq!(data, want);
    }
}

#[test]
fn passthrough_of_captured_tunnels_gives_the_inner_frames() {
    let dir_traces = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces");
    if !dir_traces.is_dir() {
        common::skipped(module_path!(), "../shared/traces not found");
        return;
    }
    let dir = common::tmpdir("passthrough");
    for (file, encap, header) in [
        ("vxlan-encapsulated-http.pcap", "vxlan", 8usize),
        ("vxlan.pcap", "vxlan", 8),
        ("geneve-many-options.pcap", "geneve", 8 + 76),
    ] {
        let trace = dir_traces.join(file);
        let sent = common::outer_udp_payloads(&trace);
        let out = dir.join(format!("{file}.pcapng"));
        let (_, got) = through_listen(&trace, encap, &out, sent.len(), &[], &["--passthrough"]);
        assert_eq!(got.len(), sent.len(), "{file}");
        for ((_, data, _), d) in got.iter().zip(&sent) {
            assert_eq!(&data[..], &d[header..], "{file}");
        }
    }
}

#[test]
fn both_directions_of_a_flow_share_one_outer_source_port() {
    let dir = common::tmpdir("symmetric");
    let frames = ethernet_frames();
    let trace = dir.join("eth.pcap");
    common::write_pcap(&trace, DataLink::ETHERNET, &frames);
    let out = dir.join("sym.pcapng");
    let (_, got) = through_listen(&trace, "vxlan", &out, frames.len(), &[], &[]);
    // Group by direction-free 5-tuple, found with etherparse.
    let mut ports: HashMap<Vec<u8>, HashSet<String>> = HashMap::new();
    for (_, data, comment) in got {
        let s = etherparse::SlicedPacket::from_ethernet(&data).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
            panic!("ipv4")
        };
        let (sp, dp) = match s.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
            etherparse::TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
            _ => panic!("tcp or udp"),
        };
        let mut ends = [
            (ip.header().source().to_vec(), sp),
            (ip.header().destination().to_vec(), dp),
        ];
        ends.sort();
        let key = [
            ends[0].0.clone(),
            ends[0].1.to_be_bytes().to_vec(),
            ends[1].0.clone(),
            ends[1].1.to_be_bytes().to_vec(),
        ]
        .concat();
        let peer = comment.split_whitespace().next().unwrap().to_string();
        ports.entry(key).or_default().insert(peer);
    }
    assert_eq!(ports.len(), 3, "three flows");
    for (flow, peers) in &ports {
        assert_eq!(peers.len(), 1, "flow {flow:?} came from {peers:?}");
    }
    let fixed = common::unique_port();
    let out2 = dir.join("fixed.pcapng");
    let fixed_arg = fixed.to_string();
    let (_, got) = through_listen(
        &trace,
        "vxlan",
        &out2,
        frames.len(),
        &[],
        &["--sport-fixed", &fixed_arg],
    );
    let peers: HashSet<String> = got
        .into_iter()
        .map(|(_, _, c)| c.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(peers, HashSet::from([format!("peer=127.0.0.1:{fixed}")]));
}

#[test]
fn bad_input_gives_one_clear_line_and_exit_2() {
    let dir = common::tmpdir("bad");
    let good = dir.join("good.pcap");
    common::write_pcap(&good, DataLink::ETHERNET, &ethernet_frames());
    let wifi = dir.join("wifi.pcap");
    common::write_pcap(&wifi, DataLink::IEEE802_11, &[vec![0u8; 40]]);
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a capture\n").unwrap();
    let g = good.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["replay", "/nonexistent.pcap", "--to", "127.0.0.1:4789"],
            "cannot read /nonexistent.pcap",
        ),
        (
            vec!["replay", text.to_str().unwrap(), "--to", "127.0.0.1:4789"],
            "is not a readable pcap or pcapng file",
        ),
        (
            vec!["replay", g, "--to", "127.0.0.1:4789", "--encap", "gre"],
            "unknown encapsulation 'gre'",
        ),
        (
            vec!["replay", g, "--to", "localhost"],
            "bad target address 'localhost'",
        ),
        (
            vec!["replay", wifi.to_str().unwrap(), "--to", "127.0.0.1:4789"],
            "has link type 105, which udpsrc cannot tunnel",
        ),
        (
            vec![
                "replay",
                g,
                "--to",
                "127.0.0.1:4789",
                "--geneve-option",
                "zz",
            ],
            "bad GENEVE option 'zz'",
        ),
        (
            vec!["listen", "udp::127.0.0.1:4789:bogus"],
            "unknown option 'bogus'",
        ),
        (
            vec!["listen", "127.0.0.1:4789", "--receiver", "epoll"],
            "unknown receiver 'epoll'",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.starts_with("udpsrc: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn listen_output_is_readable_by_tcpdump() {
    if Command::new("tcpdump").arg("--version").output().is_err() {
        common::skipped(module_path!(), "tcpdump not installed");
        return;
    }
    let dir = common::tmpdir("tcpdump");
    let frames = ethernet_frames();
    let trace = dir.join("eth.pcap");
    common::write_pcap(&trace, DataLink::ETHERNET, &frames);
    let out = dir.join("t.pcapng");
    through_listen(&trace, "", &out, frames.len(), &[], &[]);
    let td = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        td.status.success(),
        "{}",
        String::from_utf8_lossy(&td.stderr)
    );
    let text = String::from_utf8_lossy(&td.stdout);
    assert_eq!(text.lines().count(), frames.len());
    assert!(text.contains("10.0.0.1.40001 > 10.0.0.2.80"), "{text}");
}

#[test]
fn sigint_stops_listen_with_the_file_complete() {
    let dir = common::tmpdir("sigint");
    let frames = ethernet_frames();
    let trace = dir.join("eth.pcap");
    common::write_pcap(&trace, DataLink::ETHERNET, &frames);
    let port = common::unique_port();
    let out = dir.join("int.pcapng");
    // No -c: only the signal stops it.
    let child = spawn_listen(
        port,
        &format!("127.0.0.1:{port}"),
        &out,
        &["--quiet", "--json"],
    );
    assert!(
        replay(&[
            trace.to_str().unwrap(),
            "--to",
            &format!("127.0.0.1:{port}"),
            "-q"
        ])
        .status
        .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "exit after SIGINT: {:?}",
        done.status
    );
    let stats: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(stats["delivered"], frames.len());
    assert_eq!(
        read_pcapng(&out).len(),
        frames.len(),
        "every packet in the file"
    );
}
