//! A multi-flow trace for deployment labs and tests, and the check that
//! Zeek logged each of its connections once and whole.
//!
//! Flow `i` is one complete HTTP exchange over TCP from a client of its own
//! (`10.<net>.<i / 250>.<1 + i % 250>`, port `40000 + i`) to one of eight
//! servers (`192.0.2.<1 + i % 8>:80`). What Zeek must log for it (packets
//! and payload bytes per direction, the URI, the body length) follows from
//! how it is built, so the check compares against the generator, not against
//! numbers written down by hand.
//!
//! Shared by `examples/multihost` (the lab's CLI) and the tests (as
//! `common::flows`, which also builds `common::http_session` with it).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// At most this many flows per trace: client addresses are
/// `10.<net>.<0..=255>.<1..=250>` and client ports `40000 + i` must fit.
pub const MAX_FLOWS: usize = 25_000;

/// One generated connection and what a whole log of it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub server: Ipv4Addr,
    pub uri: String,
    pub body_len: usize,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub orig_pkts: u64,
    pub resp_pkts: u64,
}

impl Flow {
    /// The 5-tuple as conn.log and http.log write it (`id.orig_h`, ...).
    pub fn key(&self) -> (String, u64, String, u64) {
        (
            self.client.to_string(),
            u64::from(self.client_port),
            self.server.to_string(),
            80,
        )
    }
}

/// The flows of a trace: `count` connections from clients in `10.<net>.x.y`.
pub fn flows(count: usize, net: u8) -> Vec<Flow> {
    (0..count.min(MAX_FLOWS))
        .map(|i| {
            let uri = format!("/flow/{i}");
            let body_len = 100 + (i * 37) % 900;
            let (get, resp) = payloads(&uri, body_len);
            Flow {
                client: Ipv4Addr::new(10, net, (i / 250) as u8, 1 + (i % 250) as u8),
                client_port: 40000 + i as u16,
                server: Ipv4Addr::new(192, 0, 2, 1 + (i % 8) as u8),
                uri,
                body_len,
                orig_bytes: get.len() as u64,
                resp_bytes: resp.len() as u64,
                orig_pkts: STEPS.iter().filter(|s| s.0).count() as u64,
                resp_pkts: STEPS.iter().filter(|s| !s.0).count() as u64,
            }
        })
        .collect()
}

fn payloads(uri: &str, body_len: usize) -> (Vec<u8>, Vec<u8>) {
    let get =
        format!("GET {uri} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: zus-multihost\r\n\r\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n{}",
        "x".repeat(body_len)
    );
    (get.into_bytes(), resp.into_bytes())
}

/// Which payload a step carries.
#[derive(Clone, Copy, PartialEq)]
enum Data {
    None,
    Get,
    Resp,
}

/// A TCP exchange: (from the client?, SYN, ACK, FIN, payload).
const STEPS: [(bool, bool, bool, bool, Data); 10] = [
    (true, true, false, false, Data::None),
    (false, true, true, false, Data::None),
    (true, false, true, false, Data::None),
    (true, false, true, false, Data::Get),
    (false, false, true, false, Data::None),
    (false, false, true, false, Data::Resp),
    (true, false, true, false, Data::None),
    (true, false, true, true, Data::None),
    (false, false, true, true, Data::None),
    (true, false, true, false, Data::None),
];

/// The Ethernet frames of one flow, with valid checksums.
pub fn frames(flow: &Flow) -> Vec<Vec<u8>> {
    let (get, resp) = payloads(&flow.uri, flow.body_len);
    let client = ([2, 0, 0, 0, 0, 1], flow.client.octets(), flow.client_port);
    let server = ([2, 0, 0, 0, 0, 2], flow.server.octets(), 80u16);
    http_frames(client, server, &get, &resp)
}

/// An end of a connection: MAC address, IPv4 address, port.
pub type End = ([u8; 6], [u8; 4], u16);

/// The Ethernet frames of a whole TCP exchange (handshake, `get`, `resp`,
/// both FINs) between `client` and `server`, with valid checksums.
pub fn http_frames(client: End, server: End, get: &[u8], resp: &[u8]) -> Vec<Vec<u8>> {
    let (mut cseq, mut sseq) = (1000u32, 5000u32);
    let mut out = Vec::new();
    for (from_client, syn, ack, fin, data) in STEPS {
        let payload: &[u8] = match data {
            Data::None => &[],
            Data::Get => get,
            Data::Resp => resp,
        };
        let (src, dst, seq, ack_no) = if from_client {
            (client, server, cseq, sseq)
        } else {
            (server, client, sseq, cseq)
        };
        let mut b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
            .ipv4(src.1, dst.1, 64)
            .tcp(src.2, dst.2, seq, 64240);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(ack_no);
        }
        if fin {
            b = b.fin();
        }
        if !payload.is_empty() {
            b = b.psh();
        }
        let mut f = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut f, payload).expect("frame fits"); // ok: a Vec grows
        out.push(f);
        let advance = payload.len() as u32 + u32::from(syn) + u32::from(fin);
        if from_client {
            cseq += advance;
        } else {
            sseq += advance;
        }
    }
    out
}

/// Writes the flows one after the other as an Ethernet pcap.
pub fn write_trace(path: &Path, flows: &[Flow]) -> std::io::Result<()> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::fs::File::create(path)?;
    let mut w =
        PcapWriter::with_header(file, PcapHeader::default()).map_err(std::io::Error::other)?;
    for (n, f) in flows.iter().flat_map(frames).enumerate() {
        let ts = Duration::from_micros(1_700_000_000_000_000 + n as u64 * 1000);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// What the logs showed for a set of flows.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Every way the logs fall short, one line each.
    pub problems: Vec<String>,
    /// Flow index to the node that logged it (conn.log's `worker` field,
    /// where the lab adds it).
    pub placement: BTreeMap<usize, String>,
}

/// Reads a JSON log's lines (unparsable lines are skipped: a log being
/// written may end in half a line).
pub fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn key_of(row: &Value) -> Option<(String, u64, String, u64)> {
    Some((
        row.get("id.orig_h")?.as_str()?.to_string(),
        row.get("id.orig_p")?.as_u64()?,
        row.get("id.resp_h")?.as_str()?.to_string(),
        row.get("id.resp_p")?.as_u64()?,
    ))
}

/// Rows of `log` for our flows with `ts` in `[after, before)`, by flow.
fn rows_by_flow<'a>(
    flows: &[Flow],
    log: &'a [Value],
    after: f64,
    before: f64,
) -> BTreeMap<usize, Vec<&'a Value>> {
    let index: BTreeMap<_, _> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key(), i))
        .collect();
    let mut out: BTreeMap<usize, Vec<&Value>> = BTreeMap::new();
    for row in log {
        let ts = row.get("ts").and_then(Value::as_f64).unwrap_or(-1.0);
        if ts < after || ts >= before {
            continue;
        }
        if let Some(&i) = key_of(row).and_then(|k| index.get(&k)) {
            out.entry(i).or_default().push(row);
        }
    }
    out
}

/// Checks that conn.log and http.log in `dir` hold each flow once, whole
/// (both directions, every packet and byte, an orderly close, the HTTP
/// request and its answer), among the rows logged in `[after, before)`.
pub fn check(dir: &Path, flows: &[Flow], after: f64, before: f64) -> Verdict {
    let conn = read_log(&dir.join("conn.log"));
    let http = read_log(&dir.join("http.log"));
    check_rows(&conn, &http, flows, after, before)
}

/// As `check`, on the parsed lines of conn.log and http.log.
pub fn check_rows(
    conn: &[Value],
    http: &[Value],
    flows: &[Flow],
    after: f64,
    before: f64,
) -> Verdict {
    let conns = rows_by_flow(flows, conn, after, before);
    let https = rows_by_flow(flows, http, after, before);
    let mut v = Verdict::default();
    for (i, f) in flows.iter().enumerate() {
        let name = format!("flow {i} {}:{} > {}:80", f.client, f.client_port, f.server);
        match conns.get(&i).map(Vec::as_slice).unwrap_or_default() {
            [] => v.problems.push(format!("{name}: not in conn.log")),
            [row] => {
                let want = [
                    ("conn_state", Value::from("SF")),
                    ("service", Value::from("http")),
                    ("orig_pkts", Value::from(f.orig_pkts)),
                    ("resp_pkts", Value::from(f.resp_pkts)),
                    ("orig_bytes", Value::from(f.orig_bytes)),
                    ("resp_bytes", Value::from(f.resp_bytes)),
                ];
                for (field, value) in want {
                    let got = row.get(field).cloned().unwrap_or(Value::Null);
                    if got != value {
                        v.problems
                            .push(format!("{name}: conn.log {field} is {got}, not {value}"));
                    }
                }
                if let Some(w) = row.get("worker").and_then(Value::as_str) {
                    v.placement.insert(i, w.to_string());
                }
            }
            more => v
                .problems
                .push(format!("{name}: {} rows in conn.log", more.len())),
        }
        match https.get(&i).map(Vec::as_slice).unwrap_or_default() {
            [row] => {
                let want = [
                    ("method", Value::from("GET")),
                    ("uri", Value::from(f.uri.as_str())),
                    ("status_code", Value::from(200)),
                    ("response_body_len", Value::from(f.body_len)),
                ];
                for (field, value) in want {
                    let got = row.get(field).cloned().unwrap_or(Value::Null);
                    if got != value {
                        v.problems
                            .push(format!("{name}: http.log {field} is {got}, not {value}"));
                    }
                }
            }
            rows => v
                .problems
                .push(format!("{name}: {} rows in http.log, not 1", rows.len())),
        }
    }
    v
}
