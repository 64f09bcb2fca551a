use anyhow::Result;
use clap::{Parser, Subcommand};
use pipemesh::config::{Config, ServeArgs};

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = Config::load(&args)?;
            println!("{cfg:?}");
            Ok(())
        }
    }
}
