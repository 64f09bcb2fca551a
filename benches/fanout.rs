//! `cargo bench --bench fanout [-- FLAGS]`: the fan-out benchmark of
//! [`pipemesh::bench::fanout`] with the node run from the crate's `pipemesh` binary. The flags
//! are those of `pipemesh bench fanout --help` (e.g. `-- --consumers 10,50 --duration-secs 5`).
//!
//! Without `--bench` (that is, under `cargo test --benches`), a smoke run: a tiny limit
//! measurement, 2 consumers, one short window, so the setup and the checks run but nothing
//! meaningful is timed.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use pipemesh::bench::fanout::{run, FanoutArgs};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: FanoutArgs,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// A benchmark name filter as `cargo bench FILTER` passes to every bench: the fan-out bench
    /// runs only if "fanout" contains it.
    #[arg(hide = true)]
    filter: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.filter.as_deref().is_some_and(|f| !"fanout".contains(f)) {
        return ExitCode::SUCCESS;
    }
    let mut args = cli.args;
    if !cli.bench {
        args.consumers = vec![2];
        args.duration_secs = 1;
        args.window_ms = 500;
        args.warmup_ms = 200;
        args.limit_packets = 1000;
        args.limit_reps = 1;
    }
    pipemesh::bench::init_tracing();
    match run(&args, Path::new(env!("CARGO_BIN_EXE_pipemesh"))) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fanout bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
