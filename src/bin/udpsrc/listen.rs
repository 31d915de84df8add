//! `udpsrc listen`: open a plugin path, report once a second, write the
//! inner packets to pcapng, stop on a count, a duration or SIGINT.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zeek_udp_source::pcapng::PcapNgWriter;
use zeek_udp_source::{Config, Error, Packet, ReceiverKind, Reject, Source, Stats};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The plugin path, with or without udp::, e.g. udp::127.0.0.1:4789:vxlan.
    path: String,
    /// Receiver: recvmmsg or io_uring.
    #[arg(long, default_value = "recvmmsg")]
    receiver: String,
    /// Write the decapsulated packets to this pcapng file.
    #[arg(short = 'w', long)]
    write: Option<PathBuf>,
    /// Stop after this many delivered packets.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Socket receive buffer to ask for, in bytes (0: the kernel's default).
    #[arg(long, default_value_t = 16 << 20)]
    rcvbuf: usize,
    /// UDP GRO: take runs of same-size datagrams from one sender in one
    /// receive (recvmmsg only).
    #[arg(long)]
    gro: bool,
    /// No statistics once a second.
    #[arg(long, short)]
    quiet: bool,
    /// Print the final statistics as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let receiver = ReceiverKind::parse(&args.receiver).ok_or_else(|| {
        Failure::input(format!(
            "unknown receiver '{}': expected recvmmsg or io_uring",
            args.receiver
        ))
    })?;
    let config = Config {
        receiver,
        recv_buffer_size: args.rcvbuf,
        udp_gro: args.gro,
        ..Config::default()
    };
    let mut src = Source::open(&args.path, &config).map_err(|e| match e {
        Error::Path(_) | Error::Config { .. } => Failure::input(e.to_string()),
        _ => Failure::runtime(e.to_string()),
    })?;
    if let Some(w) = src.recv_buffer().warning() {
        eprintln!("udpsrc: warning: {w}");
    }
    let mut writer = match &args.write {
        Some(path) => Some(open_writer(path)?),
        None => None,
    };
    if !args.quiet {
        eprintln!(
            "udpsrc: listening on {} ({}, {}), receive buffer {} bytes",
            src.local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            src.path().encap,
            src.receiver_kind().name(),
            src.recv_buffer().granted
        );
    }
    install_signal_handlers();
    let start = Instant::now();
    let deadline = args
        .duration
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let mut ticker = Ticker::new(start);
    let mut delivered = 0u64;
    let mut first_error = None;
    while !STOP.load(Ordering::Relaxed) {
        if args.count.is_some_and(|c| delivered >= c)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        match src.next_packet() {
            Ok(Some(p)) => {
                delivered += 1;
                if let Some(w) = writer.as_mut() {
                    let comment = tunnel_comment(&p);
                    w.write(p.link_type, p.timestamp, p.data, p.wire_len, Some(&comment))
                        .map_err(|e| Failure::runtime(format!("cannot write packets: {e}")))?;
                }
                src.done();
            }
            Ok(None) => wait(src.wait_fd(), deadline),
            Err(e) => {
                // Reported, counted, not fatal unless the source gave up.
                first_error.get_or_insert_with(|| e.to_string());
                if src.failure().is_some() {
                    break;
                }
            }
        }
        if !args.quiet && ticker.due() {
            eprintln!("{}", ticker.line(&src.stats()));
        }
    }
    if let Some(w) = writer {
        w.finish()
            .map_err(|e| Failure::runtime(format!("cannot finish the pcapng file: {e}")))?;
    }
    // Counts what is still queued, so the numbers below are final.
    src.shutdown();
    let stats = src.stats();
    let elapsed = start.elapsed();
    if args.json {
        println!("{}", json(&stats, &src, elapsed));
    } else if !args.quiet {
        eprintln!("{}", summary(&stats, elapsed));
    }
    if let Some(e) = first_error {
        eprintln!(
            "udpsrc: receive errors occurred ({} in all), first: {e}",
            stats.receive_errors
        );
    }
    match src.failure() {
        Some(why) => Err(Failure::runtime(format!("the source stopped: {why}"))),
        None => Ok(()),
    }
}

/// What the tunnel said about a packet, kept as its pcapng comment:
/// `peer=<addr> vxlan_vni=<n> geneve_vni=<n> geneve_options=<n>`.
fn tunnel_comment(p: &Packet<'_>) -> String {
    let mut parts = Vec::new();
    if let Some(peer) = p.peer {
        parts.push(format!("peer={peer}"));
    }
    if let Some(v) = p.vxlan_vni {
        parts.push(format!("vxlan_vni={v}"));
    }
    if let Some(v) = p.geneve_vni {
        parts.push(format!("geneve_vni={v}"));
        parts.push(format!("geneve_options={}", p.geneve_options().count()));
    }
    parts.join(" ")
}

fn open_writer(path: &PathBuf) -> Result<PcapNgWriter<BufWriter<File>>, Failure> {
    let file = File::create(path)
        .map_err(|e| Failure::input(format!("cannot create {}: {e}", path.display())))?;
    PcapNgWriter::new(BufWriter::new(file))
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
}

/// Sleeps until the source's fd is readable, at most 100 ms (so signals,
/// the deadline and the once-a-second line are seen in time).
fn wait(fd: i32, deadline: Option<Instant>) {
    let mut ms = 100i32;
    if let Some(d) = deadline {
        ms = ms.min(d.saturating_duration_since(Instant::now()).as_millis() as i32);
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms.max(0)) };
}

/// The once-a-second statistics line.
struct Ticker {
    next: Instant,
    last: Stats,
    last_at: Instant,
}

impl Ticker {
    fn new(start: Instant) -> Self {
        Ticker {
            next: start + Duration::from_secs(1),
            last: Stats::default(),
            last_at: start,
        }
    }

    fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    fn line(&mut self, s: &Stats) -> String {
        let now = Instant::now();
        let secs = (now - self.last_at).as_secs_f64().max(1e-9);
        let pps = (s.received - self.last.received) as f64 / secs;
        let mbps = (s.bytes - self.last.bytes) as f64 * 8.0 / secs / 1e6;
        self.last = *s;
        self.last_at = now;
        self.next = now + Duration::from_secs(1);
        format!(
            "{pps:.0} pkt/s {mbps:.2} Mbit/s | delivered {} rejected {}{} truncated {} kernel drops {}",
            s.delivered,
            s.rejected_total(),
            reject_detail(s),
            s.truncated,
            s.kernel_drops
        )
    }
}

fn reject_detail(s: &Stats) -> String {
    let parts: Vec<String> = Reject::ALL
        .iter()
        .filter(|r| s.rejected_for(**r) > 0)
        .map(|r| format!("{}={}", r.name(), s.rejected_for(*r)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn summary(s: &Stats, elapsed: Duration) -> String {
    format!(
        "received {} datagrams ({} bytes) in {:.3} s: delivered {}, rejected {}{}, truncated {}, kernel drops {}",
        s.received,
        s.bytes,
        elapsed.as_secs_f64(),
        s.delivered,
        s.rejected_total(),
        reject_detail(s),
        s.truncated,
        s.kernel_drops
    )
}

fn json(s: &Stats, src: &Source, elapsed: Duration) -> String {
    let rejects: Vec<String> = Reject::ALL
        .iter()
        .map(|r| format!("\"{}\":{}", r.name(), s.rejected_for(*r)))
        .collect();
    let rb = src.recv_buffer();
    format!(
        "{{\"path\":\"{}\",\"receiver\":\"{}\",\"received\":{},\"bytes\":{},\"delivered\":{},\"rejected\":{},\"rejected_by_reason\":{{{}}},\"truncated\":{},\"kernel_drops\":{},\"receive_errors\":{},\"coalesced\":{},\"recv_buffer_requested\":{},\"recv_buffer_granted\":{},\"elapsed_s\":{:.6}}}",
        src.path(),
        src.receiver_kind().name(),
        s.received,
        s.bytes,
        s.delivered,
        s.rejected_total(),
        rejects.join(","),
        s.truncated,
        s.kernel_drops,
        s.receive_errors,
        s.coalesced,
        rb.requested,
        rb.granted,
        elapsed.as_secs_f64()
    )
}
