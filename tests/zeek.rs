//! The plugin inside a real Zeek: `zeek -NN`, end-to-end logs against
//! `zeek -r`, drops in Zeek's statistics, and the errors a user sees.
//!
//! Zeek is found through ZEEK_CONFIG or zeek-config on PATH; without it every
//! test here says SKIPPED and why.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pcap_file::DataLink;
use serde_json::Value;

const PLUGIN: &str = "UDPTunnel::PacketSource";
const UDPSRC: &str = env!("CARGO_BIN_EXE_udpsrc");

struct Zeek {
    bin: PathBuf,
    plugin_dir: PathBuf,
}

/// Zeek and the built plugin, or why the test is skipped.
fn zeek() -> Result<Zeek, String> {
    let config = std::env::var_os("ZEEK_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("zeek-config"))
                .find(|p| p.is_file())
        })
        .ok_or("zeek-config not found (set ZEEK_CONFIG or put zeek-config on PATH)")?;
    let out = Command::new(&config)
        .arg("--prefix")
        .output()
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/zeek");
    if !bin.is_file() {
        return Err(format!("no zeek binary at {}", bin.display()));
    }
    let plugin_dir = build_plugin(&config)?;
    Ok(Zeek { bin, plugin_dir })
}

/// Builds the plugin (the cdylib, which `cargo test` does not link) once
/// per test run, with a nested cargo into its own target directory so it
/// does not wait on the outer cargo's lock.
fn build_plugin(config: &Path) -> Result<PathBuf, String> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let target = manifest.join("target/zeek-tests");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--lib", "--quiet", "--manifest-path"])
                .arg(manifest.join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target)
                .env("ZEEK_CONFIG", config)
                .output()
                .map_err(|e| format!("cannot run cargo to build the plugin: {e}"))?;
            if !out.status.success() {
                panic!(
                    "building the plugin failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let dir = target.join("debug/zeek-plugin");
            if !dir.join("__zeek_plugin__").is_file() {
                panic!("the plugin build left no {}", dir.display());
            }
            Ok(dir)
        })
        .clone()
}

macro_rules! zeek_or_skip {
    ($test:expr) => {
        match zeek() {
            Ok(z) => z,
            Err(why) => {
                common::skipped($test, &why);
                return;
            }
        }
    };
}

impl Zeek {
    fn command(&self, dir: &Path) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(dir)
            .env("ZEEK_PLUGIN_PATH", &self.plugin_dir)
            .env_remove("ZEEKPATH");
        c
    }

    /// `zeek -r` on a trace, in `dir`.
    fn read(&self, dir: &Path, trace: &Path) {
        let out = self
            .command(dir)
            .args(["-C", "-r"])
            .arg(trace)
            .arg("LogAscii::use_json=T")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zeek -r: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `zeek -i <path>` with extra scripts, waiting until its socket is bound.
    fn live(&self, dir: &Path, path: &str, port: u16, v6: bool, scripts: &[&str]) -> Live {
        let child = self
            .command(dir)
            .args(["-C", "-i", path, "LogAscii::use_json=T"])
            .args(scripts)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let host = if v6 { "::1" } else { "127.0.0.1" };
        let deadline = Instant::now() + Duration::from_secs(60);
        while UdpSocket::bind((host, port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The socket is bound a little before Zeek's loop runs.
        std::thread::sleep(Duration::from_millis(500));
        Live(Some(child))
    }
}

/// A running Zeek that is killed if the test ends before `stop`, so a
/// failing test leaves no Zeek behind.
struct Live(Option<Child>);

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM and collects the output.
fn stop(mut live: Live) -> Output {
    let child = live.0.take().expect("running");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

/// Replays at 2000 pkt/s unless `args` set a rate.
fn replay(trace: &Path, to: &str, args: &[&str]) {
    let pace: &[&str] = if args.contains(&"--pps") {
        &[]
    } else {
        &["--pps", "2000"]
    };
    let out = Command::new(UDPSRC)
        .args(["replay"])
        .arg(trace)
        .args(["--to", to, "--quiet"])
        .args(pace)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udpsrc replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The comparable fields of each line of a JSON log, sorted.
fn log(dir: &Path, name: &str, fields: &[&str]) -> Vec<BTreeMap<String, Value>> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let mut rows: Vec<BTreeMap<String, Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            fields
                .iter()
                .map(|f| (f.to_string(), v.get(*f).cloned().unwrap_or(Value::Null)))
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// Prints Zeek's packet statistics as JSON when it stops; see `net_stats`.
const PRINT_STATS: &str =
    "event zeek_done() { print fmt(\"STATS %s\", to_json(get_net_stats())); }";

/// The statistics PRINT_STATS printed, and the line itself for messages.
fn net_stats(out: &Output) -> (Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("STATS "))
        .unwrap_or_else(|| {
            panic!(
                "no stats: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string();
    (serde_json::from_str(&line).unwrap(), line)
}

const CONN: &[&str] = &[
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "service",
    "history",
    "orig_bytes",
    "resp_bytes",
    "orig_pkts",
    "resp_pkts",
    "conn_state",
];
const HTTP: &[&str] = &[
    "id.orig_h",
    "id.resp_h",
    "method",
    "host",
    "uri",
    "user_agent",
    "status_code",
    "response_body_len",
];

#[test]
fn zeek_lists_the_plugin_and_its_component() {
    let z = zeek_or_skip!("zeek_lists_the_plugin_and_its_component");
    let dir = common::tmpdir("nn");
    let out = z.command(&dir).args(["-NN", PLUGIN]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(PLUGIN) && text.contains("UDPTunnelSource"),
        "{text}"
    );
    assert!(
        text.contains("udp") && text.contains("udptunnel"),
        "prefixes: {text}"
    );
}

/// One end-to-end case: how to replay, which path Zeek listens on.
struct Case {
    name: &'static str,
    raw_ip: bool,
    replay: &'static [&'static str],
    options: &'static str,
    v6: bool,
    /// Zeek script run with the case ("" for none).
    redef: &'static str,
}

const IO_URING: &str = "redef PacketSource::UDP::implementation = PacketSource::UDP::IO_URING;";

const CASES: &[Case] = &[
    Case {
        name: "vxlan",
        raw_ip: false,
        replay: &["--encap", "vxlan", "--vni", "5"],
        options: "",
        v6: false,
        redef: "",
    },
    Case {
        name: "vxlan-udp_gro",
        raw_ip: false,
        replay: &["--encap", "vxlan"],
        options: ":vxlan",
        v6: false,
        redef: "redef PacketSource::UDP::udp_gro = T;",
    },
    Case {
        name: "vxlan-io_uring",
        raw_ip: false,
        replay: &["--encap", "vxlan"],
        options: ":vxlan",
        v6: false,
        redef: IO_URING,
    },
    Case {
        name: "geneve-ethernet",
        raw_ip: false,
        replay: &["--encap", "geneve"],
        options: ":geneve",
        v6: false,
        redef: "",
    },
    Case {
        name: "geneve-ip",
        raw_ip: true,
        replay: &["--encap", "geneve"],
        options: ":geneve",
        v6: false,
        redef: IO_URING,
    },
    Case {
        name: "geneve+vxlan",
        raw_ip: false,
        replay: &["--encap", "geneve+vxlan"],
        options: ":geneve+vxlan",
        v6: false,
        redef: "",
    },
    Case {
        name: "raw",
        raw_ip: true,
        replay: &["--encap", "raw"],
        options: ":raw:dlt=raw",
        v6: false,
        redef: "",
    },
    Case {
        name: "skip",
        raw_ip: false,
        replay: &["--encap", "skip=8"],
        options: ":skip=8",
        v6: false,
        redef: IO_URING,
    },
    Case {
        name: "ipv6-listener",
        raw_ip: false,
        replay: &["--encap", "vxlan"],
        options: ":vxlan",
        v6: true,
        redef: "",
    },
];

#[test]
fn live_logs_match_zeek_reading_the_inner_packets() {
    let z = zeek_or_skip!("live_logs_match_zeek_reading_the_inner_packets");
    let dir = common::tmpdir("e2e");
    let frames = common::http_session();
    let eth = dir.join("inner.pcap");
    let raw = dir.join("inner-raw.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &frames);
    common::write_pcap(&raw, DataLink::RAW, &common::without_ethernet(&frames));
    let offline = dir.join("offline");
    std::fs::create_dir_all(&offline).unwrap();
    z.read(&offline, &eth);
    let want_conn = log(&offline, "conn", CONN);
    let want_http = log(&offline, "http", HTTP);
    assert_eq!(want_conn.len(), 1, "the session is one connection");
    assert_eq!(
        want_conn[0]["service"],
        Value::from("http"),
        "{want_conn:?}"
    );
    assert_eq!(want_http.len(), 1);

    for case in CASES {
        let run = dir.join(case.name);
        std::fs::create_dir_all(&run).unwrap();
        let port = common::unique_port();
        let host = if case.v6 { "[::1]" } else { "127.0.0.1" };
        let path = format!("udp::{host}:{port}{}", case.options);
        let scripts: Vec<&str> = if case.redef.is_empty() {
            vec![]
        } else {
            vec!["-e", case.redef]
        };
        let child = z.live(&run, &path, port, case.v6, &scripts);
        replay(
            if case.raw_ip { &raw } else { &eth },
            &format!("{host}:{port}"),
            case.replay,
        );
        std::thread::sleep(Duration::from_millis(1000));
        let out = stop(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            log(&run, "conn", CONN),
            want_conn,
            "{}: conn.log ({stderr})",
            case.name
        );
        assert_eq!(
            log(&run, "http", HTTP),
            want_http,
            "{}: http.log",
            case.name
        );
        assert!(
            !run.join("weird.log").exists()
                || !std::fs::read_to_string(run.join("weird.log"))
                    .unwrap()
                    .contains("udp"),
            "{}: no tunnel weirds",
            case.name
        );
    }
}

#[test]
fn shared_http_trace_matches_too() {
    let z = zeek_or_skip!("shared_http_trace_matches_too");
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/traces/vxlan-encapsulated-http.pcap");
    if !shared.is_file() {
        common::skipped(
            "shared_http_trace_matches_too",
            "../shared/traces not found",
        );
        return;
    }
    let dir = common::tmpdir("shared");
    // The inner frames, decapsulated here, are what `zeek -r` reads.
    let decap = zeek_udp_source::decap::Decapsulator::new(
        zeek_udp_source::Encap::Vxlan,
        zeek_udp_source::LinkType::En10Mb,
    );
    let inner: Vec<Vec<u8>> = zeek_udp_source::trace::read(&shared)
        .unwrap()
        .iter()
        .filter_map(|p| zeek_udp_source::trace::udp_payload(p.linktype, &p.data))
        .map(|d| d[decap.decap(d).unwrap().offset..].to_vec())
        .collect();
    let eth = dir.join("inner.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &inner);
    let offline = dir.join("offline");
    std::fs::create_dir_all(&offline).unwrap();
    z.read(&offline, &eth);
    let port = common::unique_port();
    let live = dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    let child = z.live(&live, &format!("udp::127.0.0.1:{port}"), port, false, &[]);
    replay(&shared, &format!("127.0.0.1:{port}"), &["--passthrough"]);
    std::thread::sleep(Duration::from_millis(1000));
    stop(child);
    assert_eq!(log(&live, "conn", CONN), log(&offline, "conn", CONN));
    assert_eq!(log(&live, "http", HTTP), log(&offline, "http", HTTP));
}

#[test]
fn kernel_drops_reach_zeeks_statistics() {
    let z = zeek_or_skip!("kernel_drops_reach_zeeks_statistics");
    let dir = common::tmpdir("drops");
    // Many small UDP packets at full speed into a 64 KiB buffer.
    let frames: Vec<Vec<u8>> = (0..2000).map(|i| common::eth_frame(i, 600)).collect();
    let trace = dir.join("flood.pcap");
    common::write_pcap(&trace, DataLink::ETHERNET, &frames);
    let port = common::unique_port();
    let script = format!("redef PacketSource::UDP::udp_recv_buffer_size = 65536; {PRINT_STATS}");
    let child = z.live(
        &dir,
        &format!("udp::127.0.0.1:{port}"),
        port,
        false,
        &["-e", &script],
    );
    let loops = 25;
    let out = Command::new(UDPSRC)
        .arg("replay")
        .arg(&trace)
        .args([
            "--to",
            &format!("127.0.0.1:{port}"),
            "--quiet",
            "--loop",
            &loops.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let out = stop(child);
    let (stats, line) = net_stats(&out);
    let get = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
    let sent = (frames.len() * loops) as u64;
    assert!(
        get("pkts_dropped") > 0,
        "an overloaded 64 KiB buffer drops: {line}"
    );
    assert_eq!(get("pkts_link"), sent, "link = everything sent: {line}");
    assert_eq!(
        get("pkts_recvd") + get("pkts_dropped"),
        sent,
        "received + dropped = sent: {line}"
    );
}

#[test]
fn a_bad_path_and_a_taken_port_stop_zeek_with_one_clear_line() {
    let z = zeek_or_skip!("a_bad_path_and_a_taken_port_stop_zeek_with_one_clear_line");
    let dir = common::tmpdir("errors");
    let out = z
        .command(&dir)
        .args(["-i", "udp::127.0.0.1:4789:vxlan:geneve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("duplicate encapsulation 'geneve': 'vxlan' was already given"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("core dumped") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let out = z
        .command(&dir)
        .args(["-i", &format!("udp::127.0.0.1:{port}")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "port {port} is in use by a socket without SO_REUSEPORT"
        )),
        "{stderr}"
    );
    drop(holder);

    let out = z
        .command(&dir)
        .args(["-i", &format!("udp::127.0.0.1:{port}"), "-e"])
        .arg(format!("{IO_URING} redef PacketSource::UDP::udp_gro = T;"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad setting udp_gro: works with the recvmmsg receiver only"),
        "{stderr}"
    );
}

#[test]
fn malformed_datagrams_raise_weirds_named_for_their_reason() {
    let z = zeek_or_skip!("malformed_datagrams_raise_weirds_named_for_their_reason");
    let dir = common::tmpdir("weirds");
    let port = common::unique_port();
    let child = z.live(
        &dir,
        &format!("udp::127.0.0.1:{port}:vxlan"),
        port,
        false,
        &[],
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut no_i_flag = vec![0u8, 0, 0, 0, 0, 0, 1, 0];
    no_i_flag.extend(common::eth_frame(1, 40));
    for d in [no_i_flag, vec![0x08, 0, 0], vec![]] {
        tx.send_to(&d, ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop(child);
    let names: Vec<String> = log(&dir, "weird", &["name"])
        .into_iter()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect();
    for want in [
        "vxlan_unset_I_flag",
        "vxlan_too_short",
        "udp_empty_datagram",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} in weird.log: {names:?}"
        );
    }
}

#[test]
fn senders_off_the_allow_list_never_reach_zeek() {
    let z = zeek_or_skip!("senders_off_the_allow_list_never_reach_zeek");
    let dir = common::tmpdir("allow");
    let frames = common::http_session();
    let eth = dir.join("inner.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &frames);
    for (allow, reaches) in [
        ("allow=10.0.0.0/8,[fd00::/8]", false),
        ("allow=127.0.0.1", true),
    ] {
        let run = dir.join(if reaches { "allowed" } else { "refused" });
        std::fs::create_dir_all(&run).unwrap();
        let port = common::unique_port();
        let path = format!("udp::127.0.0.1:{port}:vxlan:{allow}");
        let child = z.live(&run, &path, port, false, &[]);
        replay(&eth, &format!("127.0.0.1:{port}"), &[]);
        std::thread::sleep(Duration::from_millis(1000));
        stop(child);
        let conns = log(&run, "conn", CONN);
        let weirds: Vec<Value> = log(&run, "weird", &["name"])
            .into_iter()
            .map(|r| r["name"].clone())
            .collect();
        if reaches {
            assert_eq!(conns.len(), 1, "{allow}: the session is analysed");
        } else {
            assert!(
                conns.is_empty(),
                "{allow}: nothing reaches the analysis: {conns:?}"
            );
            assert!(
                weirds.contains(&Value::from("udp_source_not_allowed")),
                "{allow}: {weirds:?}"
            );
        }
    }
}

#[test]
fn capture_filters_apply_to_the_inner_packets() {
    let z = zeek_or_skip!("capture_filters_apply_to_the_inner_packets");
    let dir = common::tmpdir("filter");
    // The HTTP session with DNS datagrams in between.
    let mut frames = Vec::new();
    for (i, f) in common::http_session().into_iter().enumerate() {
        frames.push(f);
        frames.push(common::eth_frame(i as u32, 30));
    }
    let dns = frames.len() / 2;
    let eth = dir.join("mixed.pcap");
    let raw = dir.join("mixed-raw.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &frames);
    common::write_pcap(&raw, DataLink::RAW, &common::without_ethernet(&frames));
    let script = PRINT_STATS;
    // GENEVE with raw IP inside: a different link type than the path's.
    for (name, trace, options, encap) in [
        ("vxlan", &eth, "vxlan", "vxlan"),
        ("geneve-ip", &raw, "geneve", "geneve"),
    ] {
        let run = dir.join(name);
        std::fs::create_dir_all(&run).unwrap();
        let port = common::unique_port();
        let path = format!("udp::127.0.0.1:{port}:{options}");
        let child = z.live(
            &run,
            &path,
            port,
            false,
            &["-f", "tcp port 80", "-e", script],
        );
        replay(trace, &format!("127.0.0.1:{port}"), &["--encap", encap]);
        std::thread::sleep(Duration::from_millis(1000));
        let out = stop(child);
        let conns = log(&run, "conn", CONN);
        assert_eq!(
            conns.len(),
            1,
            "{name}: only the HTTP connection: {conns:?}"
        );
        assert_eq!(conns[0]["id.resp_p"], Value::from(80));
        let (stats, line) = net_stats(&out);
        assert_eq!(stats["pkts_filtered"], Value::from(dns), "{name}: {line}");
        assert_eq!(
            stats["pkts_recvd"],
            Value::from(frames.len() - dns),
            "{name}: {line}"
        );
    }
}

#[test]
fn vnis_keep_identical_five_tuples_apart() {
    let z = zeek_or_skip!("vnis_keep_identical_five_tuples_apart");
    let dir = common::tmpdir("connkey");
    let eth = dir.join("inner.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &common::http_session());
    let key = |name: &str| format!("policy/frameworks/conn_key/packet_source/udp/{name}");
    // (script to load, path encapsulation, two replays' arguments, ctx fields)
    type Case<'a> = (Option<String>, &'a str, [Vec<&'a str>; 2], Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            None,
            "vxlan",
            [vec!["--vni", "100"], vec!["--vni", "200"]],
            vec![],
        ),
        (
            Some(key("vxlan_vni")),
            "vxlan",
            [vec!["--vni", "100"], vec!["--vni", "200"]],
            vec!["id.ctx.vxlan_vni"],
        ),
        (
            Some(key("geneve_vni")),
            "geneve",
            [
                vec!["--encap", "geneve", "--vni", "7"],
                vec!["--encap", "geneve", "--vni", "8"],
            ],
            vec!["id.ctx.geneve_vni"],
        ),
        (
            Some(key("geneve_vxlan_vni")),
            "geneve+vxlan",
            [
                vec![
                    "--encap",
                    "geneve+vxlan",
                    "--vni",
                    "4242",
                    "--geneve-vni",
                    "1",
                ],
                vec![
                    "--encap",
                    "geneve+vxlan",
                    "--vni",
                    "4242",
                    "--geneve-vni",
                    "2",
                ],
            ],
            vec!["id.ctx.geneve_vni", "id.ctx.vxlan_vni"],
        ),
    ];
    for (i, (script, encap, replays, fields)) in cases.iter().enumerate() {
        let run = dir.join(format!("case{i}"));
        std::fs::create_dir_all(&run).unwrap();
        let port = common::unique_port();
        let scripts: Vec<&str> = script.iter().map(String::as_str).collect();
        let child = z.live(
            &run,
            &format!("udp::127.0.0.1:{port}:{encap}"),
            port,
            false,
            &scripts,
        );
        // Both at once, so the two sessions' packets interleave.
        std::thread::scope(|scope| {
            for args in replays {
                let (eth, to) = (&eth, format!("127.0.0.1:{port}"));
                let mut slow = args.clone();
                slow.extend(["--pps", "50"]);
                scope.spawn(move || replay(eth, &to, &slow));
            }
        });
        std::thread::sleep(Duration::from_millis(1000));
        let out = stop(child);
        let mut cols = CONN.to_vec();
        cols.extend(fields.iter());
        let conns = log(&run, "conn", &cols);
        let what = format!(
            "{script:?}: {conns:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if script.is_none() {
            assert_eq!(
                conns.len(),
                1,
                "without a VNI key the two sessions merge: {what}"
            );
            continue;
        }
        assert_eq!(conns.len(), 2, "one connection per VNI: {what}");
        let ctx: Vec<Vec<Value>> = conns
            .iter()
            .map(|c| fields.iter().map(|f| c[*f].clone()).collect())
            .collect();
        let want: Vec<Vec<Value>> = match *encap {
            "vxlan" => vec![vec![Value::from(100)], vec![Value::from(200)]],
            "geneve" => vec![vec![Value::from(7)], vec![Value::from(8)]],
            _ => vec![
                vec![Value::from(1), Value::from(4242)],
                vec![Value::from(2), Value::from(4242)],
            ],
        };
        let mut ctx = ctx;
        ctx.sort_by_key(|v| format!("{v:?}"));
        assert_eq!(ctx, want, "{what}");
        for c in &conns {
            assert_eq!(
                c["history"],
                Value::from("ShADadFf"),
                "each session whole: {what}"
            );
        }
    }
}

#[test]
fn per_source_metrics_reach_zeeks_telemetry() {
    let z = zeek_or_skip!("per_source_metrics_reach_zeeks_telemetry");
    let dir = common::tmpdir("metrics");
    let port = common::unique_port();
    let script = "event zeek_done() { for ( _, m in Telemetry::collect_metrics(\"zeek\", \"udp_source*\") ) \
                  print fmt(\"METRIC %s %s %.0f\", m$opts$name, join_string_vec(m$label_values, \",\"), m$value); }";
    let child = z.live(
        &dir,
        &format!("udp::127.0.0.1:{port}"),
        port,
        false,
        &["-e", script],
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut good = Vec::new();
    zeek_udp_source::encap::Encoder::new(zeek_udp_source::Encap::Vxlan).encode(
        &common::eth_frame(1, 40),
        zeek_udp_source::LinkType::En10Mb,
        &mut good,
    );
    for d in [good.clone(), good, vec![0x08, 0, 0]] {
        tx.send_to(&d, ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000));
    let out = stop(child);
    let text = String::from_utf8_lossy(&out.stdout);
    let iface = format!("127.0.0.1:{port}");
    for want in [
        format!("METRIC zeek_udp_source_received_total {iface} 3"),
        format!("METRIC zeek_udp_source_delivered_total {iface} 2"),
        format!("METRIC zeek_udp_source_rejected_total {iface},vxlan_too_short 1"),
        format!("METRIC zeek_udp_source_kernel_drops_total {iface} 0"),
        format!("METRIC zeek_udp_source_filtered_total {iface} 0"),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing '{want}' in:\n{text}"
        );
    }
    assert!(
        text.contains("METRIC zeek_udp_source_recv_buffer_bytes"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("error"), "a clean shutdown: {stderr}");
}

#[test]
fn workers_see_whole_connections_whatever_the_outer_ports() {
    let z = zeek_or_skip!("workers_see_whole_connections_whatever_the_outer_ports");
    let dir = common::tmpdir("workers");
    let port = common::unique_port();
    let path = format!("udp::127.0.0.1:{port}:vxlan:workers=2");
    let runs: Vec<PathBuf> = (0..2).map(|w| dir.join(format!("w{w}"))).collect();
    let mut children = Vec::new();
    for run in &runs {
        std::fs::create_dir_all(run).unwrap();
        children.push(z.live(run, &path, port, false, &[]));
    }
    // Both workers' sockets must be in the group before traffic starts.
    let bound = || {
        let udp = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        let needle = format!(":{port:04X} ");
        udp.lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(needle.trim()))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while bound() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bound(), 2, "both workers listening");
    // Requests from one socket, answers from another: the outer source port
    // differs by direction, as with mirror senders that hash asymmetrically.
    let (fwd, rev) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let flows = 200u16;
    let enc = zeek_udp_source::encap::Encoder::new(zeek_udp_source::Encap::Vxlan);
    for i in 0..flows {
        let (client, server) = ([10, 9, (i >> 8) as u8, i as u8], [10, 8, 0, 1]);
        for (sock, (src, dst, sp, dp)) in [
            (&fwd, (client, server, 30000 + i, 53)),
            (&rev, (server, client, 53, 30000 + i)),
        ] {
            let mut f = Vec::new();
            etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4(src, dst, 64)
                .udp(sp, dp)
                .write(&mut f, b"0123456789")
                .unwrap();
            let mut d = Vec::new();
            enc.encode(&f, zeek_udp_source::LinkType::En10Mb, &mut d);
            sock.send_to(&d, ("127.0.0.1", port)).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    for c in children {
        stop(c);
    }
    let per_worker: Vec<Vec<BTreeMap<String, Value>>> =
        runs.iter().map(|r| log(r, "conn", CONN)).collect();
    let all: Vec<&BTreeMap<String, Value>> = per_worker.iter().flatten().collect();
    assert_eq!(
        all.len(),
        flows as usize,
        "one connection per flow, none split in two"
    );
    for c in &all {
        assert_eq!(
            (&c["orig_pkts"], &c["resp_pkts"]),
            (&Value::from(1), &Value::from(1)),
            "both directions in one worker: {c:?}"
        );
    }
    for (w, conns) in per_worker.iter().enumerate() {
        assert!(
            conns.len() > 60,
            "worker {w} got {} of {flows}: far from even",
            conns.len()
        );
    }
}

#[test]
fn a_geneve_option_can_name_the_network_and_scripts_see_the_options() {
    let z = zeek_or_skip!("a_geneve_option_can_name_the_network_and_scripts_see_the_options");
    let dir = common::tmpdir("nsi");
    let eth = dir.join("inner.pcap");
    common::write_pcap(&eth, DataLink::ETHERNET, &common::http_session());
    let port = common::unique_port();
    let script = "redef PacketSource::UDP::geneve_key_option = \"0x0103:0x80\"; \
                  event new_connection(c: connection) { for ( _, o in PacketSource::UDP::current_geneve_options() ) \
                  print fmt(\"OPT %d %d %s\", o$opt_class, o$opt_type, bytestring_to_hexstr(o$data)); }";
    let child = z.live(
        &dir,
        &format!("udp::127.0.0.1:{port}:geneve"),
        port,
        false,
        &[
            "policy/frameworks/conn_key/packet_source/udp/geneve_option",
            "-e",
            script,
        ],
    );
    // GCP NSI style: VNI 0 everywhere; the option says which network.
    std::thread::scope(|scope| {
        for net in ["0000000a", "0000000b"] {
            let (eth, to) = (&eth, format!("127.0.0.1:{port}"));
            let opt = format!("0x0103:0x80:{net}");
            scope.spawn(move || {
                replay(
                    eth,
                    &to,
                    &[
                        "--encap",
                        "geneve",
                        "--vni",
                        "0",
                        "--geneve-option",
                        &opt,
                        "--pps",
                        "50",
                    ],
                )
            });
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    let out = stop(child);
    let conns = log(
        &dir,
        "conn",
        &["id.ctx.geneve_vni", "id.ctx.geneve_option", "history"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx: Vec<(Value, Value, Value)> = conns
        .iter()
        .map(|c| {
            (
                c["id.ctx.geneve_vni"].clone(),
                c["id.ctx.geneve_option"].clone(),
                c["history"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ctx,
        vec![
            (Value::from(0), Value::from(10), Value::from("ShADadFf")),
            (Value::from(0), Value::from(11), Value::from("ShADadFf")),
        ],
        "two whole connections told apart by the option: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("OPT 259 128 0000000a") && stdout.contains("OPT 259 128 0000000b"),
        "{stdout}"
    );

    let bad = z
        .command(&dir)
        .args([
            "-i",
            "udp::127.0.0.1:4789:geneve",
            "-e",
            "redef PacketSource::UDP::geneve_key_option = \"nonsense\";",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && stderr.contains("geneve_key_option 'nonsense' is not <class>:<type>"),
        "{stderr}"
    );
}
