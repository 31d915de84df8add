//! `udpsrc listen`: open a plugin path, report once a second, write the
//! inner packets to pcapng, stop on a count, a duration, SIGINT, SIGTERM or
//! SIGHUP.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zeek_udp_source::path::shown;
use zeek_udp_source::pcapng::PcapNgWriter;
use zeek_udp_source::{
    Config, Encap, Error, LinkType, Packet, ReceiverKind, Reject, Source, SourcePath, Stats, Wait,
};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The plugin path, with or without udp:: or udptunnel::, e.g.
    /// udp::127.0.0.1:4789:vxlan.
    path: String,
    /// Receiver: recvmmsg or io_uring.
    #[arg(long, default_value = "recvmmsg")]
    receiver: String,
    /// Write the decapsulated packets to this pcapng file, with nanosecond
    /// kernel timestamps. The file has one link type, so tcpdump and
    /// `zeek -r` read it: the path's dlt=, except for geneve paths, whose
    /// packets may be Ethernet, IP or PPP by GENEVE's protocol type: their
    /// file is Ethernet, and an IP or PPP packet gets an Ethernet header in
    /// front (zero MACs, EtherType 0x0800, 0x86DD or 0x880B) and `link=raw`
    /// or `link=ppp` in its comment.
    #[arg(short = 'w', long)]
    write: Option<PathBuf>,
    /// Stop after this many delivered packets (1 or more). Exactly N are
    /// written; the rest of the receive that brought the Nth (taken from the
    /// socket already) is counted as delivered or rejected, and reported as
    /// beyond_count.
    #[arg(short = 'c', long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this many seconds: a number greater than 0 and at most
    /// 4294967295, fractions allowed.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = crate::parse_seconds)]
    duration: Option<Duration>,
    /// Socket receive buffer to ask for, in bytes (0: the kernel's default).
    #[arg(long, default_value_t = 16 << 20)]
    rcvbuf: usize,
    /// UDP GRO: take runs of same-size datagrams from one sender in one
    /// receive (recvmmsg only).
    #[arg(long)]
    gro: bool,
    /// Once the socket is bound, write its address (e.g. 127.0.0.1:4789 and
    /// a newline) to this file, atomically (written beside it, then
    /// renamed). A stale file is removed at start.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// No statistics once a second and no summary. The line "udpsrc:
    /// listening on <addr> ..." still goes to stderr once the socket is
    /// bound: it is the readiness signal.
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

/// SIGINT, SIGTERM and SIGHUP all stop listen the same way: the rest of
/// the receive in hand is processed, the file completed, the JSON printed.
fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is signal-safe.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// Why the loop ends, checked before each packet.
struct Limits {
    count: Option<u64>,
    deadline: Option<Instant>,
}

impl Limits {
    fn reached(&self, kept: u64) -> bool {
        STOP.load(Ordering::Relaxed)
            || self.count.is_some_and(|c| kept >= c)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    install_signal_handlers();
    let receiver = ReceiverKind::parse(&args.receiver).ok_or_else(|| {
        Failure::input(format!(
            "unknown receiver '{}': expected recvmmsg or io_uring",
            shown(&args.receiver)
        ))
    })?;
    let config = Config {
        receiver,
        recv_buffer_size: args.rcvbuf,
        udp_gro: args.gro,
        ..Config::default()
    };
    if let Some(ready) = &args.ready_file {
        remove_stale(ready)?;
    }
    let mut src = Source::open(&args.path, &config).map_err(|e| match e {
        Error::Path(_) | Error::Config { .. } => Failure::input(e.to_string()),
        _ => Failure::runtime(e.to_string()),
    })?;
    if let Some(w) = src.recv_buffer().warning() {
        eprintln!("udpsrc: warning: {w}");
    }
    let mut writer = match &args.write {
        Some(path) => Some(open_writer(path, file_link(src.path()))?),
        None => None,
    };
    announce(&src, args.ready_file.as_deref())?;
    let start = Instant::now();
    let limits = Limits {
        count: args.count,
        // None past the clock's range: no deadline is that far.
        deadline: args.duration.and_then(|d| start.checked_add(d)),
    };
    let mut ticker = Ticker::new(start);
    let mut kept = 0u64;
    let mut beyond_count = 0u64;
    let mut first_error = None;
    loop {
        // Once a limit is reached, no more receives; but every datagram
        // already taken from the socket is still decapsulated and counted.
        let stopping = limits.reached(kept);
        if stopping && !src.has_pending() {
            break;
        }
        match src.next_packet() {
            Ok(Some(p)) => {
                keep(&p, &args, &mut kept, &mut beyond_count, writer.as_mut())?;
                src.done();
            }
            // Rejects only so far; the loop's head decides.
            Ok(None) if stopping => {}
            Ok(None) => wait(src.wait_fd(), limits.deadline, src.wait()),
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
        advise(&mut src, args.quiet);
    }
    // Counts what is still queued, so the numbers below are final; packets
    // reorder still holds go out now, in order.
    src.shutdown();
    while let Ok(Some(p)) = src.next_packet() {
        keep(&p, &args, &mut kept, &mut beyond_count, writer.as_mut())?;
        src.done();
    }
    advise(&mut src, args.quiet);
    if let Some(w) = writer {
        w.finish()
            .map_err(|e| Failure::runtime(format!("cannot finish the pcapng file: {e}")))?;
    }
    let stats = src.stats();
    let elapsed = start.elapsed();
    if args.json {
        println!("{}", json(&stats, &src, elapsed, beyond_count));
    } else if !args.quiet {
        eprintln!("{}", summary(&stats, elapsed, beyond_count));
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

/// Counts a delivered packet and writes it, unless past `-c`.
fn keep(
    p: &Packet<'_>,
    args: &Args,
    kept: &mut u64,
    beyond_count: &mut u64,
    writer: Option<&mut PcapNgWriter<BufWriter<File>>>,
) -> Result<(), Failure> {
    if args.count.is_some_and(|c| *kept >= c) {
        *beyond_count += 1;
        return Ok(());
    }
    *kept += 1;
    match writer {
        Some(w) => write_packet(w, p),
        None => Ok(()),
    }
}

/// Says once that the feed needs dedup or reorder, when the source's
/// feed check found so (see `zeek_udp_source::tap::detect`).
fn advise(src: &mut Source, quiet: bool) {
    while let Some(advice) = src.advice() {
        if !quiet {
            eprintln!("udpsrc: note: {advice}");
        }
    }
}

/// The readiness signal: the ready file, then the "listening on" line
/// (always, even with --quiet), once the socket is bound.
fn announce(src: &Source, ready_file: Option<&Path>) -> Result<(), Failure> {
    let addr = src
        .local_addr()
        .map_err(|e| Failure::runtime(format!("cannot read the bound address: {e}")))?;
    if let Some(path) = ready_file {
        write_ready_file(path, &format!("{addr}\n"))?;
    }
    eprintln!(
        "udpsrc: listening on {addr} ({}, {}), receive buffer {} bytes",
        src.path().encap,
        src.receiver_kind().name(),
        src.recv_buffer().granted
    );
    Ok(())
}

fn remove_stale(path: &Path) -> Result<(), Failure> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Failure::input(format!(
            "cannot remove the old ready file {}: {e}",
            shown(&path.display().to_string())
        ))),
        _ => Ok(()),
    }
}

/// Writes `text` beside `path` and renames it there, so a reader sees the
/// whole file or none.
fn write_ready_file(path: &Path, text: &str) -> Result<(), Failure> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let fail = |e: std::io::Error| {
        Failure::input(format!(
            "cannot write the ready file {}: {e}",
            shown(&path.display().to_string())
        ))
    };
    let mut file = File::create(&tmp).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The link type of the file listen writes: what the path delivers, but
/// Ethernet for GENEVE, whose protocol type picks a link type per packet
/// (the writer puts an Ethernet header in front of the others).
fn file_link(path: &SourcePath) -> LinkType {
    match path.encap {
        Encap::Geneve => LinkType::En10Mb,
        _ => path.link_type,
    }
}

fn write_packet(w: &mut PcapNgWriter<BufWriter<File>>, p: &Packet<'_>) -> Result<(), Failure> {
    let mut comment = tunnel_comment(p);
    if p.link_type != w.link_type() {
        // Say what arrived behind the synthesized Ethernet header.
        let sep = if comment.is_empty() { "" } else { " " };
        comment = format!("{comment}{sep}link={}", p.link_type.token());
    }
    w.write(p.link_type, p.timestamp, p.data, p.wire_len, Some(&comment))
        .map_err(|e| Failure::runtime(format!("cannot write packets: {e}")))
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

fn open_writer(path: &Path, link: LinkType) -> Result<PcapNgWriter<BufWriter<File>>, Failure> {
    let name = || shown(&path.display().to_string());
    let file =
        File::create(path).map_err(|e| Failure::input(format!("cannot create {}: {e}", name())))?;
    PcapNgWriter::new(BufWriter::new(file), link)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", name())))
}

/// Sleeps until the source's fd is readable, at most 100 ms (so signals,
/// the deadline and the once-a-second line are seen in time), and no longer
/// than the source asks (held packets' windows).
fn wait(fd: i32, deadline: Option<Instant>, asked: Wait) {
    let Some((fd, mut timeout)) = poll_target(fd, asked) else {
        return;
    };
    if let Some(d) = deadline {
        timeout = timeout.min(d.saturating_duration_since(Instant::now()));
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd (a negative fd is ignored) and a timespec.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// What to sleep on and for how long (under a second): a hold-off sleeps
/// its time out without the fd, which is readable while datagrams gather
/// (watching it would spin); `None`: do not sleep.
fn poll_target(fd: i32, asked: Wait) -> Option<(i32, Duration)> {
    let most = Duration::from_millis(100);
    match asked {
        Wait::Now => None,
        Wait::For(d) => Some((-1, d.min(most))),
        Wait::OnFd => Some((fd, most)),
    }
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
            "{pps:.0} pkt/s {mbps:.2} Mbit/s | delivered {} rejected {}{} truncated {} kernel drops {} deduplicated {} reordered {}",
            s.delivered,
            s.rejected_total(),
            reject_detail(s),
            s.truncated,
            s.kernel_drops,
            s.deduplicated,
            s.reordered
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

fn summary(s: &Stats, elapsed: Duration, beyond_count: u64) -> String {
    let beyond = match beyond_count {
        0 => String::new(),
        n => format!(" ({n} past -c, not written)"),
    };
    format!(
        "received {} datagrams ({} bytes) in {:.3} s: delivered {}{beyond}, rejected {}{}, truncated {}, kernel drops {}, deduplicated {}, reordered {}",
        s.received,
        s.bytes,
        elapsed.as_secs_f64(),
        s.delivered,
        s.rejected_total(),
        reject_detail(s),
        s.truncated,
        s.kernel_drops,
        s.deduplicated,
        s.reordered
    )
}

fn json(s: &Stats, src: &Source, elapsed: Duration, beyond_count: u64) -> String {
    let rejects: Vec<String> = Reject::ALL
        .iter()
        .map(|r| format!("\"{}\":{}", r.name(), s.rejected_for(*r)))
        .collect();
    let rb = src.recv_buffer();
    format!(
        "{{\"path\":\"{}\",\"receiver\":\"{}\",\"received\":{},\"bytes\":{},\"delivered\":{},\"beyond_count\":{},\"rejected\":{},\"rejected_by_reason\":{{{}}},\"truncated\":{},\"kernel_drops\":{},\"receive_errors\":{},\"coalesced\":{},\"deduplicated\":{},\"reordered\":{},\"held\":{},\"recv_buffer_requested\":{},\"recv_buffer_granted\":{},\"elapsed_s\":{:.6}}}",
        src.path(),
        src.receiver_kind().name(),
        s.received,
        s.bytes,
        s.delivered,
        beyond_count,
        s.rejected_total(),
        rejects.join(","),
        s.truncated,
        s.kernel_drops,
        s.receive_errors,
        s.coalesced,
        s.deduplicated,
        s.reordered,
        s.held,
        rb.requested,
        rb.granted,
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_off_sleeps_without_the_fd() {
        let d = Duration::from_micros(300);
        assert_eq!(poll_target(7, Wait::For(d)), Some((-1, d)));
        assert_eq!(
            poll_target(7, Wait::OnFd),
            Some((7, Duration::from_millis(100)))
        );
        assert_eq!(poll_target(7, Wait::Now), None);
    }
}
