//! Deployment as operators run it: zeekctl, and the units Zeek's systemd
//! generator writes, each start a cluster (logger, manager, proxy, two
//! workers sharing one UDP port with `workers=2`); a multi-flow trace
//! replayed into the tunnel must reach the logger's conn.log and http.log,
//! each connection once and whole, and the cluster must stop cleanly.
//!
//! Nothing outside a scratch directory is changed: zeekctl runs on a
//! zeekctl.cfg of our own (its `ZeekCtl` takes the file; a two-line wrapper
//! hands it over, since the installed `zeekctl` reads only
//! `<prefix>/etc/zeekctl.cfg`), with the plugin through `env_vars =
//! ZEEK_PLUGIN_PATH=...`. The generator gets `--config` and a `base_dir`
//! of links to the installed `bin/` and `share/`, so its spool is scratch
//! too; its units' commands are started by hand, in their environment and
//! working directory, since no systemd runs here.
//!
//! Zeek is found through ZEEK_CONFIG or zeek-config on PATH. Where Zeek,
//! zeekctl or zeek-systemd-generator is absent each test says SKIPPED and
//! why, unless REQUIRE_ZEEK=1, which turns a skip into a failure. The
//! interface prefix is `udptunnel::`, which selects this plugin on every
//! Zeek (on 9.0+ `udp::` is Zeek's built-in UDP source).

mod common;

use common::flows;
use common::zeek::{or_skip, skip_or_fail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const UDPSRC: &str = env!("CARGO_BIN_EXE_udpsrc");
/// How long any one wait may take: deploying checks every node's scripts
/// first, which takes long on a busy machine.
const WAIT: Duration = Duration::from_secs(240);
/// Connections in the replayed trace.
const FLOWS: usize = 100;
/// Loaded on every node: JSON logs, and a line per cluster peer seen, so a
/// test knows when the workers can reach the logger.
const SITE_SCRIPT: &str = "redef LogAscii::use_json = T;\n\
    event Cluster::node_up(name: string, id: string)\n\
    \t{ print fmt(\"ZUS_NODE_UP %s\", name); flush_all(); }\n";

struct Zeek {
    prefix: PathBuf,
    plugin_dir: PathBuf,
}

fn zeek() -> Result<&'static Zeek, String> {
    static ZEEK: OnceLock<Result<Zeek, String>> = OnceLock::new();
    ZEEK.get_or_init(find_zeek).as_ref().map_err(Clone::clone)
}

fn find_zeek() -> Result<Zeek, String> {
    let config = common::zeek::config()?;
    Ok(Zeek {
        prefix: common::zeek::prefix(&config)?,
        plugin_dir: common::zeek::build_plugin(&config)?,
    })
}

/// Polls `done` until it holds or WAIT passes; then panics with `why()`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {what}: {}",
            why()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sockets bound to this UDP port (all of a reuseport group).
fn bound_sockets(port: u16) -> usize {
    let needle = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&needle))
        })
        .count()
}

/// `count` consecutive free TCP ports on 127.0.0.1 for a cluster's
/// listeners, below the ephemeral range and away from unique_port's. Each
/// call starts past the ranges handed out before, since clusters of tests
/// running side by side bind theirs only later.
fn tcp_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let first = 30_000 + (std::process::id() % 100) as u16 * 10;
    loop {
        let base = first + NEXT.fetch_add(count, Ordering::Relaxed);
        assert!(
            base + count < 32_000,
            "no free TCP ports between 30000 and 32000"
        );
        if (base..base + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

/// The trace of FLOWS connections, written into `dir`.
fn trace(dir: &Path) -> (PathBuf, Vec<flows::Flow>) {
    let fl = flows::flows(FLOWS, 60);
    let path = dir.join("flows.pcap");
    flows::write_trace(&path, &fl).unwrap();
    (path, fl)
}

fn replay(trace: &Path, port: u16) {
    let out = Command::new(UDPSRC)
        .arg("replay")
        .arg(trace)
        .args([
            "--to",
            &format!("127.0.0.1:{port}"),
            "--pps",
            "2000",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udpsrc replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the logs in `dir` hold every flow once and whole.
fn wait_logged(dir: &Path, fl: &[flows::Flow], context: impl Fn() -> String) {
    wait_until(
        "every connection in the logger's conn.log and http.log",
        || flows::check(dir, fl, 0.0, f64::MAX).problems.is_empty(),
        || {
            let problems = flows::check(dir, fl, 0.0, f64::MAX).problems;
            format!(
                "{} problems in {}, e.g. {:?}\n{}",
                problems.len(),
                dir.display(),
                problems.iter().take(5).collect::<Vec<_>>(),
                context()
            )
        },
    );
}

/// The node printed that it sees `peer` (SITE_SCRIPT's line).
fn sees(stdout: &Path, peer: &str) -> bool {
    std::fs::read_to_string(stdout)
        .unwrap_or_default()
        .lines()
        .any(|l| l == format!("ZUS_NODE_UP {peer}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---- zeekctl -------------------------------------------------------------

/// Runs the installed zeekctl on our zeekctl.cfg.
struct Zeekctl {
    python: String,
    script: PathBuf,
    wrapper: PathBuf,
    cfg: PathBuf,
    prefix: PathBuf,
    stopped: bool,
}

/// Hands zeekctl a configuration file of our own: ZeekControl's `version`
/// module holds the path that `ZeekCtl` takes by default, so it is set
/// before zeekctl's main module imports `ZeekCtl`.
const ZEEKCTL_WRAPPER: &str = r#"import os, runpy, sys
prefix, cfg, args = sys.argv[1], sys.argv[2], sys.argv[3:]
for root, dirs, files in os.walk(os.path.join(prefix, "lib")):
    if os.path.basename(root) == "ZeekControl" and "version.py" in files:
        sys.path.insert(0, os.path.dirname(root))
        break
from ZeekControl import version
version.CFGFILE = cfg
sys.argv = [os.path.join(prefix, "bin", "zeekctl")] + args
runpy.run_path(sys.argv[0], run_name="__main__")
"#;

impl Zeekctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.python)
            .arg(&self.wrapper)
            .arg(&self.prefix)
            .arg(&self.cfg)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.python, self.script.display()))
    }
}

impl Drop for Zeekctl {
    fn drop(&mut self) {
        if !self.stopped {
            // A failed test leaves no cluster behind.
            let _ = self.run(&["stop"]);
        }
    }
}

/// zeekctl and the interpreter its script names, or why not.
fn zeekctl_of(z: &Zeek) -> Result<(String, PathBuf), String> {
    let script = z.prefix.join("bin/zeekctl");
    let head = std::fs::read_to_string(&script).map_err(|e| {
        format!(
            "no zeekctl in {}/bin ({e}): Zeek was built without it",
            z.prefix.display()
        )
    })?;
    let shebang = head.lines().next().unwrap_or_default();
    let python = shebang
        .strip_prefix("#!")
        .and_then(|s| s.split_whitespace().last())
        .filter(|p| p.contains("python"))
        .ok_or_else(|| format!("{}: not a Python script ({shebang})", script.display()))?;
    Ok((python.to_string(), script))
}

#[test]
fn zeekctl_deploys_workers_that_share_the_tunnel_and_stops_cleanly() {
    const TEST: &str = "zeekctl_deploys_workers_that_share_the_tunnel_and_stops_cleanly";
    let z = or_skip!(TEST, zeek());
    let (python, script) = or_skip!(TEST, zeekctl_of(z));
    let dir = common::tmpdir("zeekctl");
    let port = common::unique_port();
    let iface = format!("udptunnel::127.0.0.1:{port}:vxlan:workers=2");
    for d in ["etc", "spool", "logs", "site"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/node.cfg"),
        format!(
            "[logger-1]\ntype=logger\nhost=localhost\n\n\
             [manager]\ntype=manager\nhost=localhost\n\n\
             [proxy-1]\ntype=proxy\nhost=localhost\n\n\
             [worker-1]\ntype=worker\nhost=localhost\ninterface={iface}\n\
             lb_method=custom\nlb_procs=2\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("etc/networks.cfg"), "10.0.0.0/8 lab clients\n").unwrap();
    std::fs::write(dir.join("site/zus-deploy.zeek"), SITE_SCRIPT).unwrap();
    let d = dir.display();
    let cfg = dir.join("zeekctl.cfg");
    std::fs::write(
        &cfg,
        format!(
            "SpoolDir = {d}/spool\nLogDir = {d}/logs\nCfgDir = {d}/etc\n\
             BrokerDBDir = {d}/spool/brokerstore\nFileExtractDir = {d}/spool/extract_files\n\
             SitePolicyPath = {d}/site\nSitePolicyScripts = zus-deploy.zeek\n\
             ZeekPort = {}\nMetricsPort = 0\nUseWebSocket = 0\nCompressLogs = 0\n\
             StatsLogEnable = 0\nenv_vars = ZEEK_PLUGIN_PATH={}\n",
            tcp_ports(10),
            z.plugin_dir.display()
        ),
    )
    .unwrap();
    let wrapper = dir.join("zeekctl-on.py");
    std::fs::write(&wrapper, ZEEKCTL_WRAPPER).unwrap();
    let mut ctl = Zeekctl {
        python,
        script,
        wrapper,
        cfg,
        prefix: z.prefix.clone(),
        stopped: false,
    };

    let out = ctl.run(&["deploy"]);
    assert!(out.status.success(), "zeekctl deploy: {}", text(&out));
    let spool = dir.join("spool");
    let node_out = |n: &str| spool.join(n).join("stdout.log");
    let context = || {
        ["worker-1-1", "worker-1-2", "logger-1"]
            .iter()
            .map(|n| {
                let err = std::fs::read_to_string(spool.join(n).join("stderr.log"));
                format!("{n} stderr: {}\n", err.unwrap_or_default())
            })
            .collect::<String>()
    };
    wait_until(
        "both workers bound to the port and in touch with the logger",
        || {
            bound_sockets(port) == 2
                && ["worker-1-1", "worker-1-2"]
                    .iter()
                    .all(|w| sees(&node_out(w), "logger-1"))
        },
        || format!("{} sockets bound\n{}", bound_sockets(port), context()),
    );
    let (trace, fl) = trace(&dir);
    replay(&trace, port);
    wait_logged(&spool.join("logger-1"), &fl, context);

    let out = ctl.run(&["stop"]);
    ctl.stopped = true;
    assert!(out.status.success(), "zeekctl stop: {}", text(&out));
    let said = text(&out).to_lowercase();
    assert!(
        !said.contains("error") && !said.contains("crash") && !said.contains("fail"),
        "zeekctl stop: {said}"
    );
    let status = text(&ctl.run(&["status"]));
    for node in ["logger-1", "manager", "proxy-1", "worker-1-1", "worker-1-2"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(node) && l.contains("stopped")),
            "{node} not stopped: {status}"
        );
    }
    assert_eq!(bound_sockets(port), 0, "the workers' sockets are closed");
    // What zeekctl archived on stop holds each connection once, too.
    let archived = |name: &str| {
        let mut rows = Vec::new();
        let mut dirs = vec![dir.join("logs")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                // Not through links: LogDir/current points into the spool.
                let Ok(kind) = e.file_type() else { continue };
                let p = e.path();
                let file = e.file_name().to_string_lossy().to_string();
                if kind.is_dir() {
                    dirs.push(p);
                } else if kind.is_file()
                    && file.starts_with(&format!("{name}."))
                    && file.ends_with(".log")
                {
                    rows.extend(flows::read_log(&p));
                }
            }
        }
        rows
    };
    let v = flows::check_rows(&archived("conn"), &archived("http"), &fl, 0.0, f64::MAX);
    assert!(
        v.problems.is_empty(),
        "archived logs in {}/logs: {:?}",
        d,
        v.problems.iter().take(5).collect::<Vec<_>>()
    );
}

// ---- zeek-systemd-generator ------------------------------------------------

/// What a unit (with its drop-ins) says to run, and how.
#[derive(Debug, Default)]
struct Unit {
    env: BTreeMap<String, String>,
    workdir: Option<PathBuf>,
    exec: Vec<String>,
}

/// Reads `<name>` (an instance like `zeek-worker@2.service` reads its
/// template) and its `.d/*.conf` drop-ins, with `%i` put in.
fn load_unit(dir: &Path, name: &str) -> Unit {
    let (file, instance) = match name.split_once('@') {
        Some((pre, rest)) => (
            format!("{pre}@.service"),
            rest.trim_end_matches(".service").to_string(),
        ),
        None => (name.to_string(), String::new()),
    };
    let mut texts = vec![std::fs::read_to_string(dir.join(&file)).unwrap()];
    let mut dropins: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("{name}.d")))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    dropins.sort();
    texts.extend(dropins.iter().map(|p| std::fs::read_to_string(p).unwrap()));
    let mut unit = Unit::default();
    for line in texts.iter().flat_map(|t| t.lines()) {
        let line = line.replace("%i", &instance);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "Environment" => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                unit.env.insert(k.to_string(), v.to_string());
            }
            "WorkingDirectory" => unit.workdir = Some(PathBuf::from(value)),
            "ExecStartPre" | "ExecStart" if value.is_empty() => unit.exec.clear(),
            "ExecStartPre" | "ExecStart" => unit.exec.push(value.to_string()),
            _ => {}
        }
    }
    unit
}

/// A drop-in `50-plugin-path.conf` with ZEEK_PLUGIN_PATH for every Zeek
/// unit zeek.target wants.
fn add_plugin_path_dropins(units: &Path, plugin_dir: &Path) {
    for e in std::fs::read_dir(units.join("zeek.target.wants"))
        .unwrap()
        .flatten()
    {
        let d = units.join(format!("{}.d", e.file_name().to_string_lossy()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("50-plugin-path.conf"),
            format!(
                "[Service]\nEnvironment=ZEEK_PLUGIN_PATH={}\n",
                plugin_dir.display()
            ),
        )
        .unwrap();
    }
}

/// Splits an ExecStart line into words as systemd does for these (no
/// quoting in what the generator writes), `${VAR}` as one word.
fn words(cmd: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    cmd.trim_start_matches(['-', '@', '+', '!'])
        .split_whitespace()
        .map(
            |w| match w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                Some(var) => env.get(var).cloned().unwrap_or_default(),
                None => w.to_string(),
            },
        )
        .collect()
}

/// Runs a unit's first command in its environment and working directory,
/// output to files there.
fn start_unit(unit: &Unit, log_dir: &Path) -> Child {
    let argv = words(&unit.exec[0], &unit.env);
    let dir = unit
        .workdir
        .clone()
        .unwrap_or_else(|| log_dir.to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    Command::new(&argv[0])
        .args(&argv[1..])
        .envs(&unit.env)
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(&dir)
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// Started units, killed if the test ends before they are stopped.
struct Running(Vec<(String, Child)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn systemd_generator_units_started_by_hand_log_every_connection_once() {
    const TEST: &str = "systemd_generator_units_started_by_hand_log_every_connection_once";
    let z = or_skip!(TEST, zeek());
    let generator = z.prefix.join("bin/zeek-systemd-generator");
    if !generator.is_file() {
        skip_or_fail(
            TEST,
            &format!("no {} (Zeek 8.1 or later ships it)", generator.display()),
        );
        return;
    }
    let dir = common::tmpdir("systemd");
    // base_dir: links to the installed bin/ and share/, a scratch var/.
    let base = dir.join("prefix");
    std::fs::create_dir_all(base.join("bin")).unwrap();
    for e in std::fs::read_dir(z.prefix.join("bin")).unwrap().flatten() {
        std::os::unix::fs::symlink(e.path(), base.join("bin").join(e.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(z.prefix.join("share"), base.join("share")).unwrap();
    let site = dir.join("zus-deploy.zeek");
    std::fs::write(&site, SITE_SCRIPT).unwrap();
    let port = common::unique_port();
    let iface = format!("udptunnel::127.0.0.1:{port}:vxlan:workers=2");
    let conf = dir.join("zeek.conf");
    std::fs::write(
        &conf,
        format!(
            "manager = 1\nloggers = 1\nproxies = 1\nuser = root\ngroup = root\n\
             archiver = 0\nport = {}\nmetrics_port = 0\naddress = 127.0.0.1\n\
             args = {}\nenv = ZEEK_PLUGIN_PATH={}\nbase_dir = {}\n\
             interface = {iface}\nworkers = 2\n",
            tcp_ports(10),
            site.display(),
            z.plugin_dir.display(),
            base.display()
        ),
    )
    .unwrap();
    let units = dir.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let out = Command::new(&generator)
        .arg("--config")
        .arg(&conf)
        .arg(&units)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zeek-systemd-generator: {}",
        text(&out)
    );
    // Zeek 8's generator has no `env` key (it says it ignores it): there an
    // operator passes the plugin path in a drop-in, as the generated units
    // ask ("Use drop-in files instead!"). An installed plugin needs neither.
    let ignores_env = text(&out).contains("unknown key 'env'");
    if ignores_env {
        add_plugin_path_dropins(&units, &z.plugin_dir);
    }

    // The interface reaches each worker unchanged.
    for w in 1..=2 {
        let unit = load_unit(&units, &format!("zeek-worker@{w}.service"));
        assert_eq!(unit.env.get("INTERFACE"), Some(&iface), "{unit:?}");
    }
    // zeek-setup.service: working directories and the cluster layout.
    for cmd in load_unit(&units, "zeek-setup.service").exec {
        let argv = words(&cmd, &BTreeMap::new());
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(out.status.success(), "zeek-setup: {cmd}: {}", text(&out));
    }
    let mut wanted: Vec<String> = std::fs::read_dir(units.join("zeek.target.wants"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".service") && n != "zeek-setup.service")
        .collect();
    // Manager, loggers and proxies before workers, as the units' After= say.
    wanted.sort_by_key(|n| (n.starts_with("zeek-worker"), n.clone()));
    for n in [
        "zeek-manager.service",
        "zeek-logger@1.service",
        "zeek-proxy@1.service",
    ] {
        assert!(wanted.iter().any(|w| w == n), "{n} not in {wanted:?}");
    }
    let mut running = Running(Vec::new());
    for n in &wanted {
        running
            .0
            .push((n.clone(), start_unit(&load_unit(&units, n), &dir)));
    }
    let spool = base.join("var/spool/zeek");
    let context = || {
        wanted
            .iter()
            .map(|n| {
                let unit = load_unit(&units, n);
                let wd = unit.workdir.unwrap_or_default();
                let err = std::fs::read_to_string(wd.join("stderr.log")).unwrap_or_default();
                format!("{n} ({}) stderr: {err}\n", wd.display())
            })
            .collect::<String>()
    };
    let workers: Vec<PathBuf> = wanted
        .iter()
        .filter(|n| n.starts_with("zeek-worker"))
        .map(|n| load_unit(&units, n).workdir.unwrap_or_default())
        .collect();
    assert_eq!(workers.len(), 2, "{wanted:?}");
    wait_until(
        "both workers bound to the port and in touch with the logger",
        || {
            bound_sockets(port) == 2
                && workers
                    .iter()
                    .all(|w| sees(&w.join("stdout.log"), "logger-1"))
        },
        || format!("{} sockets bound\n{}", bound_sockets(port), context()),
    );
    let (trace, fl) = trace(&dir);
    replay(&trace, port);
    wait_logged(&spool.join("logger-1"), &fl, context);

    // Stop as systemd does, workers first: SIGTERM; every process exits,
    // and successfully.
    for (n, c) in running.0.iter_mut().rev() {
        // SAFETY: signalling a child we started and have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{n} did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "{n} exited with {status}: {}", context());
    }
    running.0.clear();
}
