//! `pipemesh bench`: benchmarks against real nodes. The nodes run as `pipemesh serve` child
//! processes on loopback, so each one's CPU time is read on its own; the clients are this
//! process's bots ([`crate::bot::client::Bot`]).
//!
//! - [`pipe`]: what the pipe hop between two nodes adds, in one-way latency and CPU per
//!   forwarded packet (`pipemesh bench pipe`, or `cargo bench --bench pipe`).
//! - [`fanout`]: one publisher, N consumers through one node's real edge, as forwarded
//!   packets per core against the machine's SRTP-protect and UDP-send ceiling measured in the
//!   same run (`pipemesh bench fanout`, or `cargo bench --bench fanout`).
//!
//! Helpers: [`process`] (a node process: startup, `/metrics`, CPU time), [`cpu`] (process CPU
//! clocks), [`summary`] (sans-IO: windows, medians, percentiles, the printed report).

pub mod bots;
pub mod cpu;
pub mod fanout;
pub mod pipe;
pub mod process;
pub mod summary;

use clap::{Args, Subcommand};

/// Flags of `pipemesh bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchCommand,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Added latency (p50/p99) and CPU per forwarded packet of the pipe hop: one producer on
    /// node a, N consumers on node b, against the same consumers all on a.
    Pipe(pipe::PipeArgs),
    /// Forwarded packets per core, latency and memory per consumer of one node fanning one
    /// publisher out to N consumers, against this machine's SRTP + UDP send ceiling.
    Fanout(fanout::FanoutArgs),
}

/// Runs `pipemesh bench ...`; nodes are started from this executable. The report goes to
/// stdout, progress and node warnings to stderr.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_tracing();
    match args.which {
        BenchCommand::Pipe(a) => {
            let exe = std::env::current_exe()?;
            let report = pipe::run(&a, &exe)?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Fanout(a) => {
            let exe = std::env::current_exe()?;
            let report = fanout::run(&a, &exe)?;
            println!("{report}");
            Ok(())
        }
    }
}

/// Logs of this process (the bots) to stderr: `PIPEMESH_LOG`, or warnings only. Does nothing
/// if a subscriber is already set.
pub fn init_tracing() {
    let filter = std::env::var("PIPEMESH_LOG").unwrap_or_else(|_| "warn,dtls=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
