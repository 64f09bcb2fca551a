//! The `pipemesh` binary: thin clap front end over the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pipemesh::config::{Config, ServeArgs};
use tracing_subscriber::EnvFilter;

/// pipemesh: a cascading WebRTC SFU.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Run headless bot peers: publish synthetic audio/video and/or consume a room.
    Bot(pipemesh::bot::run::BotArgs),
    /// Create a cluster CA and node certificates for pipes.
    Certs(pipemesh::pipe::certs::CertsArgs),
    /// Print the effective configuration (file, environment and flags merged) as TOML.
    Config(ServeArgs),
    /// Benchmarks against real nodes on loopback (`pipemesh bench pipe`).
    Bench(pipemesh::bench::BenchArgs),
    /// Mint a room token (JWT signed with the cluster secret); prints it on stdout.
    Token(pipemesh::auth::cli::TokenArgs),
    /// List the cluster's nodes, as they report themselves in etcd.
    Nodes(pipemesh::cli::nodes::NodesArgs),
    /// List rooms across the cluster, or show one room's nodes, peers and producers.
    Rooms(pipemesh::cli::rooms::RoomsArgs),
    /// Show the mesh: nodes by region and the pipe links between them (RTT, loss, bitrate and
    /// piped streams each way), as a table, JSON or Graphviz DOT.
    Topology(pipemesh::cli::topology::TopologyArgs),
    /// Ask a node to drain (no new peers; sessions continue) and wait until it does.
    Drain(pipemesh::cli::drain::DrainArgs),
    /// Withdraw a drain request and wait until the node is serving again.
    Undrain(pipemesh::cli::drain::UndrainArgs),
}

fn main() -> std::process::ExitCode {
    // Operator errors are printed as one clear line (with causes), never as a backtrace.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipemesh: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = Config::load(&args)?;
            init_tracing(&cfg.log)?;
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(async move {
                pipemesh::node::run(cfg, shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Bot(args) => {
            init_tracing(
                &std::env::var("PIPEMESH_LOG").unwrap_or_else(|_| "warn,dtls=error".into()),
            )?;
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            // run() prints per-stream lines and the summary itself.
            rt.block_on(pipemesh::bot::run::run(args))?;
            Ok(())
        }
        Command::Certs(args) => {
            pipemesh::pipe::certs::run(args)?;
            Ok(())
        }
        Command::Config(args) => {
            let cfg = Config::load(&args)?;
            print!("{}", toml::to_string(&cfg)?);
            Ok(())
        }
        Command::Bench(args) => pipemesh::bench::run(args),
        Command::Token(args) => {
            println!("{}", pipemesh::auth::cli::run(&args)?);
            Ok(())
        }
        // Operator commands exit with their own codes (0, 1 failed, 2 usage, 3 etcd unreachable).
        Command::Nodes(args) => {
            pipemesh::cli::finish(pipemesh::cli::nodes::run(&args));
            Ok(())
        }
        Command::Rooms(args) => {
            pipemesh::cli::finish(pipemesh::cli::rooms::run(&args));
            Ok(())
        }
        Command::Topology(args) => {
            pipemesh::cli::finish(pipemesh::cli::topology::run(&args));
            Ok(())
        }
        Command::Drain(args) => {
            pipemesh::cli::finish(pipemesh::cli::drain::run_drain(&args));
            Ok(())
        }
        Command::Undrain(args) => {
            pipemesh::cli::finish(pipemesh::cli::drain::run_undrain(&args));
            Ok(())
        }
    }
}

fn init_tracing(filter: &str) -> Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
