//! `cargo bench --bench pipe [-- FLAGS]`: the pipe benchmark of [`pipemesh::bench::pipe`] with
//! the nodes run from the crate's `pipemesh` binary. The flags are those of
//! `pipemesh bench pipe --help` (e.g. `-- --consumers 50 --windows 10`).
//!
//! Without `--bench` (that is, under `cargo test --benches`), a smoke run: 2 consumers, one
//! short window, so the setup and the checks run but nothing meaningful is timed.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use pipemesh::bench::pipe::{run, PipeArgs};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: PipeArgs,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// A benchmark name filter as `cargo bench FILTER` passes to every bench: the pipe bench
    /// runs only if "pipe" contains it.
    #[arg(hide = true)]
    filter: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.filter.as_deref().is_some_and(|f| !"pipe".contains(f)) {
        return ExitCode::SUCCESS;
    }
    let mut args = cli.args;
    if !cli.bench {
        args.consumers = 2;
        args.windows = 1;
        args.window_ms = 500;
        args.warmup_ms = 200;
    }
    pipemesh::bench::init_tracing();
    match run(&args, Path::new(env!("CARGO_BIN_EXE_pipemesh"))) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipe bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
