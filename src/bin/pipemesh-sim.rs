//! `pipemesh-sim`: runs a multi-region scenario on the emulated WAN and writes its report
//! (Markdown, JSON and PNG plots). Needs root, /dev/net/tun, etcd and the `pipemesh` and
//! `pipemesh-wan` binaries next to this one (see `simulations/README.md`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use pipemesh::sim::harness::Paths;
use pipemesh::sim::scenarios::{
    self, Common, CongestedSettings, LossySettings, RelayKillSettings, SpeakerSettings, Wan,
};

#[derive(Parser, Debug)]
#[command(
    about = "Multi-region scenarios on one machine: nine nodes in three regions on an emulated WAN, bots as clients; each writes report.md, result.json and PNG plots"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Debug, Clone)]
struct CommonArgs {
    /// Output directory (report.md, result.json, *.png, raw/ bot reports).
    #[arg(long)]
    out: PathBuf,
    /// Listeners in all, spread evenly over the nine nodes.
    #[arg(long, default_value_t = 27)]
    listeners: usize,
    /// Suffix of the namespaces and run directories (so runs can share the machine).
    #[arg(long, default_value = "sim")]
    tag: String,
    /// One-way delay eu<>us, ms.
    #[arg(long, default_value_t = 40.0)]
    eu_us_ms: f64,
    /// One-way delay eu<>ap, ms.
    #[arg(long, default_value_t = 80.0)]
    eu_ap_ms: f64,
    /// One-way delay us<>ap, ms.
    #[arg(long, default_value_t = 100.0)]
    us_ap_ms: f64,
    /// Jitter (±) on every inter-region link, ms.
    #[arg(long, default_value_t = 2.0)]
    jitter_ms: f64,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// 1: one speaker on eu1, N listeners over three regions; tree vs full-mesh routing:
    /// inter-region bytes and copies per producer, join to first frame, latency minus WAN.
    Speaker {
        #[command(flatten)]
        common: CommonArgs,
        /// Routings to run, comma-separated.
        #[arg(long, default_value = "tree,mesh")]
        routing: String,
        /// Seconds between the last join and the measuring window.
        #[arg(long, default_value_t = 5.0)]
        settle_secs: f64,
        /// Seconds of the measuring window.
        #[arg(long, default_value_t = 10.0)]
        window_secs: f64,
    },
    /// 2: the speaker's relay node in a region is killed mid-room: time until that region's
    /// listeners receive media again.
    RelayKill {
        #[command(flatten)]
        common: CommonArgs,
        /// Region whose relay is killed.
        #[arg(long, default_value = "us")]
        region: String,
        /// Seconds between the last join and the kill.
        #[arg(long, default_value_t = 8.0)]
        before_secs: f64,
        /// Seconds measured after the kill.
        #[arg(long, default_value_t = 20.0)]
        after_secs: f64,
    },
    /// 3: loss and delay on one inter-region link: listener loss after NACK/RTX per region.
    LossyLink {
        #[command(flatten)]
        common: CommonArgs,
        /// The link, both directions.
        #[arg(long, default_value = "eu<>us")]
        link: String,
        /// Random loss each way, 0..1.
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// One-way delay on it, ms (50 = 100 ms RTT).
        #[arg(long, default_value_t = 50.0)]
        delay_ms: f64,
        /// Seconds of lossy media measured.
        #[arg(long, default_value_t = 30.0)]
        window_secs: f64,
    },
    /// 4: one inter-region link limited below what the speaker's simulcast needs, with
    /// layer shedding on and off: what the link delivers, listener loss and layers per region.
    CongestedLink {
        #[command(flatten)]
        common: CommonArgs,
        /// The directed link limited (from eu, the speaker's region).
        #[arg(long, default_value = "eu>us")]
        link: String,
        /// Its rate, kbit/s.
        #[arg(long, default_value_t = 900.0)]
        rate_kbps: f64,
        /// Its queue, bytes.
        #[arg(long, default_value_t = 60_000)]
        queue_bytes: u64,
        /// Seconds between the last join and the limit.
        #[arg(long, default_value_t = 6.0)]
        before_secs: f64,
        /// Seconds measured under the limit.
        #[arg(long, default_value_t = 30.0)]
        window_secs: f64,
        /// Runs, comma-separated: on (shedding, the default) and/or off.
        #[arg(long, default_value = "on,off")]
        shedding: String,
    },
}

fn common(a: CommonArgs) -> Result<Common> {
    for (name, v) in [
        ("--eu-us-ms", a.eu_us_ms),
        ("--eu-ap-ms", a.eu_ap_ms),
        ("--us-ap-ms", a.us_ap_ms),
        ("--jitter-ms", a.jitter_ms),
    ] {
        if !(0.0..=10_000.0).contains(&v) {
            bail!("{name} must be within 0..=10000 ms");
        }
    }
    if a.listeners > 9 * pipemesh::bot::run::MAX_BOTS {
        bail!("--listeners: at most {}", 9 * pipemesh::bot::run::MAX_BOTS);
    }
    if a.tag.is_empty() || a.tag.len() > 6 || !a.tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("--tag: 1 to 6 letters or digits (it ends up in interface names)");
    }
    Ok(Common {
        paths: Paths::discover()?,
        out: a.out,
        tag: a.tag,
        listeners: a.listeners,
        wan: Wan {
            eu_us_ms: a.eu_us_ms,
            eu_ap_ms: a.eu_ap_ms,
            us_ap_ms: a.us_ap_ms,
            jitter_ms: a.jitter_ms,
        },
    })
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::Speaker {
            common: c,
            routing,
            settle_secs,
            window_secs,
        } => {
            let routings: Vec<String> = routing.split(',').map(|s| s.trim().to_owned()).collect();
            if routings.is_empty() || routings.iter().any(|r| r != "tree" && r != "mesh") {
                bail!("--routing: a comma-separated list of tree and mesh");
            }
            let c = common(c)?;
            scenarios::speaker(
                &c,
                &SpeakerSettings {
                    routings,
                    settle_secs,
                    window_secs,
                },
            )?;
            println!("{}", c.out.join("report.md").display());
        }
        Scenario::RelayKill {
            common: c,
            region,
            before_secs,
            after_secs,
        } => {
            if !pipemesh::sim::harness::REGIONS.contains(&region.as_str()) || region == "eu" {
                bail!("--region: us or ap (the speaker is in eu)");
            }
            let c = common(c)?;
            scenarios::relay_kill(
                &c,
                &RelayKillSettings {
                    region,
                    before_secs,
                    after_secs,
                },
            )?;
            println!("{}", c.out.join("report.md").display());
        }
        Scenario::LossyLink {
            common: c,
            link,
            loss,
            delay_ms,
            window_secs,
        } => {
            if !(0.0..=1.0).contains(&loss) {
                bail!("--loss must be within 0..=1");
            }
            let c = common(c)?;
            scenarios::lossy_link(
                &c,
                &LossySettings {
                    link,
                    loss,
                    delay_ms,
                    window_secs,
                },
            )?;
            println!("{}", c.out.join("report.md").display());
        }
        Scenario::CongestedLink {
            common: c,
            link,
            rate_kbps,
            queue_bytes,
            before_secs,
            window_secs,
            shedding,
        } => {
            let modes: Result<Vec<bool>> = shedding
                .split(',')
                .map(|m| match m.trim() {
                    "on" => Ok(true),
                    "off" => Ok(false),
                    other => bail!("--shedding: on and/or off, not {other:?}"),
                })
                .collect();
            if !(10.0..=10_000_000.0).contains(&rate_kbps) {
                bail!("--rate-kbps must be within 10..=10000000");
            }
            let c = common(c)?;
            scenarios::congested_link(
                &c,
                &CongestedSettings {
                    link,
                    rate_kbps,
                    queue_bytes,
                    before_secs,
                    window_secs,
                    shedding: modes?,
                },
            )?;
            println!("{}", c.out.join("report.md").display());
        }
    }
    Ok(())
}
