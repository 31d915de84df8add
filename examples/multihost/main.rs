//! The multi-host lab's helper: writes its multi-flow trace and checks
//! Zeek's logs of it. `examples/multihost/run.sh` drives it.
//!
//!     multihost trace --count 200 --net 50 --out flows.pcap
//!     multihost check --dir logs --count 200 --net 50 [--after TS] [--before TS]
//!                     [--placement out.tsv] [--only-workers w1-]

mod flows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Multi-flow trace and log check for the multi-host lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write `count` complete HTTP connections as an Ethernet pcap.
    Trace {
        #[arg(long)]
        count: usize,
        /// Second octet of the client addresses (10.<net>.x.y).
        #[arg(long, default_value_t = 50)]
        net: u8,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check that conn.log and http.log in `dir` hold each connection once
    /// and whole; exit 1 with what is missing or wrong.
    Check {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 50)]
        net: u8,
        /// Only rows with ts at or after this (seconds since the epoch).
        #[arg(long, default_value_t = 0.0)]
        after: f64,
        /// Only rows with ts before this.
        #[arg(long, default_value_t = f64::MAX)]
        before: f64,
        /// Write "<flow>\t<worker>" lines here.
        #[arg(long)]
        placement: Option<PathBuf>,
        /// Every connection must have been logged by a worker whose name
        /// starts with this.
        #[arg(long)]
        only_workers: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Trace { count, net, out } => {
            if count == 0 || count > flows::MAX_FLOWS {
                eprintln!("--count must be 1 to {}", flows::MAX_FLOWS);
                return ExitCode::from(2);
            }
            match flows::write_trace(&out, &flows::flows(count, net)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Check {
            dir,
            count,
            net,
            after,
            before,
            placement,
            only_workers,
        } => {
            let fl = flows::flows(count, net);
            let mut v = flows::check(&dir, &fl, after, before);
            if let Some(prefix) = &only_workers {
                for (i, w) in &v.placement {
                    if !w.starts_with(prefix.as_str()) {
                        v.problems
                            .push(format!("flow {i} was logged by {w}, not by {prefix}*"));
                    }
                }
            }
            let mut by_worker = std::collections::BTreeMap::<&str, usize>::new();
            for w in v.placement.values() {
                *by_worker.entry(w).or_default() += 1;
            }
            println!("connections logged by worker: {by_worker:?}");
            if let Some(p) = placement {
                let lines: String = v
                    .placement
                    .iter()
                    .map(|(i, w)| format!("{i}\t{w}\n"))
                    .collect();
                if let Err(e) = std::fs::write(&p, lines) {
                    eprintln!("cannot write {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
            if v.problems.is_empty() {
                println!("all {count} connections logged once and whole");
                return ExitCode::SUCCESS;
            }
            eprintln!("{} problems, the first 20:", v.problems.len());
            for p in v.problems.iter().take(20) {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}
