//! `udpsrc replay`: a trace's packets, wrapped in a tunnel, sent with
//! sendmmsg at a chosen rate from per-flow outer source ports.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use zeek_udp_source::encap::Encoder;
use zeek_udp_source::flow::flow_key;
use zeek_udp_source::trace::{self, TracePacket};
use zeek_udp_source::wire::GeneveOption;
use zeek_udp_source::{Encap, LinkType};

use crate::{Failure, stderr_is_tty};

/// First port of the dynamic range, where per-flow source ports start.
const SPORT_BASE: u16 = 49152;

#[derive(clap::Args)]
pub struct Args {
    /// The trace to replay (pcap or pcapng).
    trace: PathBuf,
    /// Where to send: <ip>:<port>, e.g. 127.0.0.1:4789 or [::1]:6081.
    #[arg(long)]
    to: String,
    /// Tunnel to wrap packets in: vxlan, geneve, geneve+vxlan, raw or skip=<N>.
    #[arg(long, default_value = "vxlan")]
    encap: String,
    /// VNI of the VXLAN header (and of GENEVE, unless --geneve-vni is given).
    #[arg(long, default_value_t = 0)]
    vni: u32,
    /// VNI of the GENEVE header.
    #[arg(long)]
    geneve_vni: Option<u32>,
    /// A GENEVE option as <class>:<type>:<hex data>, e.g. 0x0103:0x80:0a0b0c0d (repeatable).
    #[arg(long = "geneve-option")]
    geneve_options: Vec<String>,
    /// The trace is already tunnel traffic: send each packet's outer UDP payload unchanged.
    #[arg(long)]
    passthrough: bool,
    /// Send everything from this one source port instead of one port per flow.
    #[arg(long)]
    sport_fixed: Option<u16>,
    /// Number of per-flow source ports (from 49152 up).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=16384))]
    sports: u16,
    /// Packets per second.
    #[arg(long, conflicts_with_all = ["mbps", "speed"], allow_negative_numbers = true, value_parser = crate::parse_rate)]
    pps: Option<f64>,
    /// Megabits per second of tunnel payload.
    #[arg(long, conflicts_with = "speed", allow_negative_numbers = true, value_parser = crate::parse_rate)]
    mbps: Option<f64>,
    /// Replay with the trace's own timing, scaled (2 = twice as fast).
    #[arg(long, allow_negative_numbers = true, value_parser = crate::parse_rate)]
    speed: Option<f64>,
    /// Send the trace this many times (1 to 4294967295).
    #[arg(long = "loop", default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    loops: u64,
    /// Datagrams per sendmmsg call, at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print the final figures as one JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

/// One prepared datagram.
struct Datagram {
    bytes: Vec<u8>,
    /// Index into the senders.
    sender: usize,
    /// Offset from the trace's first packet.
    offset: Duration,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let to = parse_target(&args.to)?;
    let encap = Encap::parse_token(&args.encap).ok_or_else(|| {
        Failure::input(format!(
            "unknown encapsulation '{}': expected vxlan, geneve, geneve+vxlan, raw or skip=<N>",
            args.encap
        ))
    })?;
    let packets = trace::read(&args.trace).map_err(|e| Failure::input(e.to_string()))?;
    if packets.is_empty() {
        return Err(Failure::input(format!(
            "{} holds no packets",
            args.trace.display()
        )));
    }
    let encoder = encoder(&args, encap)?;
    let mut senders = Senders::new(to, args.sport_fixed, args.sports);
    let datagrams = prepare(&args, &packets, &encoder, &mut senders)?;
    let report = send(&args, &datagrams, &senders)?;
    report.print(args.json);
    if report.errors > 0 {
        return Err(Failure::runtime(format!(
            "{} datagrams could not be sent (first error: {})",
            report.errors,
            report.first_error.unwrap_or_default()
        )));
    }
    Ok(())
}

fn parse_target(to: &str) -> Result<SocketAddr, Failure> {
    to.parse().map_err(|_| {
        Failure::input(format!(
            "bad target address '{to}': expected <ip>:<port>, e.g. 127.0.0.1:4789 or [::1]:6081"
        ))
    })
}

fn encoder(args: &Args, encap: Encap) -> Result<Encoder, Failure> {
    let mut enc = Encoder::new(encap);
    enc.vxlan_vni = args.vni & 0x00ff_ffff;
    enc.geneve_vni = args.geneve_vni.unwrap_or(args.vni) & 0x00ff_ffff;
    for opt in &args.geneve_options {
        let (class, kind, data) = parse_option(opt).ok_or_else(|| {
            Failure::input(format!(
                "bad GENEVE option '{opt}': expected <class>:<type>:<hex data>, e.g. 0x0103:0x80:0a0b0c0d"
            ))
        })?;
        GeneveOption::emit(class, kind, &data, &mut enc.geneve_options);
    }
    if enc.geneve_options.len() > 252 {
        return Err(Failure::input(
            "GENEVE options add up to more than 252 bytes, the most a header can carry",
        ));
    }
    Ok(enc)
}

fn parse_option(opt: &str) -> Option<(u16, u8, Vec<u8>)> {
    let mut parts = opt.splitn(3, ':');
    let class = parse_int(parts.next()?)?;
    let kind = parse_int(parts.next()?)?;
    let hex = parts.next().unwrap_or("");
    if hex.len() % 2 != 0 || hex.len() > 248 {
        return None;
    }
    let data = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((u16::try_from(class).ok()?, u8::try_from(kind).ok()?, data))
}

fn parse_int(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Builds every datagram up front, so sending is only sending.
fn prepare(
    args: &Args,
    packets: &[TracePacket],
    enc: &Encoder,
    senders: &mut Senders,
) -> Result<Vec<Datagram>, Failure> {
    let first = packets[0].timestamp;
    let mut out = Vec::with_capacity(packets.len());
    let mut skipped = 0usize;
    for p in packets {
        let offset = p.timestamp.saturating_sub(first);
        if args.passthrough {
            let Some(udp) = p.outer_udp() else {
                skipped += 1;
                continue;
            };
            let sender = senders.for_hash(u32::from(udp.src_port()))?;
            // The bytes a short snap length cut off go out as zeros: the
            // datagram keeps its length, so the length fields inside hold.
            let mut bytes = udp.payload().to_vec();
            bytes.resize(udp.payload_len(), 0);
            out.push(Datagram {
                bytes,
                sender,
                offset,
            });
            continue;
        }
        let link = LinkType::from_linktype(p.linktype).ok_or_else(|| {
            Failure::input(format!(
                "{} has link type {}, which udpsrc cannot tunnel: it replays Ethernet (1), raw IP (101) and PPP (9) traces; use --passthrough for captured tunnel traffic",
                args.trace.display(),
                p.linktype
            ))
        })?;
        let (link, inner) = ethernet_if_needed(enc.encap, link, &p.data);
        // Its length on the wire: the trace's, and any Ethernet header added.
        let wire_len = p.orig_len as usize + (inner.len() - p.data.len());
        let hash = flow_key(link, &inner, wire_len).map_or(0, |k| k.hash());
        let sender = senders.for_hash(hash)?;
        let mut bytes = Vec::with_capacity(inner.len() + 96);
        enc.encode(&inner, link, &mut bytes);
        out.push(Datagram {
            bytes,
            sender,
            offset,
        });
    }
    if out.is_empty() {
        return Err(Failure::input(format!(
            "{}: none of its {} packets carries UDP to pass through",
            args.trace.display(),
            packets.len()
        )));
    }
    if skipped > 0 && !args.quiet {
        eprintln!("udpsrc: passthrough skips {skipped} packets that carry no UDP");
    }
    Ok(out)
}

/// VXLAN carries Ethernet: a raw-IP trace gets an Ethernet header in front.
fn ethernet_if_needed(encap: Encap, link: LinkType, data: &[u8]) -> (LinkType, Vec<u8>) {
    let needs = matches!(encap, Encap::Vxlan | Encap::GeneveVxlan) && link == LinkType::Raw;
    if !needs {
        return (link, data.to_vec());
    }
    let ethertype: u16 = if data.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    };
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(data);
    (LinkType::En10Mb, frame)
}

/// Sockets bound to the outer source ports, opened as flows need them.
struct Senders {
    to: SocketAddr,
    fixed: Option<u16>,
    count: u16,
    sockets: Vec<UdpSocket>,
    /// Port slot -> index into `sockets`.
    by_slot: HashMap<u16, usize>,
}

impl Senders {
    fn new(to: SocketAddr, fixed: Option<u16>, count: u16) -> Self {
        Senders {
            to,
            fixed,
            count,
            sockets: Vec::new(),
            by_slot: HashMap::new(),
        }
    }

    /// The sender for a flow hash: one source port per flow, the same for
    /// both directions.
    fn for_hash(&mut self, hash: u32) -> Result<usize, Failure> {
        let slot = match self.fixed {
            Some(_) => 0,
            None => (hash % u32::from(self.count)) as u16,
        };
        if let Some(i) = self.by_slot.get(&slot) {
            return Ok(*i);
        }
        let sock = match self.fixed {
            Some(port) => self.bind(port).map_err(|e| {
                Failure::runtime(format!("cannot send from source port {port}: {e}"))
            })?,
            None => self.bind_in_range(slot)?,
        };
        self.sockets.push(sock);
        self.by_slot.insert(slot, self.sockets.len() - 1);
        Ok(self.sockets.len() - 1)
    }

    /// Binds the slot's port, or the next free one in the range.
    fn bind_in_range(&self, slot: u16) -> Result<UdpSocket, Failure> {
        let mut last = None;
        for step in 0..self.count {
            let port = SPORT_BASE + (slot + step) % self.count;
            match self.bind(port) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::runtime(format!(
            "no free source port in {SPORT_BASE}..{}: {}",
            SPORT_BASE + self.count,
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    fn bind(&self, port: u16) -> io::Result<UdpSocket> {
        let sock = Socket::new(Domain::for_address(self.to), Type::DGRAM, None)?;
        // Send-only sockets: another replay running at the same time may use
        // the same source ports without either failing.
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        // A large send buffer keeps sendmmsg from stalling at full speed.
        let _ = sock.set_send_buffer_size(4 << 20);
        let local: SocketAddr = if self.to.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, port).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, port).into()
        };
        sock.bind(&SockAddr::from(local))?;
        Ok(sock.into())
    }
}

/// What a replay did.
struct Report {
    packets: u64,
    bytes: u64,
    elapsed: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn print(&self, json: bool) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let pps = self.packets as f64 / secs;
        let mbps = self.bytes as f64 * 8.0 / secs / 1e6;
        if json {
            println!(
                "{{\"packets\":{},\"bytes\":{},\"elapsed_s\":{:.6},\"pps\":{:.0},\"mbps\":{:.3},\"errors\":{}}}",
                self.packets, self.bytes, secs, pps, mbps, self.errors
            );
        } else {
            println!(
                "sent {} packets ({} bytes) in {:.3} s: {:.0} pps, {:.2} Mbit/s, {} errors",
                self.packets, self.bytes, secs, pps, mbps, self.errors
            );
        }
    }
}

/// When packet `i` (with `bytes` sent before it) is due, from the start.
fn due(args: &Args, i: u64, bytes: u64, offset: Duration, loop_base: Duration) -> Option<Duration> {
    if let Some(pps) = args.pps {
        return Some(Duration::from_secs_f64(i as f64 / pps));
    }
    if let Some(mbps) = args.mbps {
        return Some(Duration::from_secs_f64(bytes as f64 * 8.0 / (mbps * 1e6)));
    }
    if let Some(speed) = args.speed {
        return Some((loop_base + offset).div_f64(speed));
    }
    None
}

fn send(args: &Args, datagrams: &[Datagram], senders: &Senders) -> Result<Report, Failure> {
    let target = SockAddr::from(senders.to);
    let total = (datagrams.len() as u64).saturating_mul(args.loops);
    let span = datagrams.last().map_or(Duration::ZERO, |d| d.offset);
    let mut progress = Progress::new(total, !args.quiet && stderr_is_tty());
    let mut report = Report {
        packets: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        errors: 0,
        first_error: None,
    };
    let start = Instant::now();
    for round in 0..args.loops {
        // The next round starts one mean gap after the last packet.
        let gap = span / (datagrams.len() as u32).max(1);
        // `round` fits a u32: --loop is at most u32::MAX.
        let loop_base = (span + gap).saturating_mul(round as u32);
        let mut i = 0;
        while i < datagrams.len() {
            let sent_so_far = report.packets + report.errors;
            if let Some(at) = due(
                args,
                sent_so_far,
                report.bytes,
                datagrams[i].offset,
                loop_base,
            ) {
                wait_until(start + at);
            }
            let end = batch_end(
                args,
                datagrams,
                i,
                start,
                sent_so_far,
                report.bytes,
                loop_base,
            );
            let (ok, err) = send_batch(
                &senders.sockets[datagrams[i].sender],
                &target,
                &datagrams[i..end],
            );
            for d in &datagrams[i..i + ok] {
                report.bytes += d.bytes.len() as u64;
            }
            report.packets += ok as u64;
            if let Some(e) = err {
                // The datagram at i + ok failed: count it and go past it.
                report.errors += 1;
                report.first_error.get_or_insert_with(|| e.to_string());
                i += 1;
            }
            i += ok;
            progress.update(report.packets + report.errors);
        }
    }
    report.elapsed = start.elapsed();
    progress.finish();
    Ok(report)
}

/// The batch from `i`: same sender, already due, at most --batch long.
fn batch_end(
    args: &Args,
    datagrams: &[Datagram],
    i: usize,
    start: Instant,
    sent: u64,
    bytes: u64,
    loop_base: Duration,
) -> usize {
    let limit = (i + args.batch as usize).min(datagrams.len());
    let now = start.elapsed();
    let mut end = i + 1;
    let mut b = bytes + datagrams[i].bytes.len() as u64;
    while end < limit && datagrams[end].sender == datagrams[i].sender {
        let n = sent + (end - i) as u64;
        if due(args, n, b, datagrams[end].offset, loop_base).is_some_and(|at| at > now) {
            break;
        }
        b += datagrams[end].bytes.len() as u64;
        end += 1;
    }
    end
}

fn wait_until(t: Instant) {
    let now = Instant::now();
    if t <= now {
        return;
    }
    let left = t - now;
    if left > Duration::from_millis(2) {
        std::thread::sleep(left - Duration::from_millis(1));
    }
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

/// Sends a run of datagrams with sendmmsg; returns how many went out and
/// the error that stopped it, if any.
fn send_batch(sock: &UdpSocket, to: &SockAddr, batch: &[Datagram]) -> (usize, Option<io::Error>) {
    let mut iovs: Vec<libc::iovec> = batch
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.bytes.as_ptr() as *mut libc::c_void,
            iov_len: d.bytes.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = to.len();
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut done = 0;
    while done < msgs.len() {
        // SAFETY: every header points at live iovecs, buffers and address.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs[done..].as_mut_ptr(),
                (msgs.len() - done) as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // Send buffer full: give the kernel a moment, then retry.
                io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                _ => return (done, Some(e)),
            }
        }
        done += n as usize;
    }
    (done, None)
}

/// A progress bar on a terminal, redrawn at most ten times a second.
struct Progress {
    total: u64,
    enabled: bool,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: u64, enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            total,
            enabled,
            start: now,
            last: now,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let frac = done as f64 / self.total.max(1) as f64;
        let filled = (frac * 30.0) as usize;
        let pps = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let _ = write!(
            io::stderr(),
            "\r[{}{}] {:3.0}% {done}/{} packets, {pps:.0} pps ",
            "#".repeat(filled),
            " ".repeat(30 - filled.min(30)),
            frac * 100.0,
            self.total
        );
    }

    fn finish(&self) {
        if self.enabled {
            let _ = writeln!(io::stderr());
        }
    }
}
