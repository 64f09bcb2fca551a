//! `pipemesh bot`: runs N bot peers against a node for a while, printing one statistics line
//! per received stream every report interval and a final summary.
//!
//! The networking lives in [`super::client`]; this file only parses options, schedules the
//! reports and aggregates [`Totals`].

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;

use super::client::{Bot, BotError, BotOptions};
use super::stats::{RecvStats, Totals};

/// Upper bound of `--count`: each bot holds two sockets, a WebSocket and a few tasks.
pub const MAX_BOTS: usize = 1000;

/// Flags of `pipemesh bot`.
#[derive(clap::Args, Debug, Clone)]
pub struct BotArgs {
    /// Signaling URL of the node.
    #[arg(long, default_value = "ws://127.0.0.1:4443")]
    pub server: String,
    /// Room to join.
    #[arg(long, default_value = "pipemesh-bots")]
    pub room: String,
    /// Peer id (random when absent); with --count > 1 each bot appends `-N`.
    #[arg(long)]
    pub peer_id: Option<String>,
    /// What to produce: a comma-separated list of `audio`, `video`, or `none`.
    #[arg(long, default_value = "audio,video")]
    pub produce: String,
    /// Consume the room's producers (`--consume=false` to only publish).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub consume: bool,
    /// Number of bot peers in this process.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Use the node's TCP candidates instead of UDP.
    #[arg(long)]
    pub tcp: bool,
    /// Seconds between statistics lines.
    #[arg(long, default_value_t = 5)]
    pub report_interval: u64,
    /// Room token to join with (`pipemesh token`), for one bot (`--count 1`).
    #[arg(long, env = "PIPEMESH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File with the cluster secret (else PIPEMESH_AUTH_SECRET): each bot mints its own room
    /// token (both grants, valid for the run plus an hour), for nodes that require tokens.
    #[arg(long, env = "PIPEMESH_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<std::path::PathBuf>,
    /// Also write the final statistics as JSON to this file: per bot its join times and per
    /// received stream counters, first packet and keyframe, latency percentiles and long gaps
    /// (times in wall-clock ms since the UNIX epoch). Written when the run ends.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
    /// Send the video as N VP8 simulcast encodings like Chrome's 640x480 camera (1..=3; rids
    /// r0.., lowest first: 160x120 ~100 kbit/s, 320x240 ~300 kbit/s, 640x480 ~900 kbit/s).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=3))]
    pub simulcast: Option<u8>,
}

/// The room token of bot `peer`: `--token` as given, or minted with the cluster secret when
/// there is one (`--auth-secret-file` or `PIPEMESH_AUTH_SECRET`), else none.
fn bot_token(args: &BotArgs, peer: &str) -> Result<Option<String>, BotError> {
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    let secret = crate::config::load_auth_secret(args.auth_secret_file.as_deref())
        .map_err(|e| BotError::InvalidArgument(format!("{e:#}")))?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = crate::auth::Claims {
        room: args.room.clone(),
        peer: peer.to_owned(),
        exp: now + args.duration + 3_600,
        nbf: None,
        iat: Some(now),
        can_publish: true,
        can_subscribe: true,
    };
    crate::auth::mint(&secret, &claims)
        .map(Some)
        .map_err(|e| BotError::InvalidArgument(e.to_string()))
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Bots that joined.
    pub bots: usize,
    /// RTP packets the bots sent.
    pub rtp_sent: u64,
    /// Aggregate over every received stream.
    pub totals: Totals,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary bots={} sent={} {}",
            self.bots, self.rtp_sent, self.totals
        )
    }
}

/// Parses `--produce`: `(audio, video)`.
pub fn parse_produce(s: &str) -> Result<(bool, bool), BotError> {
    let (mut audio, mut video) = (false, false);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.to_ascii_lowercase().as_str() {
            "audio" => audio = true,
            "video" => video = true,
            "none" => {}
            other => {
                return Err(BotError::InvalidArgument(format!(
                    "--produce: unknown kind {other:?} (audio, video, none)"
                )))
            }
        }
    }
    Ok((audio, video))
}

/// Peer ids for `count` bots.
pub fn peer_ids(base: Option<&str>, count: usize) -> Vec<String> {
    let base = base
        .map(str::to_owned)
        .unwrap_or_else(|| format!("bot-{:06x}", rand::rng().random::<u32>() & 0xff_ffff));
    if count == 1 {
        vec![base]
    } else {
        (0..count).map(|i| format!("{base}-{i}")).collect()
    }
}

/// Runs the bots and returns the summary (also printed as the last line).
pub async fn run(args: BotArgs) -> Result<Summary, BotError> {
    if args.count == 0 || args.count > MAX_BOTS {
        return Err(BotError::InvalidArgument(format!(
            "--count must be 1..={MAX_BOTS}"
        )));
    }
    if args.report_interval == 0 {
        return Err(BotError::InvalidArgument(
            "--report-interval must be at least 1".into(),
        ));
    }
    if args.token.is_some() && args.count > 1 {
        return Err(BotError::InvalidArgument(
            "--token is for one bot (a token names one peer): use --auth-secret-file with --count"
                .into(),
        ));
    }
    let (audio, video) = parse_produce(&args.produce)?;
    let mut bots = Vec::with_capacity(args.count);
    let mut joins = Vec::with_capacity(args.count);
    for peer in peer_ids(args.peer_id.as_deref(), args.count) {
        let join_start_ms = unix_ms();
        let mut o = BotOptions::new(&args.server, &args.room, &peer);
        o.audio = audio;
        o.video = video;
        o.consume = args.consume;
        o.tcp = args.tcp;
        o.simulcast = args.simulcast;
        o.token = bot_token(&args, &peer)?;
        bots.push(Bot::join(o).await?);
        joins.push((join_start_ms, unix_ms()));
    }
    println!("joined bots={}", bots.len());
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let interval = Duration::from_secs(args.report_interval);
    let mut next = start + interval;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        report(&bots, start).await;
        next += interval;
    }
    tokio::time::sleep_until(end.into()).await;

    let now = Instant::now();
    let wall_now = unix_ms();
    let mut all: Vec<RecvStats> = Vec::new();
    let mut rtp_sent = 0;
    let mut reports = Vec::with_capacity(bots.len());
    for (b, (join_start_ms, joined_ms)) in bots.iter().zip(joins) {
        let sent = b.send_transport().map_or(0, |t| t.state().rtp_sent);
        let streams = b.stats().await.unwrap_or_default();
        reports.push(BotReport {
            peer_id: b.peer_id().to_owned(),
            join_start_ms,
            joined_ms,
            rtp_sent: sent,
            streams: streams
                .iter()
                .map(|s| ReceivedStream {
                    from_peer: s.consumer.peer_id.clone(),
                    producer_id: s.consumer.producer_id.clone(),
                    stats: s.stats.export(now, wall_now),
                })
                .collect(),
        });
        all.extend(streams.into_iter().map(|s| s.stats));
        rtp_sent += sent;
    }
    if let Some(path) = &args.json_out {
        let report = RunReport {
            server: args.server.clone(),
            room: args.room.clone(),
            bots: reports,
        };
        write_report(path, &report)?;
    }
    let summary = Summary {
        bots: bots.len(),
        rtp_sent,
        totals: Totals::collect(&all, now),
    };
    println!("{summary}");
    for b in bots {
        b.close().await;
    }
    Ok(summary)
}

/// Wall clock in milliseconds since the UNIX epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The JSON report of a run (`--json-out`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// Signaling URL the bots used.
    pub server: String,
    /// Their room.
    pub room: String,
    /// One entry per bot, in join order.
    pub bots: Vec<BotReport>,
}

/// One bot in a [`RunReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BotReport {
    /// Its peer id.
    pub peer_id: String,
    /// When it started joining (before the WebSocket connects), ms since the UNIX epoch.
    pub join_start_ms: u64,
    /// When its join completed (transports and producers created).
    pub joined_ms: u64,
    /// RTP packets its send transport sent.
    pub rtp_sent: u64,
    /// What it received, one entry per consumer.
    pub streams: Vec<ReceivedStream>,
}

/// One consumer of a [`BotReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedStream {
    /// The producing peer.
    pub from_peer: String,
    /// The producer consumed.
    pub producer_id: String,
    /// Its receive statistics.
    #[serde(flatten)]
    pub stats: super::stats::StreamExport,
}

/// Writes `report` to `path` through a temporary file, so a reader never sees half of it.
fn write_report(path: &std::path::Path, report: &RunReport) -> Result<(), BotError> {
    let io = |e: std::io::Error| {
        BotError::InvalidArgument(format!("--json-out {}: {e}", path.display()))
    };
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| BotError::InvalidArgument(format!("--json-out: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

async fn report(bots: &[Bot], start: Instant) {
    let now = Instant::now();
    let t = now.saturating_duration_since(start).as_secs();
    for b in bots {
        let Ok(streams) = b.stats().await else {
            println!("t={t}s peer={} transport closed", b.peer_id());
            continue;
        };
        for s in streams {
            println!(
                "t={t}s peer={} from={} {}",
                b.peer_id(),
                s.consumer.peer_id,
                s.stats.snapshot(now)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_list() {
        assert_eq!(parse_produce("audio,video").unwrap(), (true, true));
        assert_eq!(parse_produce("video").unwrap(), (false, true));
        assert_eq!(parse_produce("none").unwrap(), (false, false));
        assert_eq!(parse_produce(" Audio , ").unwrap(), (true, false));
        assert!(parse_produce("smell").is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(peer_ids(Some("b"), 1), vec!["b"]);
        assert_eq!(peer_ids(Some("b"), 3), vec!["b-0", "b-1", "b-2"]);
        let r = peer_ids(None, 2);
        assert!(r[0].starts_with("bot-") && r[0].ends_with("-0"));
    }

    #[test]
    fn args_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bot: BotArgs,
        }
        let c = Cli::parse_from(["x", "--count", "3", "--tcp", "--consume=false"]);
        assert_eq!(c.bot.count, 3);
        assert!(c.bot.tcp && !c.bot.consume);
        let c = Cli::parse_from(["x", "--produce", "none", "--consume"]);
        assert!(c.bot.consume);
        assert_eq!(c.bot.produce, "none");
        assert_eq!(c.bot.simulcast, None);
        let c = Cli::parse_from(["x", "--simulcast", "3"]);
        assert_eq!(c.bot.simulcast, Some(3));
        for bad in ["0", "4", "x"] {
            assert!(Cli::try_parse_from(["x", "--simulcast", bad]).is_err());
        }
    }
}
