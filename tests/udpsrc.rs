//! `udpsrc replay` into `udpsrc listen`, through the real binary.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
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
fn listen(path: &str, out: &Path, count: usize, extra: &[&str]) -> Listening {
    let count = count.to_string();
    let mut args = vec!["-c", &count, "--duration", "20", "--quiet", "--json"];
    args.extend_from_slice(extra);
    spawn_listen(path, out, &args)
}

/// A running `udpsrc listen`, its stderr read line by line.
struct Listening {
    child: Child,
    /// Each stderr line after the readiness line, as it comes.
    lines: mpsc::Receiver<String>,
    /// All of stderr, once the process has closed it.
    stderr: std::thread::JoinHandle<String>,
    /// The readiness line.
    ready: String,
}

impl Listening {
    /// Waits for a stderr line that holds `want` (the once-a-second
    /// statistics, for example); panics if stderr ends or 20 s pass first.
    fn wait_for_line(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with '{want}': {e}"),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

/// Starts `udpsrc listen <path> -w <out> <args>` and waits for its
/// readiness line on stderr ("udpsrc: listening on <addr> ...").
fn spawn_listen(path: &str, out: &Path, args: &[&str]) -> Listening {
    let mut child = Command::new(BIN)
        .args(["listen", path, "-w"])
        .arg(out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let ready = loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("listen {path} ended before it was ready: {seen}");
        }
        seen.push_str(&line);
        if line.starts_with("udpsrc: listening on ") {
            break line;
        }
    };
    let (tx, lines) = mpsc::channel();
    let stderr = std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            let _ = tx.send(line);
        }
        seen
    });
    Listening {
        child,
        lines,
        stderr,
        ready,
    }
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN).arg("replay").args(args).output().unwrap()
}

/// Waits for listen to exit; its status, stdout and whole stderr.
fn wait_listen(l: Listening) -> Output {
    let mut out = l.child.wait_with_output().unwrap();
    out.stderr = l.stderr.join().unwrap().into_bytes();
    out
}

fn finish(l: Listening) -> Output {
    let out = wait_listen(l);
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
    for ((link, data, comment), want) in got.iter().zip(&packets) {
        assert_eq!(*link, 1, "a geneve path's file is Ethernet");
        assert_eq!(data[..14], ethernet_header(0x86dd), "synthesized header");
        assert_eq!(&data[14..], want);
        assert!(comment.ends_with(" link=raw"), "{comment}");
    }
    let (_, got) = through_listen(
        &trace,
        "raw:dlt=raw",
        &dir.join("dlt-raw.pcapng"),
        packets.len(),
        &[],
        &["--encap", "raw"],
    );
    for ((link, data, _), want) in got.iter().zip(&packets) {
        assert_eq!(*link, 101, "dlt=raw: LINKTYPE_RAW");
        assert_eq!(data, want);
    }
}

/// Zero MAC addresses and the EtherType.
fn ethernet_header(ethertype: u16) -> [u8; 14] {
    let mut h = [0u8; 14];
    h[12..].copy_from_slice(&ethertype.to_be_bytes());
    h
}

#[test]
fn geneve_with_ethernet_and_raw_ip_gives_one_file_tcpdump_and_zeek_read() {
    let dir = common::tmpdir("mixed");
    let frames = ethernet_frames();
    let eth = dir.join("eth.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &frames);
    let packets: Vec<Vec<u8>> = (0..10).map(|i| common::ipv6_packet(i, 100)).collect();
    let raw = dir.join("raw.pcap");
    common::write_pcap(&raw, DataLink::RAW, &packets);
    let port = common::unique_port();
    let out = dir.join("mixed.pcapng");
    let total = frames.len() + packets.len();
    let l = listen(&format!("127.0.0.1:{port}:geneve"), &out, total, &[]);
    let to = format!("127.0.0.1:{port}");
    for trace in [&eth, &raw] {
        let r = replay(&[
            trace.to_str().unwrap(),
            "--to",
            &to,
            "-q",
            "--encap",
            "geneve",
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    finish(l);
    let got = read_pcapng(&out);
    assert_eq!(got.len(), total);
    assert!(
        got.iter().all(|(link, _, _)| *link == 1),
        "one Ethernet interface"
    );
    let synthesized = got.iter().filter(|(_, d, _)| d[..12] == [0; 12]).count();
    assert_eq!(synthesized, packets.len());

    let td = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&out)
        .output();
    match td {
        Err(e) => common::skipped(module_path!(), &format!("tcpdump: {e}")),
        Ok(td) => {
            let text = String::from_utf8_lossy(&td.stdout);
            assert!(
                td.status.success(),
                "{}",
                String::from_utf8_lossy(&td.stderr)
            );
            assert_eq!(text.lines().count(), total, "{text}");
            assert_eq!(text.matches("IP6 ").count(), packets.len(), "{text}");
        }
    }
    let Some(zeek) = common::zeek::binary() else {
        common::zeek::skip_or_fail(
            module_path!(),
            "zeek -r: no Zeek (ZEEK_CONFIG, zeek-config on PATH or /opt/zeek*)",
        );
        return;
    };
    let logs = dir.join("zeek-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let z = Command::new(&zeek)
        .arg("-r")
        .arg(&out)
        .current_dir(&logs)
        .output()
        .unwrap();
    assert!(
        z.status.success(),
        "zeek -r: {}",
        String::from_utf8_lossy(&z.stderr)
    );
    let conn = std::fs::read_to_string(logs.join("conn.log")).unwrap_or_default();
    assert!(conn.contains("fdfd:fdfd"), "the raw IPv6 flows: {conn}");
    assert!(conn.contains("10.0.0.1"), "the Ethernet flows: {conn}");
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
        (
            vec!["listen", "tcp::127.0.0.1:4789"],
            "unknown prefix 'tcp::': expected udp:: or udptunnel::",
        ),
        // What is echoed is escaped: still one line, nothing reordered.
        (
            vec!["listen", "127.0.0.1:4789:vx\nlan"],
            "unknown option 'vx\\nlan'",
        ),
        (
            vec!["listen", "127.0.0.1:4789", "--receiver", "ep\u{202e}oll"],
            "unknown receiver 'ep\\u{202e}oll'",
        ),
        (
            vec!["listen", "127.0.0.1:4789", "-w", "/nonexistent/a\nb"],
            "cannot create /nonexistent/a\\nb",
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
fn sigint_sigterm_and_sighup_stop_listen_with_the_json_and_the_file_complete() {
    let dir = common::tmpdir("signals");
    let frames = ethernet_frames();
    let trace = dir.join("eth.pcap");
    common::write_pcap(&trace, DataLink::ETHERNET, &frames);
    for (name, signal) in [
        ("SIGINT", libc::SIGINT),
        ("SIGTERM", libc::SIGTERM),
        ("SIGHUP", libc::SIGHUP),
    ] {
        let port = common::unique_port();
        let out = dir.join(format!("{name}.pcapng"));
        // No -c and no --quiet: only the signal stops it, and the
        // once-a-second line says when every packet is in.
        let l = spawn_listen(&format!("127.0.0.1:{port}"), &out, &["--json"]);
        let to = format!("127.0.0.1:{port}");
        assert!(
            replay(&[trace.to_str().unwrap(), "--to", &to, "-q"])
                .status
                .success()
        );
        l.wait_for_line(&format!("delivered {} ", frames.len()));
        l.signal(signal);
        let done = wait_listen(l);
        assert!(
            done.status.success(),
            "{name}: exit {:?}: {}",
            done.status,
            String::from_utf8_lossy(&done.stderr)
        );
        let stats: serde_json::Value = serde_json::from_slice(&done.stdout)
            .unwrap_or_else(|e| panic!("{name}: no JSON ({e}): {:?}", done.stdout));
        assert_eq!(stats["delivered"], frames.len(), "{name}");
        assert_eq!(
            read_pcapng(&out).len(),
            frames.len(),
            "{name}: every packet in the file"
        );
    }
}

#[test]
fn bad_durations_and_counts_exit_2_and_say_the_range() {
    let range = "expected a number of seconds greater than 0 and at most 4294967295";
    for bad in ["inf", "1e300", "1e19", "nan", "-1", "0", "ten"] {
        let out = Command::new(BIN)
            .args(["listen", "127.0.0.1:4789", "-q", "--duration"])
            .arg(bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--duration {bad}: {stderr}");
        assert!(stderr.contains(range), "--duration {bad}: {stderr}");
    }
    for bad in ["0", "-1", "1e3", "x"] {
        let out = Command::new(BIN)
            .args(["listen", "127.0.0.1:4789", "-q", "-c", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "-c {bad}");
    }
}

#[test]
fn the_ready_file_and_the_ready_line_say_where_listen_is_bound() {
    let dir = common::tmpdir("ready");
    let port = common::unique_port();
    let ready = dir.join("ready");
    std::fs::write(&ready, "stale").unwrap();
    // The plugin's other prefix, udptunnel::, works as well.
    let l = spawn_listen(
        &format!("udptunnel::127.0.0.1:{port}"),
        &dir.join("out.pcapng"),
        &["-q", "--json", "--ready-file", ready.to_str().unwrap()],
    );
    // The file is in place before the line is printed.
    assert_eq!(
        std::fs::read_to_string(&ready).unwrap(),
        format!("127.0.0.1:{port}\n")
    );
    assert!(!dir.join("ready.tmp").exists(), "renamed into place");
    assert!(
        l.ready
            .starts_with(&format!("udpsrc: listening on 127.0.0.1:{port} ")),
        "{}",
        l.ready
    );
    // Bound: a second plain socket cannot have the port.
    assert!(UdpSocket::bind(("127.0.0.1", port)).is_err());
    l.signal(libc::SIGTERM);
    let done = finish(l);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&done.stdout).is_ok(),
        "JSON after SIGTERM"
    );
}

/// VXLAN-encapsulated copies of the frames, as replay would send them.
fn vxlan_datagrams(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let mut d = Vec::new();
            zeek_udp_source::encap::Encoder::new(zeek_udp_source::Encap::Vxlan).encode(
                f,
                zeek_udp_source::LinkType::En10Mb,
                &mut d,
            );
            d
        })
        .collect()
}

#[test]
fn count_writes_n_packets_and_counts_the_rest_of_their_receive() {
    let dir = common::tmpdir("count");
    let frames: Vec<Vec<u8>> = ethernet_frames().into_iter().take(10).collect();
    for receiver in ["recvmmsg", "io_uring"] {
        let port = common::unique_port();
        let out = dir.join(format!("{receiver}.pcapng"));
        let l = listen(
            &format!("127.0.0.1:{port}"),
            &out,
            2,
            &["--receiver", receiver],
        );
        // Stopped, listen cannot receive: all ten wait in the socket and
        // arrive in its first receive.
        l.signal(libc::SIGSTOP);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in vxlan_datagrams(&frames) {
            tx.send_to(&d, ("127.0.0.1", port)).unwrap();
        }
        l.signal(libc::SIGCONT);
        let done = finish(l);
        let stats: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
        assert_eq!(stats["received"], 10, "{receiver}: {stats}");
        assert_eq!(stats["delivered"], 10, "{receiver}: {stats}");
        assert_eq!(stats["rejected"], 0, "{receiver}: {stats}");
        assert_eq!(stats["beyond_count"], 8, "{receiver}: {stats}");
        let got = read_pcapng(&out);
        assert_eq!(got.len(), 2, "{receiver}: -c 2 writes two");
        assert_eq!((&got[0].1, &got[1].1), (&frames[0], &frames[1]));
    }
}

#[test]
fn rcvbuf_past_the_kernel_cap_names_that_cap() {
    use zeek_udp_source::socket::{MAX_RECV_BUFFER, RecvBuffer};
    let port = common::unique_port();
    let out = Command::new(BIN)
        .args(["listen", &format!("127.0.0.1:{port}"), "-q"])
        .args(["--duration", "0.01", "--rcvbuf", "4294967296"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // More than the kernel can grant is a bad setting, refused with the
    // valid range, not a sysctl suggestion no kernel takes.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("use 0 (the kernel's default) to 1073741823 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("rmem_max=4294967296"), "{stderr}");
    // Granted at the cap (privileged), or at rmem_max (not).
    let at_cap = RecvBuffer {
        requested: 1 << 32,
        granted: MAX_RECV_BUFFER,
    };
    assert!(at_cap.warning().unwrap().ends_with("ask for at most that"));
    let at_rmem_max = RecvBuffer {
        requested: 1 << 32,
        granted: 4 << 20,
    };
    let w = at_rmem_max.warning().unwrap();
    assert!(w.contains("sysctl -w net.core.rmem_max=1073741823"), "{w}");
    let small = RecvBuffer {
        requested: 16 << 20,
        granted: 4 << 20,
    };
    let w = small.warning().unwrap();
    assert!(w.contains("sysctl -w net.core.rmem_max=16777216"), "{w}");
    assert!(!w.contains("INT_MAX"), "{w}");
}

#[test]
fn bad_replay_rates_and_loops_exit_2_and_say_the_range() {
    let trace = common::tmpdir("bad-rates").join("none.pcap");
    let range = "expected a number greater than 0 and at most 1e12";
    for flag in ["--pps", "--mbps", "--speed"] {
        for bad in ["inf", "nan", "-1", "0", "1e300", "fast"] {
            let out = Command::new(BIN)
                .args(["replay", trace.to_str().unwrap(), "--to", "127.0.0.1:9"])
                .args([flag, bad])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {bad}: {stderr}");
            assert!(stderr.contains(range), "{flag} {bad}: {stderr}");
        }
    }
    for bad in ["0", "18446744073709551615", "-1"] {
        let out = Command::new(BIN)
            .args(["replay", trace.to_str().unwrap(), "--to", "127.0.0.1:9"])
            .args(["--loop", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--loop {bad}: {stderr}");
        assert!(stderr.contains("--loop"), "--loop {bad}: {stderr}");
    }
}

#[test]
fn listen_takes_dedup_and_reorder_and_shows_both_counts() {
    let dir = common::tmpdir("tap");
    // An HTTP session, the server's ACK of the request sent before the
    // request, every packet twice: via VNI 1, and a hop later via VNI 2.
    let mut session = common::http_session();
    session.swap(3, 4);
    let encode = |vni: u32, f: &[u8]| {
        let mut enc = zeek_udp_source::encap::Encoder::new(zeek_udp_source::Encap::Vxlan);
        enc.vxlan_vni = vni;
        let mut d = Vec::new();
        enc.encode(f, zeek_udp_source::LinkType::En10Mb, &mut d);
        d
    };
    let port = common::unique_port();
    let out = dir.join("tap.pcapng");
    let l = spawn_listen(
        &format!("udp::127.0.0.1:{port}:vxlan:dedup=100ms:reorder=100ms"),
        &out,
        &["--json"],
    );
    let (client, server) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    for f in &session {
        // The client is 10.1.1.1 (bytes 26..30 of the frame: the source).
        let tx = if f[26..30] == [10, 1, 1, 1] {
            &client
        } else {
            &server
        };
        let mut far = f.clone();
        far[14 + 8] -= 1;
        tx.send_to(&encode(1, f), ("127.0.0.1", port)).unwrap();
        tx.send_to(&encode(2, &far), ("127.0.0.1", port)).unwrap();
    }
    let n = session.len();
    let line = l.wait_for_line(&format!("delivered {n} "));
    assert!(
        line.contains(&format!("deduplicated {n} reordered 1")),
        "{line}"
    );
    l.signal(libc::SIGINT);
    let done = finish(l);
    let stats: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(stats["received"], 2 * n, "{stats}");
    assert_eq!(stats["delivered"], n, "{stats}");
    assert_eq!(stats["deduplicated"], n, "{stats}");
    assert_eq!(stats["reordered"], 1, "{stats}");
    assert_eq!(stats["held"], 0, "{stats}");
    assert!(
        stats["path"]
            .as_str()
            .unwrap()
            .ends_with(":dedup=100ms:reorder=100ms"),
        "{stats}"
    );
    // The file has the request before its ACK again.
    let got: Vec<Vec<u8>> = read_pcapng(&out).into_iter().map(|p| p.1).collect();
    session.swap(3, 4);
    assert_eq!(got, session);
}
