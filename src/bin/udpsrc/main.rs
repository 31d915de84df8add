//! `udpsrc`: replay traffic into a UDP tunnel, or listen on one, without
//! Zeek. Built on the same engine as the Zeek plugin.
//!
//! Exit codes: 0 success; 1 a runtime failure (socket, send errors);
//! 2 bad arguments or input (path, trace, address, encapsulation).

mod listen;
mod replay;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zeek_udp_source::path::shown;

/// Replay traffic into a VXLAN/GENEVE tunnel, or listen on one, as the
/// Zeek packet source would.
#[derive(Parser)]
#[command(name = "udpsrc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send every packet of a pcap/pcapng trace as the inner packet of a tunnel.
    Replay(replay::Args),
    /// Receive tunnel traffic on a plugin path, show statistics, write the inner packets.
    Listen(listen::Args),
}

/// A failure with the exit code it maps to.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad arguments or input: exit 2.
    pub fn input(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// Something failed while running: exit 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Listen(args) => listen::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("udpsrc: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The longest --duration: about 136 years, far from the clock's range.
const MAX_SECONDS: f64 = u32::MAX as f64;

/// Parses a number of seconds greater than 0 and at most [`MAX_SECONDS`]
/// (`inf`, `nan`, negative and huge values are refused, not clamped).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let range = format!("expected a number of seconds greater than 0 and at most {MAX_SECONDS}");
    let seconds = parse_positive(text, MAX_SECONDS, &range)?;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{e}: {range}"))
}

/// The largest rate `replay` takes (packets per second, Mbit/s or a
/// speed factor): far above what any sender reaches, far below where the
/// pacing arithmetic loses precision.
const MAX_RATE: f64 = 1e12;

/// Parses a rate greater than 0 and at most [`MAX_RATE`] (`inf`, `nan`,
/// 0 and negative values are refused: none of them paces anything).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let range = format!("expected a number greater than 0 and at most {MAX_RATE:e}");
    parse_positive(text, MAX_RATE, &range)
}

/// A number in (0, max]; `range` says what was expected.
fn parse_positive(text: &str, max: f64, range: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{}' is not a number: {range}", shown(text)))?;
    if !(value > 0.0 && value <= max) {
        return Err(format!("{} is out of range: {range}", shown(text)));
    }
    Ok(value)
}

/// Whether stderr is a terminal (progress output only goes there).
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}
