//! Flow-true balancing across the workers sharing a port: a classic BPF
//! program for the SO_REUSEPORT group (SO_ATTACH_REUSEPORT_CBPF, no
//! privileges needed) that picks a socket from a symmetric hash of the
//! *inner* packet's addresses and ports, so both directions of a connection
//! reach the same worker whatever outer source ports the mirror used.
//!
//! The program sees the UDP payload (offset 0 is the first tunnel byte) and
//! returns a socket index in bind order. It follows the tunnel to the inner
//! IPv4 or IPv6 header (through Ethernet and up to two VLAN tags where
//! there are any, and over IPv6 extension headers), and computes
//! [`FlowKey::hash`](crate::flow::FlowKey::hash): it XORs the addresses
//! and, for TCP, UDP and SCTP outside fragments, the two ports (XOR does
//! not care about direction), mixes the result and takes it modulo the
//! number of workers. What it cannot parse goes to worker 0, and so does a
//! datagram too short for a load (the kernel ends the program with 0 then).
//! [`worker`] is the same choice in Rust, and tests/balance.rs holds the
//! two together. The program trusts the inner length fields, which the
//! flow key checks: only packets whose lengths lie can go apart.

use crate::flow::{FlowKey, MIX_MULTIPLIER, MIX_ROUNDS};
use crate::link::LinkType;
use crate::path::Encap;
use crate::wire::ethernet::{self, MAX_TAGS, TAGS};
use crate::wire::geneve::{PROTO_ETHERNET, PROTO_IPV4, PROTO_IPV6};
use crate::wire::ip::{DEST_OPTS, HOP_BY_HOP, MAX_EXT_HEADERS, ROUTING, SCTP, TCP, UDP};
use crate::wire::{Geneve, Ipv6, Udp, Vxlan};

/// One classic BPF instruction.
pub type Insn = libc::sock_filter;

// Opcode pieces (linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const ADD: u16 = 0x00;
const MUL: u16 = 0x20;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const K: u16 = 0x00;
const X: u16 = 0x08;
const RET_A: u16 = 0x10;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

// Scratch memory slots.
const M_IP: u32 = 0; // offset of the inner IP header
const M_HASH: u32 = 1; // running hash
const M_TMP: u32 = 2;

type Label = usize;

enum Op {
    Insn(u16, u32),
    /// A == k ? then : else (None: the next instruction).
    Jeq(u32, Option<Label>, Option<Label>),
    Goto(Label),
    Mark(Label),
}

/// A few dozen instructions with named jump targets.
#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }
    fn i(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Insn(code, k));
    }
    fn jeq(&mut self, k: u32, then: Option<Label>, other: Option<Label>) {
        self.ops.push(Op::Jeq(k, then, other));
    }
    fn goto(&mut self, l: Label) {
        self.ops.push(Op::Goto(l));
    }
    fn mark(&mut self, l: Label) {
        self.ops.push(Op::Mark(l));
    }

    /// Turns labels into relative jumps.
    fn finish(self) -> Vec<Insn> {
        let mut at = vec![0usize; self.labels];
        let mut n = 0;
        for op in &self.ops {
            match op {
                Op::Mark(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for op in self.ops {
            let here = out.len();
            // Jumps count from the instruction after this one; all are forward.
            let rel = |l: Option<Label>| l.map_or(0, |l| at[l] - here - 1);
            let insn = match op {
                Op::Mark(_) => continue,
                Op::Insn(code, k) => (code, 0, 0, k),
                Op::Jeq(k, t, f) => {
                    // ok: a program's shape depends on the encapsulation and
                    // link type only, and the tests build every shape.
                    debug_assert!(rel(t).max(rel(f)) <= 255, "a cBPF jump too long");
                    (JMP | JEQ | K, rel(t), rel(f), k)
                }
                Op::Goto(l) => (JMP | JA, 0, 0, rel(Some(l)) as u32),
            };
            out.push(Insn {
                code: insn.0,
                jt: insn.1 as u8,
                jf: insn.2 as u8,
                k: insn.3,
            });
        }
        out
    }
}

/// The program for an encapsulation and the path's link type, spreading
/// flows over `workers` sockets (at least 1).
pub fn program(encap: Encap, link: LinkType, workers: u32) -> Vec<Insn> {
    let mut a = Asm::default();
    let [eth, ip, ipv4, ipv6, ports, mix, worker0] = [(); 7].map(|()| a.label());
    tunnel(&mut a, encap, link, [eth, ip, worker0]);
    a.mark(eth);
    ethernet(&mut a, worker0);
    a.goto(ip);
    // Here, before the long IP part: a jump reaches 255 instructions at
    // most. The kernel's check that memory is stored before it is loaded
    // goes on past a return, so what follows one must store first.
    a.mark(worker0);
    a.i(RET | K, 0);
    // IP at X: the version decides.
    a.mark(ip);
    a.i(STX, M_IP);
    a.i(LD | B | IND, 0);
    a.i(ALU | RSH | K, 4);
    a.jeq(4, Some(ipv4), None);
    a.jeq(6, Some(ipv6), None);
    a.i(RET | K, 0);
    a.mark(ipv4);
    ipv4_fields(&mut a, ports, mix);
    a.mark(ipv6);
    ipv6_fields(&mut a, ports, mix);
    // Ports at X: hash ^= sport ^ dport.
    a.mark(ports);
    a.i(LD | H | IND, 0);
    a.i(ST, M_TMP);
    a.i(LD | H | IND, 2);
    a.i(LDX | W | MEM, M_TMP);
    a.i(ALU | XOR | X, 0);
    a.i(LDX | W | MEM, M_HASH);
    a.i(ALU | XOR | X, 0);
    a.i(ST, M_HASH);
    // Mix the bits as FlowKey::hash does, then pick the worker.
    a.mark(mix);
    a.i(LD | MEM, M_HASH);
    for _ in 0..MIX_ROUNDS {
        a.i(ST, M_TMP);
        a.i(ALU | RSH | K, 16);
        a.i(LDX | W | MEM, M_TMP);
        a.i(ALU | XOR | X, 0);
        a.i(ALU | MUL | K, MIX_MULTIPLIER);
    }
    a.i(ST, M_TMP);
    a.i(ALU | RSH | K, 16);
    a.i(LDX | W | MEM, M_TMP);
    a.i(ALU | XOR | X, 0);
    a.i(ALU | MOD | K, workers.max(1));
    a.i(RET | RET_A, 0);
    a.finish()
}

/// Leaves the inner packet's offset in X and goes on to `eth` or `ip` (or
/// `worker0`), by the encapsulation.
fn tunnel(a: &mut Asm, encap: Encap, link: LinkType, [eth, ip, worker0]: [Label; 3]) {
    match encap {
        Encap::Vxlan => {
            a.i(LDX | W | IMM, Vxlan::LEN as u32);
            a.goto(eth);
        }
        Encap::Raw | Encap::Skip(_) => {
            let skip = if let Encap::Skip(n) = encap {
                u32::from(n)
            } else {
                0
            };
            a.i(LDX | W | IMM, skip);
            a.goto(if link == LinkType::En10Mb { eth } else { ip });
        }
        Encap::Geneve | Encap::GeneveVxlan => {
            a.i(LD | B | ABS, 0); // X = 8 + 4 * option words
            a.i(ALU | AND | K, 0x3f);
            a.i(ALU | LSH | K, 2);
            a.i(ALU | ADD | K, Geneve::BASE_LEN as u32);
            a.i(MISC | TAX, 0);
            if encap == Encap::Geneve {
                a.i(LD | H | ABS, 2); // protocol type
                a.jeq(PROTO_ETHERNET.into(), Some(eth), None);
                a.jeq(PROTO_IPV4.into(), Some(ip), None);
                a.jeq(PROTO_IPV6.into(), Some(ip), Some(worker0));
            } else {
                tunnel_ip_udp_vxlan(a, worker0);
            }
        }
    }
}

/// geneve+vxlan: steps X over IP and UDP, then VXLAN, to the Ethernet
/// frame. The tunnel's own IPv6 header is taken to have no extension
/// headers, as tunnel endpoints write it.
fn tunnel_ip_udp_vxlan(a: &mut Asm, worker0: Label) {
    let over = (Udp::HEADER_LEN + Vxlan::LEN) as u32;
    let v4 = a.label();
    a.i(LD | B | IND, 0);
    a.i(ALU | RSH | K, 4);
    a.jeq(4, Some(v4), None);
    a.jeq(6, None, Some(worker0));
    a.i(MISC | TXA, 0);
    a.i(ALU | ADD | K, Ipv6::HEADER_LEN as u32 + over);
    a.i(MISC | TAX, 0);
    let eth = a.label();
    a.goto(eth);
    a.mark(v4);
    a.i(LD | B | IND, 0);
    a.i(ALU | AND | K, 0x0f);
    a.i(ALU | LSH | K, 2);
    a.i(ALU | ADD | K, over);
    a.i(ALU | ADD | X, 0);
    a.i(MISC | TAX, 0);
    a.mark(eth);
}

/// Ethernet at X, with up to MAX_TAGS VLAN tags: on to the IP header
/// that follows, or to `worker0`.
fn ethernet(a: &mut Asm, worker0: Label) {
    let [etype, known] = [(); 2].map(|()| a.label());
    a.i(LD | H | IND, 12);
    for _ in 0..MAX_TAGS {
        let tag = a.label();
        a.jeq(TAGS[0].into(), Some(tag), None);
        a.jeq(TAGS[1].into(), None, Some(etype));
        a.mark(tag);
        a.i(MISC | TXA, 0);
        a.i(ALU | ADD | K, 4);
        a.i(MISC | TAX, 0);
        a.i(LD | H | IND, 12);
    }
    a.mark(etype);
    a.jeq(ethernet::IPV4.into(), Some(known), None);
    a.jeq(ethernet::IPV6.into(), None, Some(worker0));
    a.mark(known);
    a.i(MISC | TXA, 0);
    a.i(ALU | ADD | K, ethernet::HEADER_LEN as u32);
    a.i(MISC | TAX, 0);
}

/// IPv4 at M_IP (and X): hash = src ^ dst; on to `ports` with X at the
/// ports of TCP, UDP and SCTP when this is no fragment, else to `mix`.
fn ipv4_fields(a: &mut Asm, ports: Label, mix: Label) {
    a.i(LD | W | IND, 12);
    a.i(ST, M_TMP);
    a.i(LD | W | IND, 16);
    a.i(LDX | W | MEM, M_TMP);
    a.i(ALU | XOR | X, 0);
    a.i(ST, M_HASH);
    a.i(LDX | W | MEM, M_IP);
    let with_ports = a.label();
    a.i(LD | B | IND, 9);
    protocols_with_ports(a, with_ports, mix);
    a.mark(with_ports);
    a.i(LD | H | IND, 6); // more fragments, fragment offset
    a.i(ALU | AND | K, 0x3fff);
    a.jeq(0, None, Some(mix));
    a.i(LD | B | IND, 0);
    a.i(ALU | AND | K, 0x0f);
    a.i(ALU | LSH | K, 2);
    a.i(ALU | ADD | X, 0);
    a.i(MISC | TAX, 0);
    a.goto(ports);
}

/// IPv6 at M_IP: hash = XOR of the eight address words; then a walk over
/// up to MAX_EXT_HEADERS extension headers, as the IPv6 view walks them,
/// to the ports of TCP, UDP and SCTP (to `ports`). A Fragment header, or
/// anything else, goes to `mix`.
fn ipv6_fields(a: &mut Asm, ports: Label, mix: Label) {
    a.i(LD | IMM, 0);
    a.i(ST, M_HASH);
    for word in 0..8 {
        a.i(LDX | W | MEM, M_IP);
        a.i(LD | W | IND, 8 + 4 * word);
        a.i(LDX | W | MEM, M_HASH);
        a.i(ALU | XOR | X, 0);
        a.i(ST, M_HASH);
    }
    // A = next header, X = what follows the fixed header.
    a.i(LDX | W | MEM, M_IP);
    a.i(LD | B | IND, 6);
    a.i(ST, M_TMP);
    a.i(MISC | TXA, 0);
    a.i(ALU | ADD | K, Ipv6::HEADER_LEN as u32);
    a.i(MISC | TAX, 0);
    a.i(LD | MEM, M_TMP);
    // Jumps stay short through these two.
    let [to_ports, to_mix] = [(); 2].map(|()| a.label());
    for step in 0..=MAX_EXT_HEADERS {
        let with_ports = a.label();
        a.jeq(TCP.into(), Some(with_ports), None);
        a.jeq(UDP.into(), Some(with_ports), None);
        a.jeq(SCTP.into(), Some(with_ports), None);
        if step == MAX_EXT_HEADERS {
            a.goto(to_mix);
            a.mark(with_ports);
            a.goto(to_ports);
            break;
        }
        let ext = a.label();
        a.jeq(HOP_BY_HOP.into(), Some(ext), None);
        a.jeq(ROUTING.into(), Some(ext), None);
        a.jeq(DEST_OPTS.into(), Some(ext), Some(to_mix));
        a.mark(with_ports);
        a.goto(to_ports);
        // X += (length + 1) * 8; A = its next header.
        a.mark(ext);
        a.i(LD | B | IND, 1);
        a.i(ALU | ADD | K, 1);
        a.i(ALU | LSH | K, 3);
        a.i(ALU | ADD | X, 0);
        a.i(ST, M_TMP);
        a.i(LD | B | IND, 0);
        a.i(LDX | W | MEM, M_TMP);
    }
    a.mark(to_mix);
    a.goto(mix);
    a.mark(to_ports);
    a.goto(ports);
}

/// With the protocol number in A: TCP, UDP and SCTP carry ports.
fn protocols_with_ports(a: &mut Asm, ports: Label, none: Label) {
    a.jeq(TCP.into(), Some(ports), None);
    a.jeq(UDP.into(), Some(ports), None);
    a.jeq(SCTP.into(), Some(ports), Some(none));
}

/// The worker the program picks for a packet of this flow (`None`: a
/// packet it cannot parse), computed in Rust: what tests, and people
/// asking where a flow will go, check the program against.
pub fn worker(flow: Option<&FlowKey>, workers: u32) -> u32 {
    flow.map_or(0, |f| f.hash() % workers.max(1))
}

/// Runs a program over a datagram the way the kernel does, for tests and
/// for people checking where a flow will go; a load out of bounds ends the
/// program with 0, as in the kernel.
pub fn run(prog: &[Insn], data: &[u8]) -> u32 {
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let load = |off: u32, size: usize| -> Option<u32> {
        let start = off as usize;
        let bytes = data.get(start..start.checked_add(size)?)?;
        Some(bytes.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
    };
    let mut pc = 0usize;
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let size = match i.code & 0x18 {
            W => 4,
            H => 2,
            _ => 1,
        };
        match i.code & 0x07 {
            LD => match i.code & 0xe0 {
                ABS => match load(i.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                IND => match load(x.wrapping_add(i.k), size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                MEM => a = mem[i.k as usize & 15],
                _ => a = i.k,
            },
            LDX => match i.code & 0xe0 {
                MEM => x = mem[i.k as usize & 15],
                _ => x = i.k,
            },
            ST => mem[i.k as usize & 15] = a,
            STX => mem[i.k as usize & 15] = x,
            ALU => {
                let v = if i.code & X != 0 { x } else { i.k };
                a = match i.code & 0xf0 {
                    ADD => a.wrapping_add(v),
                    MUL => a.wrapping_mul(v),
                    AND => a & v,
                    LSH => a.wrapping_shl(v),
                    RSH => a.wrapping_shr(v),
                    MOD if v != 0 => a % v,
                    XOR => a ^ v,
                    _ => return 0,
                };
            }
            JMP => {
                if i.code & 0xf0 == JA {
                    pc += i.k as usize;
                } else {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
            }
            RET => return if i.code & RET_A != 0 { a } else { i.k },
            MISC => {
                if i.code & 0xf8 == TXA {
                    a = x;
                } else {
                    x = a;
                }
            }
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel's bpf_check_classic (net/core/filter.c) refuses a
    /// program for, of what this module could get wrong: jumps out of the
    /// program, a last instruction that does not return, memory loaded
    /// before it is stored on some path (a check that runs straight on past
    /// a return), division by a constant 0.
    fn kernel_refusal(prog: &[Insn]) -> Option<String> {
        let n = prog.len();
        let mut masks = vec![u16::MAX; n];
        let mut valid = 0u16;
        for (pc, i) in prog.iter().enumerate() {
            valid &= masks[pc];
            let (jt, jf, k) = (usize::from(i.jt), usize::from(i.jf), i.k as usize);
            match i.code {
                ST | STX => valid |= 1 << k,
                c if (c == LD | MEM || c == LDX | MEM) && valid & (1 << k) == 0 => {
                    return Some(format!("{pc}: M[{k}] loaded before it is stored"));
                }
                c if c == JMP | JA => {
                    if pc + 1 + k >= n {
                        return Some(format!("{pc}: jump out"));
                    }
                    masks[pc + 1 + k] &= valid;
                    valid = u16::MAX;
                }
                c if c & 0x07 == JMP => {
                    if pc + 1 + jt.max(jf) >= n {
                        return Some(format!("{pc}: jump out"));
                    }
                    masks[pc + 1 + jt] &= valid;
                    masks[pc + 1 + jf] &= valid;
                    valid = u16::MAX;
                }
                c if c == ALU | MOD | K && k == 0 => return Some(format!("{pc}: % 0")),
                _ => {}
            }
        }
        match prog.last() {
            Some(i) if i.code & 0x07 == RET => None,
            _ => Some("the last instruction does not return".into()),
        }
    }

    #[test]
    fn the_kernel_would_take_every_program() {
        for token in ["vxlan", "geneve", "geneve+vxlan", "raw", "skip=8"] {
            let encap = Encap::parse_token(token).unwrap();
            for link in [LinkType::En10Mb, LinkType::Raw, LinkType::Ppp] {
                let prog = program(encap, link, 3);
                assert!(prog.len() <= 4096, "{encap} {link:?}: too long");
                assert_eq!(kernel_refusal(&prog), None, "{encap} {link:?}");
            }
        }
    }
}
