//! The fan-out benchmark (`pipemesh bench fanout`, or `cargo bench --bench fanout`): one
//! publisher at a fixed packet rate, N consumers with their own SRTP keys, through the real
//! edge (ICE, DTLS, SRTP, UDP sockets) of one `pipemesh serve` process on loopback, against the
//! machine's own ceiling for the same bytes measured first in the same run.
//!
//! 1. **Limit** ([`limit`]), in this process, before any node runs: per-packet cost of the
//!    two things every forwarded packet needs at least once, for 1,200-byte RTP payloads:
//!    - SRTP protect alone: ours ([`crate::srtp::SrtpContext::protect_rtp`], in place) and
//!      webrtc-srtp's `Context::encrypt_rtp`, for AEAD_AES_128_GCM and
//!      AES_CM_128_HMAC_SHA1_80;
//!    - UDP send alone of the protected size over loopback to a bound sink socket that is never
//!      read (the kernel drops what overflows it): `send_to` one datagram per call, and
//!      `sendmmsg` with batches of 32. On loopback the sender's system call also runs the
//!      receive path into the sink's buffer, as it does when the node sends to the bots.
//!
//!    Each runs `--limit-packets` packets, `--limit-reps` times; the median is kept. Rates are
//!    packets per CPU-second of the measuring thread (`CLOCK_THREAD_CPUTIME_ID`), i.e. per core;
//!    the wall-clock rate is printed too. The fan-out ceiling of a profile is
//!    `1 / (1/protect + 1/send)` with our protect and the better send.
//! 2. **Fan-out**, once per `--consumers` value, each with a fresh node: the node's RSS is read
//!    (`/proc/<pid>/status` VmRSS), N consumer bots join (no media yet: idle consumers; RSS
//!    again), then one publisher bot sends VP8 only at `--pps` packets/s (`--fps` frames of
//!    `pps / fps` packets, `--payload` bytes of RTP payload each, no periodic keyframes). When
//!    every consumer receives, after `--warmup-ms`, `--duration-secs` are measured in windows
//!    of `--window-ms`: the node's CPU time (process CPU clock, every thread), the RTP packets
//!    it sent to consumers (`pipemesh_rtp_sent_total`), their mean datagram size (the
//!    `packet_size_bytes` histogram, direction out), this process's CPU (the bots) and the
//!    host's busy time, and the one-way latency of every packet the consumers received (the
//!    bots' payload probes carry the sender's wall clock; publisher and consumers share the
//!    clock). RSS is read again at the end (active consumers, retransmission buffers full).
//!
//! Per N the report prints: forwarded packets/s, node CPU (% of one core), forwarded packets per
//! node CPU-second ("per core"), CPU ns per forwarded packet, latency p50/p99 (pooled over the
//! windows; publisher → node → consumer, so the bots' own send and receive paths are
//! included), memory per consumer idle and active, and the per-core rate as a fraction of the
//! ceiling of the negotiated SRTP profile. The negotiated profile is read from the consumer bots'
//! DTLS: both the node and the bots offer GCM first (`crate::edge::dtls`), and the bench cannot
//! make them offer only AES-CM, so the fan-out part measures GCM only; the limit part covers
//! both.
//!
//! The node and the bots share the machine: with 2 cores the bots (this process) can use as
//! much CPU as the node, so the node may never saturate. The per-core figure (packets per node
//! CPU-second) does not need saturation, but the report warns when the host was nearly fully
//! busy or the bots used more CPU than the node, and when the publisher did not reach `--pps`.
//!
//! Example: `pipemesh bench fanout --consumers 20,100 --duration-secs 5`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::bots::{consumer_stats, join_bot, join_consumers, wait_media};
use super::cpu::{host_busy, process_cpu_time};
use super::process::{Metrics, NodeProcess};
use super::summary::{median, Latency};
use crate::bot::client::{Bot, BotOptions, StreamStats, VideoRate};
use crate::bot::stats::OWD_WINDOW;

pub mod limit;

pub use limit::{ceiling_pps, LimitReport};

/// Settling time before reading a node's RSS.
const SETTLE: Duration = Duration::from_millis(500);
/// Host busy share above which the report says the machine was saturated.
const HOST_SATURATED: f64 = 0.9;

/// `--srtp-profile` of `pipemesh bench fanout`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfileArg {
    /// AEAD_AES_128_GCM.
    Gcm,
    /// AES_CM_128_HMAC_SHA1_80.
    Cm,
}

impl SrtpProfileArg {
    /// The profile.
    pub fn profile(self) -> crate::srtp::Profile {
        match self {
            SrtpProfileArg::Gcm => crate::srtp::Profile::AeadAes128Gcm,
            SrtpProfileArg::Cm => crate::srtp::Profile::Aes128CmHmacSha1_80,
        }
    }
}

/// Flags of `pipemesh bench fanout` (and of `cargo bench --bench fanout -- ...`).
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Consumer counts, one run (fresh node) per value, e.g. `10,50,100`.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 50, 100])]
    pub consumers: Vec<usize>,
    /// Packets per second the publisher sends (VP8 only).
    #[arg(long, default_value_t = 1000)]
    pub pps: u32,
    /// Video frames per second; each frame is `pps / fps` packets sent back to back.
    #[arg(long, default_value_t = 100)]
    pub fps: u32,
    /// RTP payload bytes per packet (VP8 descriptor included); with the RTP header and
    /// extensions and the SRTP tag the datagrams are about 1,200 bytes.
    #[arg(long, default_value_t = 1140)]
    pub payload: usize,
    /// Measured time per consumer count, seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Length of one window, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub window_ms: u64,
    /// Warm-up after every consumer receives, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Packets per limit measurement (SRTP protect, UDP send).
    #[arg(long, default_value_t = 200_000)]
    pub limit_packets: u64,
    /// Repetitions of each limit measurement (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub limit_reps: usize,
    /// Skip the fan-out part (limit only).
    #[arg(long)]
    pub limit_only: bool,
    /// Make the bots offer only this SRTP profile (the node accepts either): `gcm`
    /// (AEAD_AES_128_GCM) or `cm` (AES_CM_128_HMAC_SHA1_80) [default: negotiated, GCM].
    #[arg(long, value_enum)]
    pub srtp_profile: Option<SrtpProfileArg>,
    /// The `pipemesh` binary to run the node with [default: this executable, or the crate's
    /// binary under `cargo bench`].
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<PathBuf>,
    /// Log filter of the node (its WARN/ERROR lines are echoed to stderr).
    #[arg(long, default_value = "warn,pipemesh::node=info")]
    pub node_log: String,
    /// Print every window's figures to stderr as it ends.
    #[arg(long, short)]
    pub verbose: bool,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            consumers: vec![10, 50, 100],
            pps: 1000,
            fps: 100,
            payload: 1140,
            duration_secs: 10,
            window_ms: 1000,
            warmup_ms: 1000,
            limit_packets: 200_000,
            limit_reps: 3,
            limit_only: false,
            srtp_profile: None,
            node_bin: None,
            node_log: "warn,pipemesh::node=info".into(),
            verbose: false,
        }
    }
}

impl FanoutArgs {
    fn validate(&self) -> Result<()> {
        if self.consumers.is_empty() || self.consumers.iter().any(|&n| !(1..=500).contains(&n)) {
            bail!("--consumers: values must be 1..=500");
        }
        video_rate(self.pps, self.fps, self.payload)?;
        if self.window_ms < 100 || self.duration_secs * 1000 < self.window_ms {
            bail!("--window-ms must be at least 100 and at most --duration-secs");
        }
        if self.limit_packets == 0 || self.limit_reps == 0 {
            bail!("--limit-packets and --limit-reps must be at least 1");
        }
        Ok(())
    }

    fn windows(&self) -> usize {
        (self.duration_secs * 1000 / self.window_ms) as usize
    }
}

/// VP8 source settings that send exactly `pps` packets/s of `payload`-byte RTP payloads as
/// `fps` frames of `pps / fps` packets (the VP8 descriptor is part of the payload).
pub fn video_rate(pps: u32, fps: u32, payload: usize) -> Result<VideoRate> {
    if !(1..=240).contains(&fps) || pps == 0 || !pps.is_multiple_of(fps) {
        bail!("--pps must be a positive multiple of --fps (1..=240)");
    }
    if !(64..=1400).contains(&payload) {
        bail!("--payload must be 64..=1400");
    }
    let per_frame = u64::from(pps / fps);
    // The source cuts a frame of bitrate/8/fps bytes into chunks of max_payload - 4 (the VP8
    // descriptor): make it exactly `per_frame` full chunks.
    let frame_bytes = per_frame * (payload as u64 - 4);
    let bitrate = frame_bytes * 8 * u64::from(fps);
    let bitrate_bps = u32::try_from(bitrate).context("--pps × --payload too large")?;
    Ok(VideoRate {
        fps,
        bitrate_bps,
        max_payload: payload,
        keyframe_interval: Duration::ZERO,
    })
}

/// What one fan-out window recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FanWindow {
    /// Wall-clock length, seconds.
    pub secs: f64,
    /// Node CPU time, µs.
    pub node_cpu_us: f64,
    /// CPU time of this process (the bots), µs.
    pub bots_cpu_us: f64,
    /// Busy time of the whole host, µs (NaN if unknown).
    pub host_busy_us: f64,
    /// RTP packets the node sent to consumers.
    pub forwarded: u64,
    /// RTP packets the node received from the publisher.
    pub ingress: u64,
    /// RTP packets the consumer bots received.
    pub received: u64,
    /// Datagrams and bytes the node sent (`packet_size_bytes`, direction out).
    pub out_datagrams: f64,
    /// Bytes of those.
    pub out_bytes: f64,
    /// One-way latency samples, µs.
    pub latency_us: Vec<i64>,
}

/// One consumer count's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct FanRun {
    /// Consumers.
    pub consumers: usize,
    /// Windows measured.
    pub windows: usize,
    /// Forwarded packets per second (median over windows).
    pub forwarded_per_s: f64,
    /// Publisher packets per second reaching the node.
    pub ingress_per_s: f64,
    /// Packets per second the bots received.
    pub received_per_s: f64,
    /// Node CPU, share of one core (median).
    pub node_cores: f64,
    /// Bots' CPU, share of one core (median).
    pub bots_cores: f64,
    /// Host busy share of all its cores (median; NaN if unknown).
    pub host_busy_share: f64,
    /// Forwarded packets per node CPU-second (median over windows).
    pub per_core: f64,
    /// Node CPU ns per forwarded packet (median over windows).
    pub ns_per_pkt: f64,
    /// Mean datagram size the node sent, bytes.
    pub mean_out_bytes: f64,
    /// Latency over every window's samples.
    pub latency: Option<Latency>,
    /// Node RSS before the consumers, after they joined (idle), at the end (active), bytes.
    pub rss: [u64; 3],
    /// The SRTP profile the consumers' DTLS negotiated.
    pub profile: Option<String>,
}

impl FanRun {
    /// Summarises `windows` of a run with `consumers` consumers on a host of `cores` cores.
    pub fn of(
        consumers: usize,
        windows: &[FanWindow],
        cores: usize,
        rss: [u64; 3],
        profile: Option<String>,
    ) -> Self {
        let med =
            |f: &dyn Fn(&FanWindow) -> f64| median(&windows.iter().map(f).collect::<Vec<_>>());
        let rate = |n: u64, secs: f64| {
            if secs > 0.0 {
                n as f64 / secs
            } else {
                f64::NAN
            }
        };
        let mut pooled: Vec<i64> = windows
            .iter()
            .flat_map(|w| w.latency_us.iter().copied())
            .collect();
        let out_dg: f64 = windows.iter().map(|w| w.out_datagrams).sum();
        let out_b: f64 = windows.iter().map(|w| w.out_bytes).sum();
        FanRun {
            consumers,
            windows: windows.len(),
            forwarded_per_s: med(&|w| rate(w.forwarded, w.secs)),
            ingress_per_s: med(&|w| rate(w.ingress, w.secs)),
            received_per_s: med(&|w| rate(w.received, w.secs)),
            node_cores: med(&|w| w.node_cpu_us / 1e6 / w.secs),
            bots_cores: med(&|w| w.bots_cpu_us / 1e6 / w.secs),
            host_busy_share: med(&|w| w.host_busy_us / 1e6 / w.secs / cores.max(1) as f64),
            per_core: med(&|w| per_cpu_second(w.forwarded, w.node_cpu_us)),
            ns_per_pkt: med(&|w| {
                if w.forwarded == 0 {
                    f64::NAN
                } else {
                    w.node_cpu_us * 1e3 / w.forwarded as f64
                }
            }),
            mean_out_bytes: if out_dg > 0.0 {
                out_b / out_dg
            } else {
                f64::NAN
            },
            latency: Latency::of(&mut pooled),
            rss,
            profile,
        }
    }

    /// RSS growth per consumer with the consumers idle (joined, no media) and active, bytes.
    pub fn rss_per_consumer(&self) -> (f64, f64) {
        let n = self.consumers.max(1) as f64;
        let d = |a: u64, b: u64| (b as f64 - a as f64) / n;
        (d(self.rss[0], self.rss[1]), d(self.rss[0], self.rss[2]))
    }

    /// Warnings about this run's validity, given the requested publisher rate.
    pub fn warnings(&self, pps: u32) -> Vec<String> {
        let mut w = Vec::new();
        if self.ingress_per_s < 0.95 * f64::from(pps) {
            w.push(format!(
                "the publisher reached {:.0} of {pps} packets/s at the node",
                self.ingress_per_s
            ));
        }
        let expected = self.ingress_per_s * self.consumers as f64;
        if expected > 0.0 && self.forwarded_per_s < 0.95 * expected {
            w.push(format!(
                "the node forwarded {:.0} packets/s, {:.1}% short of ingress × consumers",
                self.forwarded_per_s,
                (1.0 - self.forwarded_per_s / expected) * 100.0
            ));
        }
        if self.host_busy_share >= HOST_SATURATED {
            w.push(format!(
                "the host was {:.0}% busy: the node competed for CPU (bots {:.0}% of a core)",
                self.host_busy_share * 100.0,
                self.bots_cores * 100.0
            ));
        }
        if self.bots_cores > self.node_cores {
            w.push(format!(
                "the bots (this process) used more CPU than the node ({:.0}% vs {:.0}% of a \
                 core): on a small machine the node cannot saturate",
                self.bots_cores * 100.0,
                self.node_cores * 100.0
            ));
        }
        w
    }
}

/// Packets per CPU-second: `packets` over `cpu_us` microseconds of CPU; NaN without CPU.
pub fn per_cpu_second(packets: u64, cpu_us: f64) -> f64 {
    if cpu_us > 0.0 {
        packets as f64 / (cpu_us / 1e6)
    } else {
        f64::NAN
    }
}

/// `rate / limit`, NaN if either is unknown.
pub fn fraction_of(rate: f64, limit: f64) -> f64 {
    if limit > 0.0 && rate.is_finite() {
        rate / limit
    } else {
        f64::NAN
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutReport {
    /// The machine's ceiling, measured first.
    pub limit: LimitReport,
    /// One per consumer count.
    pub runs: Vec<FanRun>,
    /// Requested publisher rate.
    pub pps: u32,
    /// Host cores.
    pub cores: usize,
    /// Node WARN/ERROR lines by kind, over all runs.
    pub node_problems: Vec<(String, u64)>,
}

/// Maps a profile name as the bots report it (webrtc-srtp's `Debug`) to the limit's row key.
fn is_gcm(profile: &str) -> bool {
    profile.to_ascii_lowercase().contains("gcm")
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.limit)?;
        if self.runs.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(
            f,
            "Fan-out through one node (ICE, DTLS, SRTP, UDP on loopback), publisher {} packets/s \
             VP8, {} cores shared by the node and the bots:",
            self.pps, self.cores
        )?;
        writeln!(
            f,
            "{:>9} {:>11} {:>9} {:>12} {:>9} {:>6} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
            "consumers",
            "fwd pkt/s",
            "node CPU",
            "pkt/s/core",
            "ns/pkt",
            "bytes",
            "p50 µs",
            "p99 µs",
            "idle/cons",
            "act./cons",
            "bots CPU",
            "of limit"
        )?;
        for r in &self.runs {
            let (idle, active) = r.rss_per_consumer();
            let ceiling = match &r.profile {
                Some(p) => self.limit.ceiling(is_gcm(p)),
                None => f64::NAN,
            };
            let lat = |p: fn(&Latency) -> f64| r.latency.as_ref().map_or(f64::NAN, p);
            writeln!(
                f,
                "{:>9} {:>11.0} {:>8.0}% {:>12.0} {:>9.0} {:>6.0} {:>9.0} {:>9.0} {:>10} {:>10} \
                 {:>8.0}% {:>8.1}%",
                r.consumers,
                r.forwarded_per_s,
                r.node_cores * 100.0,
                r.per_core,
                r.ns_per_pkt,
                r.mean_out_bytes,
                lat(|l| l.p50),
                lat(|l| l.p99),
                kib(idle),
                kib(active),
                r.bots_cores * 100.0,
                fraction_of(r.per_core, ceiling) * 100.0
            )?;
        }
        writeln!(f)?;
        for r in &self.runs {
            writeln!(
                f,
                "N={}: SRTP profile {}; {} windows; ingress {:.0}/s, bots received {:.0}/s; \
                 host busy {:.0}%; {} latency samples; node RSS {} -> {} (idle) -> {} (active)",
                r.consumers,
                r.profile.as_deref().unwrap_or("unknown"),
                r.windows,
                r.ingress_per_s,
                r.received_per_s,
                r.host_busy_share * 100.0,
                r.latency.map_or(0, |l| l.samples),
                kib(r.rss[0] as f64),
                kib(r.rss[1] as f64),
                kib(r.rss[2] as f64),
            )?;
            for w in r.warnings(self.pps) {
                writeln!(f, "  warning: {w}")?;
            }
        }
        writeln!(
            f,
            "pkt/s/core = forwarded packets per node CPU-second; \"of limit\" = that over the \
             ceiling of the negotiated profile. Latency is publisher -> node -> consumer one-way \
             (bots included). act./cons includes the retransmission buffers, full after warm-up."
        )?;
        writeln!(
            f,
            "Targets: >= 500k pkt/s/core (GCM), >= 300k (AES-CM), p99 < 200 µs below \
             saturation, < 50 KiB per idle consumer. The node and the bots negotiate GCM unless \
             --srtp-profile cm makes the bots offer only AES-CM."
        )?;
        if !self.node_problems.is_empty() {
            writeln!(f, "Node WARN/ERROR lines:")?;
            for (k, n) in &self.node_problems {
                writeln!(f, "  {n} × {k}")?;
            }
        }
        Ok(())
    }
}

macro_rules! progress {
    ($($t:tt)*) => {
        eprintln!("bench fanout: {}", format_args!($($t)*))
    };
}

/// Runs the benchmark with the node from `node_bin` (unless `--node-bin` overrides it) and
/// returns the report. Progress goes to stderr.
pub fn run(args: &FanoutArgs, node_bin: &Path) -> Result<FanoutReport> {
    args.validate()?;
    progress!(
        "limit: SRTP protect and UDP send, {} packets × {} repetitions each",
        args.limit_packets,
        args.limit_reps
    );
    let limit = limit::measure(args.limit_packets, args.limit_reps)?;
    let cores = host_busy().map_or(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        |(_, c)| c,
    );
    let mut report = FanoutReport {
        limit,
        runs: Vec::new(),
        pps: args.pps,
        cores,
        node_problems: Vec::new(),
    };
    if args.limit_only {
        return Ok(report);
    }
    let bin = args.node_bin.as_deref().unwrap_or(node_bin);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    for &n in &args.consumers {
        progress!("{n} consumers: starting a node");
        let mut node = NodeProcess::spawn(bin, "fanout", None, &args.node_log)?;
        let per_run = Duration::from_millis(args.warmup_ms + args.duration_secs * 1000);
        let budget = Duration::from_secs(120) + per_run;
        let r = rt.block_on(async {
            tokio::time::timeout(budget, fan_out(args, &mut node, n, cores))
                .await
                .map_err(|_| anyhow::anyhow!("the run exceeded {budget:?}"))?
        });
        for (k, c) in node.problems() {
            match report.node_problems.iter_mut().find(|(kind, _)| *kind == k) {
                Some((_, total)) => *total += c,
                None => report.node_problems.push((k, c)),
            }
        }
        report
            .runs
            .push(r.with_context(|| format!("{n} consumers"))?);
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

fn rss(node: &NodeProcess) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", node.pid()))
        .context("reading the node's /proc status")?;
    parse_vm_rss(&s).context("no VmRSS in the node's /proc status")
}

async fn fan_out(
    args: &FanoutArgs,
    node: &mut NodeProcess,
    n: usize,
    cores: usize,
) -> Result<FanRun> {
    let url = node.url();
    let room = format!("fanout-{}-{n}", std::process::id());
    tokio::time::sleep(SETTLE).await;
    let rss0 = rss(node)?;
    let profile = args.srtp_profile.map(SrtpProfileArg::profile);
    let mut consumers = join_consumers(&url, &room, n, profile).await?;
    tokio::time::sleep(SETTLE).await;
    let rss1 = rss(node)?;
    progress!(
        "{n} consumers joined; the publisher starts at {} packets/s",
        args.pps
    );
    let mut p = BotOptions::new(&url, &room, "publisher");
    p.consume = false;
    p.audio = false;
    p.video_rate = Some(video_rate(args.pps, args.fps, args.payload)?);
    p.srtp_profile = profile;
    let publisher = join_bot(p).await?;
    for c in &mut consumers {
        wait_media(c, 1).await?;
    }
    node.check_alive()?;
    let profile = consumers
        .first()
        .and_then(|c| c.recv_transport())
        .and_then(|t| t.state().srtp_profile);
    progress!(
        "every consumer receives ({}); warming up",
        profile.as_deref().unwrap_or("profile unknown")
    );
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;

    let mut windows = Vec::with_capacity(args.windows());
    let mut prev = Snapshot::take(node, &consumers).await?;
    for _ in 0..args.windows() {
        tokio::time::sleep(Duration::from_millis(args.window_ms)).await;
        let cur = Snapshot::take(node, &consumers).await?;
        let w = cur.window_since(&prev);
        if args.verbose {
            let mut lat = w.latency_us.clone();
            progress!(
                "window {:.2} s: {} forwarded, node {:.0} ms CPU, bots {:.0} ms, latency {}",
                w.secs,
                w.forwarded,
                w.node_cpu_us / 1e3,
                w.bots_cpu_us / 1e3,
                Latency::of(&mut lat).map_or("-".into(), |l| format!(
                    "p50 {:.0} p99 {:.0} µs",
                    l.p50, l.p99
                ))
            );
        }
        windows.push(w);
        prev = cur;
    }
    node.check_alive()?;
    let rss2 = rss(node)?;
    if windows.iter().all(|w| w.forwarded == 0) {
        bail!("the node forwarded nothing");
    }
    publisher.close().await;
    for c in consumers {
        c.close().await;
    }
    Ok(FanRun::of(n, &windows, cores, [rss0, rss1, rss2], profile))
}

/// Everything read at one window boundary.
struct Snapshot {
    at: Instant,
    node_cpu: Duration,
    bots_cpu: Duration,
    host_busy: Option<Duration>,
    metrics: Metrics,
    stats: Vec<Vec<StreamStats>>,
    received: u64,
}

impl Snapshot {
    async fn take(node: &NodeProcess, consumers: &[Bot]) -> Result<Snapshot> {
        let at = Instant::now();
        let node_cpu = node.cpu()?;
        let bots_cpu = process_cpu_time(0).context("CPU time of the bench process")?;
        let host_busy = host_busy().map(|(b, _)| b);
        let metrics = node.metrics().await?;
        let (stats, received) = consumer_stats(consumers).await?;
        Ok(Snapshot {
            at,
            node_cpu,
            bots_cpu,
            host_busy,
            metrics,
            stats,
            received,
        })
    }

    fn window_since(&self, prev: &Snapshot) -> FanWindow {
        let d = self.metrics.delta(&prev.metrics);
        let out = |suffix: &str| -> f64 {
            d.0.iter()
                .filter(|(k, _)| {
                    k.starts_with(&format!("packet_size_bytes_{suffix}")) && k.contains("out")
                })
                .map(|(_, v)| *v)
                .sum()
        };
        let mut w = FanWindow {
            secs: self.at.duration_since(prev.at).as_secs_f64(),
            node_cpu_us: self.node_cpu.saturating_sub(prev.node_cpu).as_secs_f64() * 1e6,
            bots_cpu_us: self.bots_cpu.saturating_sub(prev.bots_cpu).as_secs_f64() * 1e6,
            host_busy_us: match (self.host_busy, prev.host_busy) {
                (Some(c), Some(p)) => c.saturating_sub(p).as_secs_f64() * 1e6,
                _ => f64::NAN,
            },
            forwarded: d.get("rtp_sent_total") as u64,
            ingress: d.get("rtp_received_total") as u64,
            received: self.received.saturating_sub(prev.received),
            out_datagrams: out("count"),
            out_bytes: out("sum"),
            latency_us: Vec::new(),
        };
        for (now, before) in self.stats.iter().zip(&prev.stats) {
            for s in now {
                let ssrc = s.stats.ssrc();
                let start = before
                    .iter()
                    .find(|b| b.stats.ssrc() == ssrc)
                    .map_or(0, |b| b.stats.probes());
                let new = s.stats.probes().saturating_sub(start);
                let kept = new.min(OWD_WINDOW as u64);
                s.stats.recent_latency_us(kept as usize, &mut w.latency_us);
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_rate_gives_the_packet_rate() {
        let r = video_rate(1000, 100, 1140).unwrap();
        // 10 packets of 1136 content bytes per frame, 100 frames/s.
        assert_eq!(r.bitrate_bps / 8 / r.fps, 10 * 1136);
        assert_eq!(r.max_payload, 1140);
        assert!(r.keyframe_interval.is_zero());
        assert!(video_rate(1000, 30, 1140).is_err());
        assert!(video_rate(1000, 0, 1140).is_err());
        assert!(video_rate(1000, 100, 10).is_err());
    }

    #[test]
    fn rates_and_fractions() {
        assert_eq!(per_cpu_second(500, 1000.0), 500_000.0);
        assert!(per_cpu_second(5, 0.0).is_nan());
        assert_eq!(fraction_of(250_000.0, 1_000_000.0), 0.25);
        assert!(fraction_of(1.0, 0.0).is_nan());
        assert!(fraction_of(f64::NAN, 1.0).is_nan());
    }

    #[test]
    fn vm_rss_from_status() {
        let s = "Name:\tpipemesh\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(s), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    fn window(forwarded: u64, node_cpu_us: f64, lat: &[i64]) -> FanWindow {
        FanWindow {
            secs: 1.0,
            node_cpu_us,
            bots_cpu_us: 200_000.0,
            host_busy_us: 1_000_000.0,
            forwarded,
            ingress: 1000,
            received: forwarded,
            out_datagrams: forwarded as f64,
            out_bytes: forwarded as f64 * 1200.0,
            latency_us: lat.to_vec(),
        }
    }

    fn run() -> FanRun {
        let ws = [
            window(10_000, 100_000.0, &[100, 200]),
            window(10_000, 50_000.0, &[300, 400]),
            window(10_000, 200_000.0, &[500]),
        ];
        FanRun::of(
            10,
            &ws,
            2,
            [
                10 << 20,
                (10 << 20) + 10 * 20 * 1024,
                (10 << 20) + 10 * 700 * 1024,
            ],
            Some("AeadAes128Gcm".into()),
        )
    }

    #[test]
    fn run_summary_medians_and_memory() {
        let r = run();
        assert_eq!(r.forwarded_per_s, 10_000.0);
        assert_eq!(r.node_cores, 0.1);
        assert_eq!(r.per_core, 100_000.0);
        assert_eq!(r.ns_per_pkt, 10_000.0);
        assert_eq!(r.mean_out_bytes, 1200.0);
        assert_eq!(r.host_busy_share, 0.5);
        let l = r.latency.unwrap();
        assert_eq!((l.p50, l.p99, l.samples), (300.0, 500.0, 5));
        assert_eq!(r.rss_per_consumer(), (20.0 * 1024.0, 700.0 * 1024.0));
        // Bots used more CPU than the node.
        let w = r.warnings(1000);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("more CPU than the node"));
        assert!(r.warnings(2000)[0].contains("reached 1000 of 2000"));
    }

    #[test]
    fn report_prints_fraction_of_the_limit() {
        let limit = LimitReport::from_rates(
            &[
                ("ours", true, 1_000_000.0),
                ("ours", false, 500_000.0),
                ("webrtc-srtp", true, 400_000.0),
                ("webrtc-srtp", false, 300_000.0),
            ],
            &[
                ("send_to", 1_000_000.0, 900_000.0),
                ("sendmmsg×32", 1_000_000.0, 1e6),
            ],
        );
        // 1 / (1/1e6 + 1/1e6) = 500k for GCM.
        assert!((limit.ceiling(true) - 500_000.0).abs() < 1e-6);
        let report = FanoutReport {
            limit,
            runs: vec![run()],
            pps: 1000,
            cores: 2,
            node_problems: vec![],
        };
        let text = report.to_string();
        assert!(text.contains("ceiling"), "{text}");
        // 100k per core of a 500k ceiling.
        assert!(text.contains("20.0%"), "{text}");
        assert!(text.contains("SRTP profile AeadAes128Gcm"), "{text}");
        assert!(text.contains("20.0 KiB"), "{text}");
    }
}
