//! The pipe benchmark: what the pipe hop between two nodes adds, in one-way latency and in CPU
//! per forwarded packet, against the same consumers all on one node, in the same run.
//!
//! Two `pipemesh serve` processes (`a`, `b`) run on loopback with QUIC pipes to each other
//! (`--insecure-pipes`, static peers). The bots are this process's [`Bot`]s. Two scenarios run
//! one after the other, each in its own room:
//!
//! 1. a producer bot (Opus + VP8) on `a` and N consumer bots on `a`;
//! 2. a producer bot on `a` and N consumer bots on `b`, so every packet crosses the pipe once
//!    and `b` fans it out.
//!
//! Each scenario waits until every consumer receives both streams, warms up, then measures
//! back-to-back windows. The nodes fill each video consumer's retransmission buffer (512 slots;
//! the origin's pipe buffers likewise) lazily, one first-touch allocation per packet, for the
//! first ~9 s at the bot's ~57 video packets/s: the default 1 s warm-up measures partly during
//! that fill. On a quiet 2-core VM the CPU per packet during and after the fill differed by less
//! than the window-to-window noise (16.1 vs 16.7 µs); `--warmup-ms 10000` excludes it. Per window: the CPU time of each node process (kernel process CPU
//! clock, every thread), the RTP packets the nodes delivered to consumers (the sum of
//! `pipemesh_rtp_sent_total` over nodes; the bots' own receive counters are printed as a check),
//! and the one-way latency of every packet received in the window: the bots' media embeds the
//! sender's wall clock in each payload ([`crate::bot::media::Probe`]) and the receiving bot
//! subtracts it from its own, so both ends read the same clock. CPU figures are medians over
//! windows; latency percentiles pool every window's samples. The scenarios alternate for
//! `--rounds` rounds (fresh rooms and bots each time), so a slow drift of the machine hits both.
//! The host's busy time outside the nodes and this process is measured too: the report warns
//! when other work shared the machine.
//!
//! `--single-node` runs scenario 1 on one node without pipes.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::bots::{consumer_stats, join_bot, join_consumers, wait_media, SETUP_WAIT};
use super::cpu::{host_busy, process_cpu_time};
use super::process::{Metrics, NodeProcess, PipeSettings};
use super::summary::{Latency, Report, Summary, Window};
use crate::bot::client::{Bot, BotOptions, StreamStats};
use crate::bot::stats::OWD_WINDOW;

/// Pause after closing a scenario's bots, so the nodes are idle again before the next one.
const TEARDOWN: Duration = Duration::from_millis(500);
/// Length of the idle measurement of the linked nodes.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

macro_rules! progress {
    ($($t:tt)*) => {
        progress_line(format_args!($($t)*))
    };
}

/// Prints a progress line to stderr, stamped with the wall clock (UTC, as the nodes' logs are)
/// so it lines up with the node warnings echoed there.
fn progress_line(msg: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day = now.as_secs() % 86_400;
    eprintln!(
        "bench {:02}:{:02}:{:02}.{:03}Z: {msg}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        now.subsec_millis()
    );
}

/// Flags of `pipemesh bench pipe` (and of `cargo bench --bench pipe -- ...`).
#[derive(Args, Debug, Clone)]
pub struct PipeArgs {
    /// Consumer bots per scenario.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub consumers: usize,
    /// Measurement windows per scenario and round.
    #[arg(long, default_value_t = 3)]
    pub windows: usize,
    /// Length of one window, milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub window_ms: u64,
    /// Warm-up after all consumers receive media, before the first window, milliseconds (10000
    /// also excludes the nodes' retransmission buffers filling; see the module docs).
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Times both scenarios run, alternating (1, 2, 1, 2, ...), each time with a fresh room and
    /// bots; so slow drifts of the machine hit both alike.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Only scenario 1, on a single node without pipes.
    #[arg(long)]
    pub single_node: bool,
    /// The `pipemesh` binary to run the nodes with [default: this executable, or the crate's
    /// binary under `cargo bench`].
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<PathBuf>,
    /// Log filter of the nodes (their WARN/ERROR lines are echoed to stderr).
    #[arg(long, default_value = "warn,pipemesh::node=info")]
    pub node_log: String,
    /// Print every window's figures to stderr as it ends.
    #[arg(long, short)]
    pub verbose: bool,
}

impl Default for PipeArgs {
    fn default() -> Self {
        Self {
            consumers: 20,
            windows: 3,
            window_ms: 1500,
            warmup_ms: 1000,
            rounds: 2,
            single_node: false,
            node_bin: None,
            node_log: "warn,pipemesh::node=info".into(),
            verbose: false,
        }
    }
}

impl PipeArgs {
    fn validate(&self) -> Result<()> {
        if !(1..=500).contains(&self.consumers) {
            bail!("--consumers must be 1..=500");
        }
        if self.windows == 0 || self.rounds == 0 {
            bail!("--windows and --rounds must be at least 1");
        }
        if self.window_ms < 100 {
            bail!("--window-ms must be at least 100");
        }
        Ok(())
    }
}

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scenario {
    /// Producer and consumers on node a.
    Local,
    /// Producer on a, consumers on b.
    Piped,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Local => "1: all on a",
            Scenario::Piped => "2: consumers on b",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Scenario::Local => "local",
            Scenario::Piped => "piped",
        }
    }
}

/// Runs the benchmark with nodes from `node_bin` (unless `--node-bin` overrides it) and returns
/// the report. Progress goes to stderr.
pub fn run(args: &PipeArgs, node_bin: &Path) -> Result<Report> {
    args.validate()?;
    let bin = args.node_bin.as_deref().unwrap_or(node_bin);
    let nodes = start_nodes(bin, args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let per_scenario = Duration::from_millis(args.warmup_ms + args.window_ms * args.windows as u64);
    let budget = Duration::from_secs(120) + per_scenario * 2 * args.rounds as u32;
    let report = rt.block_on(async {
        tokio::time::timeout(budget, measure(args, nodes))
            .await
            .map_err(|_| anyhow::anyhow!("the benchmark exceeded {budget:?}"))?
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    report
}

/// Two free UDP ports on 127.0.0.1 (bound together so they differ, then released).
fn free_udp_ports() -> Result<(u16, u16)> {
    let a = UdpSocket::bind("127.0.0.1:0").context("picking a pipe port")?;
    let b = UdpSocket::bind("127.0.0.1:0").context("picking a pipe port")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

fn start_nodes(bin: &Path, args: &PipeArgs) -> Result<Vec<NodeProcess>> {
    if args.single_node {
        progress!("starting node a (no pipes)");
        return Ok(vec![NodeProcess::spawn(bin, "a", None, &args.node_log)?]);
    }
    let (pa, pb) = free_udp_ports()?;
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let a = PipeSettings {
        listen: addr(pa),
        static_peers: vec![format!("b={}", addr(pb))],
    };
    let b = PipeSettings {
        listen: addr(pb),
        static_peers: vec![format!("a={}", addr(pa))],
    };
    progress!("starting nodes a (pipe {pa}) and b (pipe {pb})");
    let na = NodeProcess::spawn(bin, "a", Some(&a), &args.node_log)?;
    let nb = NodeProcess::spawn(bin, "b", Some(&b), &args.node_log)?;
    Ok(vec![na, nb])
}

async fn measure(args: &PipeArgs, mut nodes: Vec<NodeProcess>) -> Result<Report> {
    if nodes.len() == 2 {
        wait_linked(&nodes).await?;
    }
    // Idle cost of the (linked) nodes, before any bot.
    let c0 = node_cpu(&nodes)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let c1 = node_cpu(&nodes)?;
    let idle_ms_per_s = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| (*b - *a).as_secs_f64() * 1e3 / IDLE_WINDOW.as_secs_f64())
        .collect();

    let scenarios: &[Scenario] = if nodes.len() == 2 {
        &[Scenario::Local, Scenario::Piped]
    } else {
        &[Scenario::Local]
    };
    let mut windows: HashMap<Scenario, Vec<Window>> = HashMap::new();
    for round in 0..args.rounds {
        for &s in scenarios {
            let room = format!("bench-{}-{round}-{}", std::process::id(), s.slug());
            let w = run_scenario(args, &mut nodes, s, &room)
                .await
                .with_context(|| format!("scenario {:?}, round {}", s, round + 1))?;
            windows.entry(s).or_default().extend(w);
        }
    }
    let ids: Vec<String> = nodes.iter().map(|n| n.id().to_owned()).collect();
    let summary =
        |s: Scenario| Summary::of(s.label(), ids.len(), windows.get(&s).map_or(&[], |v| v));
    Ok(Report {
        nodes: ids.clone(),
        consumers: args.consumers,
        rounds: args.rounds,
        windows: args.windows,
        window_secs: args.window_ms as f64 / 1e3,
        local: summary(Scenario::Local),
        piped: scenarios
            .contains(&Scenario::Piped)
            .then(|| summary(Scenario::Piped)),
        idle_ms_per_s,
        node_problems: nodes.iter().map(NodeProcess::problems).collect(),
        host_cores: host_busy().map(|(_, cores)| cores),
    })
}

fn node_cpu(nodes: &[NodeProcess]) -> Result<Vec<Duration>> {
    nodes.iter().map(NodeProcess::cpu).collect()
}

/// Waits until each node reports its link to the other up on `/metrics`.
async fn wait_linked(nodes: &[NodeProcess]) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut up = true;
        let mut seen = Vec::new();
        for (me, other) in [(&nodes[0], &nodes[1]), (&nodes[1], &nodes[0])] {
            let m = me.metrics().await?;
            let series = format!("pipe_link_up{{peer=\"{}\"}}", other.id());
            up &= m.get(&series) >= 1.0;
            seen.extend(
                m.0.iter()
                    .filter(|(k, _)| k.contains("pipe"))
                    .map(|(k, v)| format!("{}: {k} {v}", me.id())),
            );
        }
        if up {
            progress!("pipe linked after {} ms", started.elapsed().as_millis());
            return Ok(());
        }
        if started.elapsed() > SETUP_WAIT {
            bail!(
                "the pipe between a and b did not come up within {SETUP_WAIT:?} \
                 (pipe series: {}).\nnode a log:\n{}\nnode b log:\n{}",
                if seen.is_empty() {
                    "none".to_owned()
                } else {
                    seen.join(", ")
                },
                nodes[0].log_tail(),
                nodes[1].log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_scenario(
    args: &PipeArgs,
    nodes: &mut [NodeProcess],
    scenario: Scenario,
    room: &str,
) -> Result<Vec<Window>> {
    let producer_url = nodes[0].url();
    let consumer_url = match scenario {
        Scenario::Local => nodes[0].url(),
        Scenario::Piped => nodes[1].url(),
    };
    progress!(
        "scenario {}: producer on a, {} consumers on {}",
        scenario.label(),
        args.consumers,
        if scenario == Scenario::Local {
            "a"
        } else {
            "b"
        }
    );
    let mut p = BotOptions::new(&producer_url, room, "producer");
    p.consume = false;
    let producer = join_bot(p).await?;

    let mut consumers = join_consumers(&consumer_url, room, args.consumers, None).await?;
    for c in &mut consumers {
        wait_media(c, 2).await?;
    }
    for n in nodes.iter_mut() {
        n.check_alive()?;
    }
    progress!("all consumers receive media; warming up");
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;

    let mut out = Vec::with_capacity(args.windows);
    let mut prev = Snapshot::take(nodes, &consumers).await?;
    for _ in 0..args.windows {
        tokio::time::sleep(Duration::from_millis(args.window_ms)).await;
        let cur = Snapshot::take(nodes, &consumers).await?;
        let w = cur.window_since(&prev, nodes);
        if args.verbose {
            let mut lat = w.latency_us.clone();
            let cpu: Vec<String> = w
                .cpu_us
                .iter()
                .map(|us| format!("{:.2}", us / w.delivered.max(1) as f64))
                .collect();
            progress!(
                "window: {:.2} s, {} delivered, CPU µs/pkt per node {}, latency {}",
                w.secs,
                w.delivered,
                cpu.join(" "),
                Latency::of(&mut lat).map_or("-".into(), |l| format!(
                    "p50 {:.0} p99 {:.0} µs",
                    l.p50, l.p99
                ))
            );
        }
        out.push(w);
        prev = cur;
    }
    for n in nodes.iter_mut() {
        n.check_alive()?;
    }
    let delivered: u64 = out.iter().map(|w| w.delivered).sum();
    let received: u64 = out.iter().map(|w| w.bot_received).sum();
    if delivered == 0 || received == 0 {
        bail!("no media reached the consumers (delivered {delivered}, received {received})");
    }
    let gap = (delivered as f64 - received as f64).abs() / delivered as f64;
    if gap > 0.05 {
        progress!(
            "warning: the nodes counted {delivered} packets sent to consumers but the bots \
             received {received} ({:.1}% apart)",
            gap * 100.0
        );
    }

    progress!("closing the bots");
    producer.close().await;
    for c in consumers {
        c.close().await;
    }
    tokio::time::sleep(TEARDOWN).await;
    Ok(out)
}

/// Everything read at one window boundary.
struct Snapshot {
    at: Instant,
    cpu: Vec<Duration>,
    bots_cpu: Duration,
    host_busy: Option<Duration>,
    metrics: Vec<Metrics>,
    /// Per consumer bot, its streams' statistics.
    stats: Vec<Vec<StreamStats>>,
    /// RTP packets all consumer bots received so far.
    received: u64,
}

impl Snapshot {
    async fn take(nodes: &[NodeProcess], consumers: &[Bot]) -> Result<Snapshot> {
        let at = Instant::now();
        let cpu = node_cpu(nodes)?;
        let bots_cpu = process_cpu_time(0).context("CPU time of the bench process")?;
        let host_busy = host_busy().map(|(busy, _)| busy);
        let mut metrics = Vec::with_capacity(nodes.len());
        for n in nodes {
            metrics.push(n.metrics().await?);
        }
        let (stats, received) = consumer_stats(consumers).await?;
        Ok(Snapshot {
            at,
            cpu,
            bots_cpu,
            host_busy,
            metrics,
            stats,
            received,
        })
    }

    fn window_since(&self, prev: &Snapshot, nodes: &[NodeProcess]) -> Window {
        let deltas: Vec<Metrics> = self
            .metrics
            .iter()
            .zip(&prev.metrics)
            .map(|(c, p)| c.delta(p))
            .collect();
        let mut w = Window {
            secs: self.at.duration_since(prev.at).as_secs_f64(),
            cpu_us: self
                .cpu
                .iter()
                .zip(&prev.cpu)
                .map(|(c, p)| c.saturating_sub(*p).as_secs_f64() * 1e6)
                .collect(),
            delivered: deltas.iter().map(|d| d.get("rtp_sent_total") as u64).sum(),
            bot_received: self.received.saturating_sub(prev.received),
            ingress: deltas[0].get("rtp_received_total") as u64,
            bots_cpu_us: self.bots_cpu.saturating_sub(prev.bots_cpu).as_secs_f64() * 1e6,
            host_busy_us: match (self.host_busy, prev.host_busy) {
                (Some(c), Some(p)) => c.saturating_sub(p).as_secs_f64() * 1e6,
                _ => f64::NAN,
            },
            ..Window::default()
        };
        for (node, d) in nodes.iter().zip(&deltas) {
            for (k, v) in &d.0 {
                if k.contains("pipe") && k.contains("_total") {
                    w.pipe_counters.insert(format!("{}:{k}", node.id()), *v);
                }
            }
        }
        for (now, before) in self.stats.iter().zip(&prev.stats) {
            for s in now {
                let ssrc = s.stats.ssrc();
                let start = before
                    .iter()
                    .find(|b| b.stats.ssrc() == ssrc)
                    .map_or(0, |b| b.stats.probes());
                let new = s.stats.probes().saturating_sub(start);
                let kept = new.min(OWD_WINDOW as u64);
                w.latency_lost += new - kept;
                s.stats.recent_latency_us(kept as usize, &mut w.latency_us);
            }
        }
        w
    }
}
