//! Flow-true balancing across the workers sharing a port: a classic BPF
//! program for the SO_REUSEPORT group (SO_ATTACH_REUSEPORT_CBPF, no
//! privileges needed) that picks a socket from a symmetric hash of the
//! *inner* packet's addresses and ports, so both directions of a connection
//! reach the same worker whatever outer source ports the mirror used.
//!
//! The program sees the UDP payload (offset 0 is the first tunnel byte) and
//! returns a socket index in bind order. It follows the tunnel to the inner
//! IPv4 or IPv6 header (through Ethernet and one VLAN tag where there is
//! one), XORs the two addresses and, for TCP, UDP and SCTP, the two ports
//! (XOR does not care about direction), mixes the result and takes it
//! modulo the number of workers. What it cannot parse goes to worker 0, and
//! so does a datagram too short for a load (the kernel ends the program
//! with 0 then).

use crate::link::LinkType;
use crate::path::Encap;

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
                Op::Jeq(k, t, f) => (JMP | JEQ | K, rel(t), rel(f), k),
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
    // Each encapsulation leaves the inner packet's offset in X.
    match encap {
        Encap::Vxlan => {
            a.i(LDX | W | IMM, 8);
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
            a.i(ALU | ADD | K, 8);
            a.i(MISC | TAX, 0);
            if encap == Encap::Geneve {
                a.i(LD | H | ABS, 2); // protocol type
                a.jeq(0x6558, Some(eth), None);
                a.jeq(0x0800, Some(ip), None);
                a.jeq(0x86dd, Some(ip), Some(worker0));
            } else {
                // IP and UDP, then VXLAN, then the Ethernet frame.
                let v4 = a.label();
                a.i(LD | B | IND, 0);
                a.i(ALU | RSH | K, 4);
                a.jeq(4, Some(v4), None);
                a.jeq(6, None, Some(worker0));
                a.i(MISC | TXA, 0);
                a.i(ALU | ADD | K, 40 + 8 + 8);
                a.i(MISC | TAX, 0);
                a.goto(eth);
                a.mark(v4);
                a.i(LD | B | IND, 0);
                a.i(ALU | AND | K, 0x0f);
                a.i(ALU | LSH | K, 2);
                a.i(ALU | ADD | K, 8 + 8);
                a.i(ALU | ADD | X, 0);
                a.i(MISC | TAX, 0);
            }
        }
    }
    // Ethernet at X, at most one VLAN tag: on to the IP header.
    a.mark(eth);
    let etype = a.label();
    a.i(LD | H | IND, 12);
    a.jeq(0x8100, None, Some(etype));
    a.i(MISC | TXA, 0);
    a.i(ALU | ADD | K, 4);
    a.i(MISC | TAX, 0);
    a.i(LD | H | IND, 12);
    a.mark(etype);
    let known = a.label();
    a.jeq(0x0800, Some(known), None);
    a.jeq(0x86dd, None, Some(worker0));
    a.mark(known);
    a.i(MISC | TXA, 0);
    a.i(ALU | ADD | K, 14);
    a.i(MISC | TAX, 0);
    // IP at X: the version decides.
    a.mark(ip);
    a.i(STX, M_IP);
    a.i(LD | B | IND, 0);
    a.i(ALU | RSH | K, 4);
    a.jeq(4, Some(ipv4), None);
    a.jeq(6, Some(ipv6), Some(worker0));
    // IPv4: hash = src ^ dst; ports follow the header for TCP, UDP, SCTP.
    a.mark(ipv4);
    a.i(LD | W | IND, 12);
    a.i(ST, M_TMP);
    a.i(LD | W | IND, 16);
    a.i(LDX | W | MEM, M_TMP);
    a.i(ALU | XOR | X, 0);
    a.i(ST, M_HASH);
    a.i(LDX | W | MEM, M_IP);
    let v4_ports = a.label();
    a.i(LD | B | IND, 9);
    protocols_with_ports(&mut a, v4_ports, mix);
    a.mark(v4_ports);
    a.i(LD | B | IND, 0);
    a.i(ALU | AND | K, 0x0f);
    a.i(ALU | LSH | K, 2);
    a.i(ALU | ADD | X, 0);
    a.i(MISC | TAX, 0);
    a.goto(ports);
    // IPv6: hash = XOR of the eight address words; ports right after the
    // fixed header (extension headers go unhashed).
    a.mark(ipv6);
    a.i(LD | IMM, 0);
    a.i(ST, M_HASH);
    for word in 0..8 {
        a.i(LDX | W | MEM, M_IP);
        a.i(LD | W | IND, 8 + 4 * word);
        a.i(LDX | W | MEM, M_HASH);
        a.i(ALU | XOR | X, 0);
        a.i(ST, M_HASH);
    }
    a.i(LDX | W | MEM, M_IP);
    let v6_ports = a.label();
    a.i(LD | B | IND, 6);
    protocols_with_ports(&mut a, v6_ports, mix);
    a.mark(v6_ports);
    a.i(MISC | TXA, 0);
    a.i(ALU | ADD | K, 40);
    a.i(MISC | TAX, 0);
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
    // Mix the bits (an integer hash's two rounds), then pick the worker.
    a.mark(mix);
    a.i(LD | MEM, M_HASH);
    for _ in 0..2 {
        a.i(ST, M_TMP);
        a.i(ALU | RSH | K, 16);
        a.i(LDX | W | MEM, M_TMP);
        a.i(ALU | XOR | X, 0);
        a.i(ALU | MUL | K, 0x045d_9f3b);
    }
    a.i(ST, M_TMP);
    a.i(ALU | RSH | K, 16);
    a.i(LDX | W | MEM, M_TMP);
    a.i(ALU | XOR | X, 0);
    a.i(ALU | MOD | K, workers.max(1));
    a.i(RET | RET_A, 0);
    a.mark(worker0);
    a.i(RET | K, 0);
    a.finish()
}

/// With the protocol number in A: TCP, UDP and SCTP carry ports.
fn protocols_with_ports(a: &mut Asm, ports: Label, none: Label) {
    a.jeq(6, Some(ports), None);
    a.jeq(17, Some(ports), None);
    a.jeq(132, Some(ports), Some(none));
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
