//! The three scenarios of `pipemesh-sim`: each brings up the nine-node cluster on the
//! emulated WAN, runs bots, measures, tears down, and writes `report.md`, `result.json` and
//! PNG plots into its output directory.
//!
//! Bots: one speaker (`speaker`, audio and video) on `eu1`; listeners spread evenly over the
//! nine nodes (one `pipemesh bot --count k` process per node), consuming everything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::analysis::{self, Copies, Spread};
use super::harness::{unix_ms, BotProcess, Cluster, Paths, NODES_PER_REGION, REGIONS};
use crate::bot::run::{BotReport, RunReport};
use crate::plot::{BarChart, LineChart, Series};

/// The speaker's peer id.
pub const SPEAKER: &str = "speaker";
/// The room.
pub const ROOM: &str = "sim";

/// One-way delays of the emulated WAN between the regions, in ms (both directions), and the
/// jitter on every inter-region link.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wan {
    /// eu <> us.
    pub eu_us_ms: f64,
    /// eu <> ap.
    pub eu_ap_ms: f64,
    /// us <> ap.
    pub us_ap_ms: f64,
    /// ± jitter on each.
    pub jitter_ms: f64,
}

impl Default for Wan {
    /// Roughly Frankfurt, Virginia and Singapore.
    fn default() -> Self {
        Self {
            eu_us_ms: 40.0,
            eu_ap_ms: 80.0,
            us_ap_ms: 100.0,
            jitter_ms: 2.0,
        }
    }
}

impl Wan {
    /// The one-way delay from region `a` to `b` (0 within a region).
    pub fn one_way_ms(&self, a: &str, b: &str) -> f64 {
        let mut pair = [a, b];
        pair.sort_unstable();
        match pair {
            ["eu", "us"] => self.eu_us_ms,
            ["ap", "eu"] => self.eu_ap_ms,
            ["ap", "us"] => self.us_ap_ms,
            _ => 0.0,
        }
    }

    fn apply(&self, c: &Cluster) -> Result<()> {
        for (link, d) in [
            ("eu<>us", self.eu_us_ms),
            ("eu<>ap", self.eu_ap_ms),
            ("us<>ap", self.us_ap_ms),
        ] {
            c.wan(&format!(
                "set {link} delay_ms={d} jitter_ms={}",
                self.jitter_ms
            ))?;
        }
        Ok(())
    }
}

/// Settings common to the scenarios.
#[derive(Debug, Clone)]
pub struct Common {
    /// Scripts and binaries.
    pub paths: Paths,
    /// Where the report goes.
    pub out: PathBuf,
    /// Names the namespaces (`pm-eu-<tag>`).
    pub tag: String,
    /// Listeners in all (spread over the nine nodes).
    pub listeners: usize,
    /// The WAN.
    pub wan: Wan,
}

/// Node ids in order: eu1..eu3, us1..us3, ap1..ap3.
pub fn node_ids() -> Vec<String> {
    REGIONS
        .iter()
        .flat_map(|r| (1..=NODES_PER_REGION).map(move |k| format!("{r}{k}")))
        .collect()
}

/// How many of `n` listeners each of the nine nodes gets (the first ones one more).
pub fn spread_listeners(n: usize) -> Vec<(String, usize)> {
    let ids = node_ids();
    let per = n / ids.len();
    let extra = n % ids.len();
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| (id, per + usize::from(i < extra)))
        .collect()
}

/// The speaker and the listener processes of a run.
struct Bots {
    speaker: BotProcess,
    listeners: Vec<(String, BotProcess)>,
}

/// Starts the speaker on eu1, then the listeners, and waits until all have joined.
/// Listeners run for `listen_secs` after their join.
fn start_bots(c: &Cluster, common: &Common, dir: &Path, listen_secs: u64) -> Result<Bots> {
    start_bots_with(c, common, dir, listen_secs, &[])
}

/// [`start_bots`] with more flags for the speaker (e.g. `--simulcast 3`).
fn start_bots_with(
    c: &Cluster,
    common: &Common,
    dir: &Path,
    listen_secs: u64,
    speaker_args: &[&str],
) -> Result<Bots> {
    let mut sargs = args(&[
        "--room",
        ROOM,
        "--peer-id",
        SPEAKER,
        "--produce",
        "audio,video",
        "--consume=false",
        "--duration",
        "3600",
    ]);
    sargs.extend(args(speaker_args));
    let mut speaker = c.bots("eu", 1, 1, &dir.join("speaker.json"), &sargs)?;
    speaker.wait_joined(Duration::from_secs(60))?;
    let mut listeners = Vec::new();
    for (node, count) in spread_listeners(common.listeners) {
        if count == 0 {
            continue;
        }
        let region = analysis::region_of(&node).to_owned();
        let k: usize = node[region.len()..].parse()?;
        let p = c.bots(
            &region,
            k,
            count,
            &dir.join(format!("listeners-{node}.json")),
            &args(&[
                "--room",
                ROOM,
                "--peer-id",
                &format!("l-{node}"),
                "--produce",
                "none",
                "--duration",
                &listen_secs.to_string(),
            ]),
        )?;
        listeners.push((node, p));
    }
    let join_timeout = Duration::from_secs(60 + 2 * common.listeners as u64);
    for (_, p) in &mut listeners {
        p.wait_joined(join_timeout)?;
    }
    Ok(Bots { speaker, listeners })
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits for each listener process to end; the reports by node (a failed process is `Err`).
fn finish(listeners: Vec<(String, BotProcess)>, secs: u64) -> Vec<(String, Result<RunReport>)> {
    listeners
        .into_iter()
        .map(|(node, p)| {
            let r = p.finish(Duration::from_secs(secs + 60));
            (node, r)
        })
        .collect()
}

/// The speaker's producers (kind → id) in a `rooms ROOM -o json` answer.
fn speaker_producers(room: &Value) -> BTreeMap<String, String> {
    room["producers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peerId"] == SPEAKER)
        .filter_map(|p| {
            Some((
                p["kind"].as_str()?.to_owned(),
                p["producerId"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn sleep_secs(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

fn write_png(dir: &Path, name: &str, png: Result<Vec<u8>, crate::plot::PlotError>) -> Result<()> {
    let png = png.map_err(|e| anyhow!("plot {name}: {e}"))?;
    std::fs::write(dir.join(name), png).with_context(|| format!("writing {name}"))
}

fn fmt_spread(s: Option<&Spread>, unit: &str) -> String {
    match s {
        Some(s) => format!("{:.0} / {:.0} {unit} (n={})", s.p50, s.p95, s.n),
        None => "-".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Scenario 1: one speaker, N listeners, tree vs mesh.

/// Settings of scenario 1.
#[derive(Debug, Clone)]
pub struct SpeakerSettings {
    /// Routings to compare (`tree`, `mesh`).
    pub routings: Vec<String>,
    /// Seconds after the last join before measuring.
    pub settle_secs: f64,
    /// Seconds of the measuring window.
    pub window_secs: f64,
}

/// What one routing measured in scenario 1.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerRun {
    /// `tree` or `mesh`.
    pub routing: String,
    /// Listeners that reported.
    pub listeners: usize,
    /// Listeners that received no keyframe of the speaker's video.
    pub listeners_without_video: usize,
    /// Bytes each directed WAN link carried per second during the window.
    pub wan_bytes_per_sec: BTreeMap<String, f64>,
    /// Sum over the links, kbit/s.
    pub inter_region_kbps: f64,
    /// Pipe copies of each of the speaker's producers (by kind).
    pub copies: BTreeMap<String, Copies>,
    /// The pipe edges of the speaker's video.
    pub video_edges: Vec<(String, String)>,
    /// Join to first frame per region, ms.
    pub first_frame_ms: BTreeMap<String, Spread>,
    /// One-way latency of the video per region (listeners' medians), ms.
    pub latency_ms: BTreeMap<String, Spread>,
    /// The same minus the emulated WAN's one-way delay from eu.
    pub latency_minus_wan_ms: BTreeMap<String, Spread>,
    /// Video loss per region after repair, percent.
    pub video_loss_percent: BTreeMap<String, f64>,
    /// Per node: CPU percent of one core and consumers, during the window.
    pub node_load: BTreeMap<String, (f64, u64)>,
}

/// Runs scenario 1 for each routing and writes the report; returns the runs.
pub fn speaker(common: &Common, s: &SpeakerSettings) -> Result<Vec<SpeakerRun>> {
    std::fs::create_dir_all(&common.out)?;
    let mut runs = Vec::new();
    for routing in &s.routings {
        eprintln!(
            "pipemesh-sim: speaker, {routing}: cluster up, {} listeners",
            common.listeners
        );
        let dir = common.out.join(format!("raw-{routing}"));
        std::fs::create_dir_all(&dir)?;
        let c = Cluster::up(&common.paths, &format!("{}{routing}", common.tag), routing)?;
        common.wan.apply(&c)?;
        let listen = (s.settle_secs + s.window_secs + 8.0).ceil() as u64;
        let bots = start_bots(&c, common, &dir, listen)?;
        eprintln!("pipemesh-sim: speaker, {routing}: all joined; measuring");
        sleep_secs(s.settle_secs);
        let before = c.wan_stats()?;
        sleep_secs(s.window_secs);
        let after = c.wan_stats()?;
        let room = c.room(ROOM)?;
        let nodes: Value = serde_json::from_str(&c.cli(&["nodes", "-o", "json"])?)?;
        std::fs::write(dir.join("room.json"), serde_json::to_vec_pretty(&room)?)?;
        let reports = finish(bots.listeners, listen);
        drop(bots.speaker);
        drop(c);
        let mut listeners = Vec::new();
        for (node, r) in reports {
            let r = r.with_context(|| format!("listeners on {node}"))?;
            listeners.extend(r.bots.into_iter().map(|b| (node.clone(), b)));
        }
        runs.push(speaker_run(
            routing,
            common,
            s.window_secs,
            &before,
            &after,
            &room,
            &nodes,
            &listeners,
        ));
    }
    let report = speaker_report(common, s, &runs);
    std::fs::write(common.out.join("report.md"), report)?;
    std::fs::write(
        common.out.join("result.json"),
        serde_json::to_vec_pretty(&json!({
            "scenario": "speaker", "listeners": common.listeners, "wan": common.wan, "runs": runs,
        }))?,
    )?;
    speaker_plots(common, &runs)?;
    Ok(runs)
}

#[allow(clippy::too_many_arguments)]
fn speaker_run(
    routing: &str,
    common: &Common,
    window_secs: f64,
    before: &Value,
    after: &Value,
    room: &Value,
    nodes: &Value,
    listeners: &[(String, BotReport)],
) -> SpeakerRun {
    let bytes = analysis::wan_bytes(before, after);
    let wan_bytes_per_sec: BTreeMap<String, f64> = bytes
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64 / window_secs))
        .collect();
    let inter_region_kbps = wan_bytes_per_sec.values().sum::<f64>() * 8.0 / 1000.0;
    let producers = speaker_producers(room);
    let copies = producers
        .iter()
        .map(|(kind, id)| {
            (
                kind.clone(),
                analysis::copies(&analysis::producer_edges(room, id)),
            )
        })
        .collect();
    let video_edges = producers
        .get("video")
        .map(|id| analysis::producer_edges(room, id).into_iter().collect())
        .unwrap_or_default();
    let mut first: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut lat: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut lat_wan: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut lost: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut without = 0;
    for (node, b) in listeners {
        let region = analysis::region_of(node).to_owned();
        match analysis::join_to_first_frame_ms(b, SPEAKER) {
            Some(ms) => first.entry(region.clone()).or_default().push(ms as f64),
            None => without += 1,
        }
        if let Some((p50, _)) = analysis::latency_us(b, SPEAKER) {
            let ms = p50 as f64 / 1000.0;
            lat.entry(region.clone()).or_default().push(ms);
            lat_wan
                .entry(region.clone())
                .or_default()
                .push(ms - common.wan.one_way_ms("eu", &region));
        }
        let (l, e) = analysis::loss(b, SPEAKER, "video");
        let t = lost.entry(region).or_default();
        t.0 += l;
        t.1 += e;
    }
    let spreads = |m: BTreeMap<String, Vec<f64>>| -> BTreeMap<String, Spread> {
        m.into_iter()
            .filter_map(|(k, v)| Some((k, analysis::spread(v)?)))
            .collect()
    };
    let node_load = nodes["nodes"]
        .as_array()
        .or(nodes.as_array())
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["nodeId"].as_str()?.to_owned(),
                (
                    n["cpuPercent"].as_f64().unwrap_or(0.0),
                    n["consumers"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect();
    SpeakerRun {
        routing: routing.to_owned(),
        listeners: listeners.len(),
        listeners_without_video: without,
        wan_bytes_per_sec,
        inter_region_kbps,
        copies,
        video_edges,
        first_frame_ms: spreads(first),
        latency_ms: spreads(lat),
        latency_minus_wan_ms: spreads(lat_wan),
        video_loss_percent: lost
            .into_iter()
            .map(|(r, (l, e))| {
                (
                    r,
                    if e == 0 {
                        0.0
                    } else {
                        100.0 * l as f64 / e as f64
                    },
                )
            })
            .collect(),
        node_load,
    }
}

fn speaker_report(common: &Common, s: &SpeakerSettings, runs: &[SpeakerRun]) -> String {
    let mut md = String::new();
    let w = &common.wan;
    let _ = writeln!(
        md,
        "# Scenario 1: one speaker, {} listeners in three regions\n",
        common.listeners
    );
    let _ = writeln!(
        md,
        "Nine nodes (eu1-3, us1-3, ap1-3) on the emulated WAN: one-way eu<>us {} ms, eu<>ap {} ms, \
         us<>ap {} ms, ±{} ms jitter. The speaker (Opus + VP8 ~500 kbit/s) publishes on eu1; \
         {} listeners are spread evenly over the nine nodes. After the last join the cluster \
         settles {} s, then the WAN emulator's byte counters are read over {} s.\n",
        w.eu_us_ms, w.eu_ap_ms, w.us_ap_ms, w.jitter_ms, common.listeners, s.settle_secs, s.window_secs
    );
    let _ = writeln!(md, "## Copies and inter-region traffic\n");
    let _ = writeln!(md, "| routing | listeners | video copies across regions | video copies in all | audio copies across regions | inter-region kbit/s |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in runs {
        let v = r.copies.get("video");
        let a = r.copies.get("audio");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} |",
            r.routing,
            r.listeners,
            v.map_or("-".into(), |c| c.inter_region.to_string()),
            v.map_or("-".into(), |c| c.total.to_string()),
            a.map_or("-".into(), |c| c.inter_region.to_string()),
            r.inter_region_kbps
        );
    }
    if let (Some(t), Some(m)) = (
        runs.iter().find(|r| r.routing == "tree"),
        runs.iter().find(|r| r.routing == "mesh"),
    ) {
        if t.inter_region_kbps > 0.0 {
            let _ = writeln!(
                md,
                "\nFull mesh sends {:.2}x the inter-region bytes of the tree.",
                m.inter_region_kbps / t.inter_region_kbps
            );
        }
    }
    let _ = writeln!(md, "\nPer directed WAN link, kbit/s during the window:\n");
    let links: Vec<&String> = runs
        .iter()
        .flat_map(|r| r.wan_bytes_per_sec.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let _ = writeln!(
        md,
        "| link | {} |",
        runs.iter()
            .map(|r| r.routing.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---|".repeat(runs.len()));
    for l in links {
        let _ = writeln!(
            md,
            "| {l} | {} |",
            runs.iter()
                .map(|r| format!(
                    "{:.0}",
                    r.wan_bytes_per_sec.get(l).copied().unwrap_or(0.0) * 8.0 / 1000.0
                ))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    for r in runs {
        let _ = writeln!(
            md,
            "\nVideo tree ({}): {}",
            r.routing,
            r.video_edges
                .iter()
                .map(|(a, b)| format!("{a}→{b}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(md, "\n## Join to first frame and latency per region\n");
    let _ = writeln!(md, "Join to first frame: from the bot's WebSocket connect to the first packet of the speaker's first VP8 keyframe. Latency: each listener's median one-way latency of the video (probe timestamps, one clock); minus WAN subtracts the emulated one-way delay from eu. Cells are p50 / p95 over the listeners.\n");
    let _ = writeln!(
        md,
        "| routing | region | join to first frame | latency | latency minus WAN | video loss |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in runs {
        for region in REGIONS {
            let _ = writeln!(
                md,
                "| {} | {region} | {} | {} | {} | {:.3}% |",
                r.routing,
                fmt_spread(r.first_frame_ms.get(region), "ms"),
                fmt_spread(r.latency_ms.get(region), "ms"),
                fmt_spread(r.latency_minus_wan_ms.get(region), "ms"),
                r.video_loss_percent.get(region).copied().unwrap_or(0.0)
            );
        }
        if r.listeners_without_video > 0 {
            let _ = writeln!(
                md,
                "\n{} listeners ({}) got no video keyframe.\n",
                r.listeners_without_video, r.routing
            );
        }
    }
    let _ = writeln!(md, "\n## Node load during the window\n");
    let _ = writeln!(md, "| routing | node | CPU % of one core | consumers |");
    let _ = writeln!(md, "|---|---|---|---|");
    for r in runs {
        for (n, (cpu, cons)) in &r.node_load {
            let _ = writeln!(md, "| {} | {n} | {cpu:.1} | {cons} |", r.routing);
        }
    }
    md.push_str(&model_section(common, runs));
    let _ = writeln!(md, "\n## Plots\n");
    let _ = writeln!(md, "- `inter-region.png`: kbit/s per directed WAN link, tree vs mesh\n- `first-frame.png`: join to first frame p50 and p95 per region\n- `latency.png`: one-way latency minus the emulated WAN, p50 per region\n");
    let _ = writeln!(md, "![inter-region](inter-region.png)\n\n![first frame](first-frame.png)\n\n![latency](latency.png)");
    md
}

/// A model, clearly labelled, that extrapolates the measured per-stream figures to 100 nodes
/// in 10 regions and 100,000 listeners.
fn model_section(common: &Common, runs: &[SpeakerRun]) -> String {
    let mut md = String::new();
    let Some(tree) = runs.iter().find(|r| r.routing == "tree") else {
        return md;
    };
    let copies = tree
        .copies
        .values()
        .map(|c| c.inter_region)
        .max()
        .unwrap_or(0);
    if copies == 0 || tree.inter_region_kbps <= 0.0 {
        return md;
    }
    // One inter-region copy of the speaker (audio + video), as measured.
    let per_copy_kbps = tree.inter_region_kbps / copies as f64;
    let consumers: u64 = tree.node_load.values().map(|(_, c)| c).sum();
    let cpu: f64 = tree.node_load.values().map(|(c, _)| c).sum();
    let cpu_per_consumer = if consumers == 0 {
        0.0
    } else {
        cpu / consumers as f64
    };
    let (regions, per_region, listeners) = (10.0_f64, 10.0_f64, 100_000.0_f64);
    let nodes = regions * per_region;
    let per_node = listeners / nodes;
    let _ = writeln!(md, "\n## Model (extrapolated, not measured)\n");
    let _ = writeln!(
        md,
        "**This is a model**: it multiplies figures measured above ({} listeners, 9 nodes) out to \
         {nodes:.0} nodes in {regions:.0} regions with {listeners:.0} listeners ({per_node:.0} per node), one speaker. It \
         assumes per-consumer cost stays linear and links are not the bottleneck.\n",
        common.listeners
    );
    let _ = writeln!(md, "- measured: one inter-region copy of the speaker = {per_copy_kbps:.0} kbit/s; node CPU per consumer = {cpu_per_consumer:.3}% of one core ({cpu:.1}% over {consumers} consumers, this build)");
    let tree_copies = regions - 1.0;
    let mesh_copies = nodes - per_region;
    let _ = writeln!(md, "- inter-region copies per producer: tree {tree_copies:.0} (one per other region), full mesh {mesh_copies:.0} (one per node outside the origin region)");
    let _ = writeln!(
        md,
        "- inter-region traffic for the speaker: tree {:.1} Mbit/s, full mesh {:.1} Mbit/s",
        tree_copies * per_copy_kbps / 1000.0,
        mesh_copies * per_copy_kbps / 1000.0
    );
    let _ = writeln!(
        md,
        "- origin node's pipe egress: tree {:.1} Mbit/s ({:.0} copies: {:.0} relays + {:.0} in-region), full mesh {:.1} Mbit/s ({:.0} copies)",
        (tree_copies + per_region - 1.0) * per_copy_kbps / 1000.0,
        tree_copies + per_region - 1.0,
        tree_copies,
        per_region - 1.0,
        (nodes - 1.0) * per_copy_kbps / 1000.0,
        nodes - 1.0
    );
    let _ = writeln!(
        md,
        "- each node's client egress: {per_node:.0} listeners x {per_copy_kbps:.0} kbit/s = {:.0} Mbit/s; CPU ≈ {:.0}% of one core at the measured per-consumer cost",
        per_node * per_copy_kbps / 1000.0,
        per_node * cpu_per_consumer
    );
    md
}

fn speaker_plots(common: &Common, runs: &[SpeakerRun]) -> Result<()> {
    let links: Vec<String> = runs
        .iter()
        .flat_map(|r| r.wan_bytes_per_sec.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let bars = BarChart {
        title: format!(
            "Inter-region traffic, 1 speaker, {} listeners",
            common.listeners
        ),
        y_label: "kbit/s".into(),
        categories: links.clone(),
        series: runs
            .iter()
            .map(|r| {
                (
                    r.routing.clone(),
                    links
                        .iter()
                        .map(|l| r.wan_bytes_per_sec.get(l).copied().unwrap_or(0.0) * 8.0 / 1000.0)
                        .collect(),
                )
            })
            .collect(),
        width: 900,
        height: 500,
    };
    write_png(&common.out, "inter-region.png", bars.render_png())?;
    let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    let mut series = Vec::new();
    for r in runs {
        for (label, pick) in [("p50", 0), ("p95", 1)] {
            series.push((
                format!("{} {label}", r.routing),
                regions
                    .iter()
                    .map(|g| {
                        r.first_frame_ms
                            .get(g)
                            .map_or(0.0, |s| if pick == 0 { s.p50 } else { s.p95 })
                    })
                    .collect(),
            ));
        }
    }
    let bars = BarChart {
        title: "Join to first frame per region".into(),
        y_label: "ms".into(),
        categories: regions.clone(),
        series,
        width: 900,
        height: 500,
    };
    write_png(&common.out, "first-frame.png", bars.render_png())?;
    let bars = BarChart {
        title: "One-way latency minus emulated WAN (p50 of listener medians)".into(),
        y_label: "ms".into(),
        categories: regions.clone(),
        series: runs
            .iter()
            .map(|r| {
                (
                    r.routing.clone(),
                    regions
                        .iter()
                        .map(|g| r.latency_minus_wan_ms.get(g).map_or(0.0, |s| s.p50))
                        .collect(),
                )
            })
            .collect(),
        width: 900,
        height: 500,
    };
    write_png(&common.out, "latency.png", bars.render_png())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scenario 2: the relay of a region killed.

/// Settings of scenario 2.
#[derive(Debug, Clone)]
pub struct RelayKillSettings {
    /// The region whose relay is killed.
    pub region: String,
    /// Seconds after the last join before the kill.
    pub before_secs: f64,
    /// Seconds after the kill.
    pub after_secs: f64,
}

/// What scenario 2 measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayKillResult {
    /// The node killed.
    pub killed: String,
    /// When (Unix ms).
    pub killed_at_ms: u64,
    /// The video's relay in that region afterwards (from `rooms`), if any.
    pub new_relay: Option<String>,
    /// Video recovery per region over listeners on surviving nodes, ms.
    pub video_recovery_ms: BTreeMap<String, Spread>,
    /// Audio recovery, likewise.
    pub audio_recovery_ms: BTreeMap<String, Spread>,
    /// Listeners on surviving nodes that never got video back, per region.
    pub not_recovered: BTreeMap<String, usize>,
    /// Listeners that were on the killed node (their node is gone).
    pub on_killed_node: usize,
}

/// Runs scenario 2 and writes its report.
pub fn relay_kill(common: &Common, s: &RelayKillSettings) -> Result<RelayKillResult> {
    std::fs::create_dir_all(&common.out)?;
    let dir = common.out.join("raw");
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "pipemesh-sim: relay-kill: cluster up, {} listeners",
        common.listeners
    );
    let c = Cluster::up(&common.paths, &format!("{}kill", common.tag), "tree")?;
    common.wan.apply(&c)?;
    let listen = (s.before_secs + s.after_secs + 6.0).ceil() as u64;
    let bots = start_bots(&c, common, &dir, listen)?;
    sleep_secs(s.before_secs);
    let room = c.room(ROOM)?;
    std::fs::write(
        dir.join("room-before.json"),
        serde_json::to_vec_pretty(&room)?,
    )?;
    let video = speaker_producers(&room)
        .get("video")
        .cloned()
        .ok_or_else(|| anyhow!("the speaker's video is not in `rooms {ROOM}`"))?;
    let relay = relay_in(&room, &video, &s.region)
        .ok_or_else(|| anyhow!("no relay of the video in {}", s.region))?;
    eprintln!("pipemesh-sim: relay-kill: killing {relay}");
    let killed_at_ms = unix_ms();
    c.kill(&relay)?;
    sleep_secs(s.after_secs);
    let room_after = c.room(ROOM)?;
    std::fs::write(
        dir.join("room-after.json"),
        serde_json::to_vec_pretty(&room_after)?,
    )?;
    let new_relay = relay_in(&room_after, &video, &s.region);
    let reports = finish(bots.listeners, listen);
    drop(bots.speaker);
    drop(c);
    let mut on_killed_node = 0;
    let mut video_rec: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut audio_rec: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut not_recovered: BTreeMap<String, usize> = BTreeMap::new();
    let mut rates: BTreeMap<String, (usize, BTreeMap<i64, f64>)> = BTreeMap::new();
    for (node, r) in reports {
        if node == relay {
            // Its bots lost their node: count them, whatever their process reported.
            on_killed_node += r.map_or(0, |r| r.bots.len());
            continue;
        }
        let r = r.with_context(|| format!("listeners on {node}"))?;
        let region = analysis::region_of(&node).to_owned();
        for b in &r.bots {
            match analysis::recovery_ms(b, SPEAKER, "video", killed_at_ms, 2_000) {
                Some(ms) => video_rec.entry(region.clone()).or_default().push(ms as f64),
                None => *not_recovered.entry(region.clone()).or_default() += 1,
            }
            if let Some(ms) = analysis::recovery_ms(b, SPEAKER, "audio", killed_at_ms, 2_000) {
                audio_rec.entry(region.clone()).or_default().push(ms as f64);
            }
            let e = rates.entry(region.clone()).or_default();
            e.0 += 1;
            for (t, pps) in analysis::arrival_rate(b, SPEAKER, "video", killed_at_ms) {
                *e.1.entry((t * 10.0).round() as i64).or_default() += pps;
            }
        }
    }
    let spreads = |m: BTreeMap<String, Vec<f64>>| -> BTreeMap<String, Spread> {
        m.into_iter()
            .filter_map(|(k, v)| Some((k, analysis::spread(v)?)))
            .collect()
    };
    let result = RelayKillResult {
        killed: relay.clone(),
        killed_at_ms,
        new_relay,
        video_recovery_ms: spreads(video_rec),
        audio_recovery_ms: spreads(audio_rec),
        not_recovered,
        on_killed_node,
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Scenario 2: a relay node killed mid-room\n");
    let _ = writeln!(
        md,
        "Tree routing; the speaker on eu1, {} listeners over the nine nodes. {:.0} s after the last join the \
         video's relay in {} (`{}`, found with `pipemesh rooms {ROOM}`) is killed with SIGKILL, as a crash \
         would. Recovery per listener: from the kill to the end of the media gap it saw (0 when it saw none).\n",
        common.listeners, s.before_secs, s.region, result.killed
    );
    let _ = writeln!(
        md,
        "- relay after the kill: {}",
        result.new_relay.as_deref().unwrap_or("none found")
    );
    let _ = writeln!(
        md,
        "- listeners that were on {}: {} (their node is gone; clients would reconnect elsewhere)\n",
        result.killed, result.on_killed_node
    );
    let _ = writeln!(
        md,
        "| region | video recovery p50 / p95 | max | audio recovery p50 / p95 | not recovered |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for region in REGIONS {
        let v = result.video_recovery_ms.get(region);
        let _ = writeln!(
            md,
            "| {region} | {} | {} | {} | {} |",
            fmt_spread(v, "ms"),
            v.map_or("-".into(), |s| format!("{:.0} ms", s.max)),
            fmt_spread(result.audio_recovery_ms.get(region), "ms"),
            result.not_recovered.get(region).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(md, "\n![recovery](recovery.png)\n\n`recovery.png`: video packets per second per listener, by region, around the kill (t = 0).");
    std::fs::write(common.out.join("report.md"), md)?;
    std::fs::write(
        common.out.join("result.json"),
        serde_json::to_vec_pretty(
            &json!({"scenario": "relay-kill", "listeners": common.listeners, "wan": common.wan, "result": result}),
        )?,
    )?;
    let lo = -(s.before_secs.min(5.0) * 10.0) as i64;
    let hi = (s.after_secs * 10.0) as i64;
    let chart = LineChart {
        series: rates
            .into_iter()
            .map(|(region, (n, m))| Series {
                name: region,
                points: m
                    .into_iter()
                    .filter(|(t, _)| (lo..=hi).contains(t))
                    .map(|(t, v)| (t as f64 / 10.0, v / n.max(1) as f64))
                    .collect(),
            })
            .collect(),
        markers: vec![(0.0, format!("{} killed", result.killed))],
        y_min_zero: true,
        ..LineChart::new(
            "Video packets/s per listener around the relay's death",
            "seconds since the kill",
            "packets/s",
        )
    };
    write_png(&common.out, "recovery.png", chart.render_png())?;
    Ok(result)
}

/// The node of `region` that `producer` enters the region through (its tree's edge from
/// another region into it).
fn relay_in(room: &Value, producer: &str, region: &str) -> Option<String> {
    analysis::producer_edges(room, producer)
        .into_iter()
        .find(|(a, b)| analysis::region_of(a) != region && analysis::region_of(b) == region)
        .map(|(_, b)| b)
}

// ---------------------------------------------------------------------------------------
// Scenario 3: 1% loss and 100 ms RTT on one inter-region link.

/// Settings of scenario 3.
#[derive(Debug, Clone)]
pub struct LossySettings {
    /// The lossy link (both directions), e.g. `eu<>us`.
    pub link: String,
    /// Loss on it, 0..1.
    pub loss: f64,
    /// One-way delay on it, ms (100 ms RTT = 50).
    pub delay_ms: f64,
    /// Seconds of the measuring window.
    pub window_secs: f64,
}

/// What scenario 3 measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LossyResult {
    /// Per directed link: (packets offered, dropped for loss) during the window.
    pub link_loss: BTreeMap<String, (u64, u64)>,
    /// Listener video loss per region after repair: (lost, expected).
    pub video: BTreeMap<String, (u64, u64)>,
    /// Listener audio loss per region after repair, likewise.
    pub audio: BTreeMap<String, (u64, u64)>,
    /// Listeners per region.
    pub listeners: BTreeMap<String, usize>,
}

fn pct((l, e): (u64, u64)) -> f64 {
    if e == 0 {
        0.0
    } else {
        100.0 * l as f64 / e as f64
    }
}

/// Runs scenario 3 and writes its report.
pub fn lossy_link(common: &Common, s: &LossySettings) -> Result<LossyResult> {
    std::fs::create_dir_all(&common.out)?;
    let dir = common.out.join("raw");
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "pipemesh-sim: lossy-link: cluster up, {} listeners",
        common.listeners
    );
    let c = Cluster::up(&common.paths, &format!("{}loss", common.tag), "tree")?;
    common.wan.apply(&c)?;
    // The listeners run for the whole window: they join on a clean WAN, then the link turns
    // lossy, so the loss covers their whole measured lifetime but their joins.
    let listen = (s.window_secs + 4.0).ceil() as u64;
    let bots = start_bots(&c, common, &dir, listen)?;
    let before = c.wan_stats()?;
    c.wan(&format!(
        "set {} delay_ms={} loss={}",
        s.link, s.delay_ms, s.loss
    ))?;
    sleep_secs(s.window_secs);
    let after = c.wan_stats()?;
    let room = c.room(ROOM)?;
    std::fs::write(dir.join("room.json"), serde_json::to_vec_pretty(&room)?)?;
    let reports = finish(bots.listeners, listen);
    drop(bots.speaker);
    drop(c);
    let mut result = LossyResult {
        link_loss: BTreeMap::new(),
        video: BTreeMap::new(),
        audio: BTreeMap::new(),
        listeners: BTreeMap::new(),
    };
    for a in REGIONS {
        for b in REGIONS {
            if a != b {
                let l = format!("{a}>{b}");
                let v = analysis::wan_loss(&before, &after, &l);
                if v.0 > 0 {
                    result.link_loss.insert(l, v);
                }
            }
        }
    }
    for (node, r) in reports {
        let r = r.with_context(|| format!("listeners on {node}"))?;
        let region = analysis::region_of(&node).to_owned();
        for b in &r.bots {
            *result.listeners.entry(region.clone()).or_default() += 1;
            for (kind, m) in [("video", &mut result.video), ("audio", &mut result.audio)] {
                let (l, e) = analysis::loss(b, SPEAKER, kind);
                let t = m.entry(region.clone()).or_default();
                t.0 += l;
                t.1 += e;
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Scenario 3: {:.0}% loss and {:.0} ms RTT on {}\n",
        s.loss * 100.0,
        s.delay_ms * 2.0,
        s.link
    );
    let _ =
        writeln!(
        md,
        "Tree routing; the speaker on eu1 (Opus and VP8), {} listeners over the nine nodes. Once \
         all have joined, {} gets {:.0} ms one-way delay and {:.1}% random loss each way for \
         {:.0} s; other links keep the default WAN. Listener loss is what reached the listeners \
         after repair: a far node's pipe producer NACKs the gaps of every stream it receives \
         over the pipe, audio included, and the origin (or relay) resends from its pipe buffer. \
         The link's loss counts retransmissions and NACKs too.\n",
        common.listeners, s.link, s.delay_ms, s.loss * 100.0, s.window_secs
    );
    let _ = writeln!(
        md,
        "| directed link | packets offered | dropped by the emulator | loss |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (l, (n, d)) in &result.link_loss {
        let _ = writeln!(md, "| {l} | {n} | {d} | {:.2}% |", pct((*d, *n)));
    }
    let _ = writeln!(
        md,
        "\n| region | listeners | video loss after repair | audio loss after repair |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for region in REGIONS {
        let v = result.video.get(region).copied().unwrap_or((0, 0));
        let a = result.audio.get(region).copied().unwrap_or((0, 0));
        let _ = writeln!(
            md,
            "| {region} | {} | {:.3}% ({} of {}) | {:.3}% ({} of {}) |",
            result.listeners.get(region).copied().unwrap_or(0),
            pct(v),
            v.0,
            v.1,
            pct(a),
            a.0,
            a.1
        );
    }
    let _ = writeln!(md, "\n![loss](loss.png)\n\n`loss.png`: per region, listener loss of video and audio after repair, percent.");
    std::fs::write(common.out.join("report.md"), md)?;
    std::fs::write(
        common.out.join("result.json"),
        serde_json::to_vec_pretty(
            &json!({"scenario": "lossy-link", "listeners": common.listeners, "wan": common.wan,
            "link": s.link, "loss": s.loss, "delayMs": s.delay_ms, "result": result}),
        )?,
    )?;
    let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    let chart = BarChart {
        title: format!(
            "Listener loss after repair, {:.0}% loss on {}",
            s.loss * 100.0,
            s.link
        ),
        y_label: "% lost".into(),
        categories: regions.clone(),
        series: vec![
            (
                "video".into(),
                regions
                    .iter()
                    .map(|g| pct(result.video.get(g).copied().unwrap_or((0, 0))))
                    .collect(),
            ),
            (
                "audio".into(),
                regions
                    .iter()
                    .map(|g| pct(result.audio.get(g).copied().unwrap_or((0, 0))))
                    .collect(),
            ),
        ],
        width: 900,
        height: 500,
    };
    write_png(&common.out, "loss.png", chart.render_png())?;
    Ok(result)
}

// ---------------------------------------------------------------------------------------
// Scenario 4: a congested inter-region link, with and without layer shedding.

/// Settings of scenario 4.
#[derive(Debug, Clone)]
pub struct CongestedSettings {
    /// The directed link limited, from the speaker's region (`eu>us`).
    pub link: String,
    /// Its rate, kbit/s.
    pub rate_kbps: f64,
    /// Its queue, bytes (beyond it, tail drop).
    pub queue_bytes: u64,
    /// Seconds after the last join before the limit.
    pub before_secs: f64,
    /// Seconds measured under the limit.
    pub window_secs: f64,
    /// Runs: shedding on and/or off.
    pub shedding: Vec<bool>,
}

/// One second of scenario 4.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CongestedSample {
    /// Seconds since the limit.
    pub t: f64,
    /// kbit/s the link delivered over the last second.
    pub delivered_kbps: f64,
    /// Packets it dropped from its full queue over the last second.
    pub queue_drops: u64,
    /// Layers eu1 withheld from the link's far region (the highest toward any node there).
    pub shed_layers: u64,
}

/// What one run of scenario 4 measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CongestedRun {
    /// Shedding on.
    pub shedding: bool,
    /// Once a second under the limit.
    pub timeline: Vec<CongestedSample>,
    /// Seconds from the limit to the first shed layer.
    pub first_shed_secs: Option<f64>,
    /// Highest shed level seen.
    pub max_shed: u64,
    /// Listener video loss per region after repair: (lost, expected).
    pub video_loss: BTreeMap<String, (u64, u64)>,
    /// Listeners per region by the size of the last keyframe they received (`640x480`...).
    pub last_sizes: BTreeMap<String, BTreeMap<String, usize>>,
    /// The link under the limit: (packets offered, dropped from a full queue).
    pub link_drops: (u64, u64),
}

/// Runs scenario 4 and writes its report.
pub fn congested_link(common: &Common, s: &CongestedSettings) -> Result<Vec<CongestedRun>> {
    let (from, to) = s
        .link
        .split_once('>')
        .ok_or_else(|| anyhow!("--link: a directed link like eu>us"))?;
    if from != "eu" || !REGIONS.contains(&to) || to == "eu" {
        return Err(anyhow!(
            "--link: from eu (the speaker's region) to us or ap"
        ));
    }
    std::fs::create_dir_all(&common.out)?;
    let mut runs = Vec::new();
    for &on in &s.shedding {
        let mode = if on { "on" } else { "off" };
        eprintln!(
            "pipemesh-sim: congested-link, shedding {mode}: cluster up, {} listeners",
            common.listeners
        );
        let dir = common.out.join(format!("raw-shedding-{mode}"));
        std::fs::create_dir_all(&dir)?;
        let c = Cluster::up_with(
            &common.paths,
            &format!("{}sh{mode}", common.tag),
            "tree",
            &format!("--pipe-layer-shedding {on}"),
        )?;
        common.wan.apply(&c)?;
        let listen = (s.before_secs + s.window_secs + 6.0).ceil() as u64;
        let bots = start_bots_with(&c, common, &dir, listen, &["--simulcast", "3"])?;
        sleep_secs(s.before_secs);
        let mut last = c.wan_stats()?;
        let start_stats = last.clone();
        c.wan(&format!(
            "set {} rate_kbps={} queue_bytes={}",
            s.link, s.rate_kbps, s.queue_bytes
        ))?;
        let t0 = std::time::Instant::now();
        let mut timeline = Vec::new();
        let mut tick = t0;
        let mut last_at = t0;
        while t0.elapsed().as_secs_f64() < s.window_secs {
            tick += Duration::from_secs(1);
            std::thread::sleep(tick.saturating_duration_since(std::time::Instant::now()));
            let now = c.wan_stats()?;
            let now_at = std::time::Instant::now();
            let span = now_at
                .saturating_duration_since(last_at)
                .as_secs_f64()
                .max(0.001);
            last_at = now_at;
            let bytes = analysis::wan_bytes(&last, &now);
            let drops = now["links"][s.link.as_str()]["stats"]["dropped_queue"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(
                    last["links"][s.link.as_str()]["stats"]["dropped_queue"]
                        .as_u64()
                        .unwrap_or(0),
                );
            // eu1's own view, asked inside eu: not across the congested link.
            let shed = c
                .admin("eu1", "/api/v1/links")
                .map(|v| analysis::shed_toward(&v, to))
                .unwrap_or(0);
            timeline.push(CongestedSample {
                t: now_at.saturating_duration_since(t0).as_secs_f64(),
                delivered_kbps: bytes.get(&s.link).copied().unwrap_or(0) as f64 * 8.0
                    / 1000.0
                    / span,
                queue_drops: drops,
                shed_layers: shed,
            });
            last = now;
        }
        let room = c.room(ROOM)?;
        std::fs::write(dir.join("room.json"), serde_json::to_vec_pretty(&room)?)?;
        let offered = analysis::wan_loss(&start_stats, &last, &s.link).0;
        let dropped = last["links"][s.link.as_str()]["stats"]["dropped_queue"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(
                start_stats["links"][s.link.as_str()]["stats"]["dropped_queue"]
                    .as_u64()
                    .unwrap_or(0),
            );
        let reports = finish(bots.listeners, listen);
        drop(bots.speaker);
        drop(c);
        let mut run = CongestedRun {
            shedding: on,
            first_shed_secs: timeline.iter().find(|x| x.shed_layers > 0).map(|x| x.t),
            max_shed: timeline.iter().map(|x| x.shed_layers).max().unwrap_or(0),
            timeline,
            video_loss: BTreeMap::new(),
            last_sizes: BTreeMap::new(),
            link_drops: (offered, dropped),
        };
        for (node, r) in reports {
            let r = r.with_context(|| format!("listeners on {node}"))?;
            let region = analysis::region_of(&node).to_owned();
            for b in &r.bots {
                let (l, e) = analysis::loss(b, SPEAKER, "video");
                let t = run.video_loss.entry(region.clone()).or_default();
                t.0 += l;
                t.1 += e;
                let size = analysis::streams_from(b, SPEAKER, "video")
                    .filter_map(|st| {
                        Some(format!(
                            "{}x{}",
                            st.stats.last_keyframe_width?, st.stats.last_keyframe_height?
                        ))
                    })
                    .last()
                    .unwrap_or_else(|| "none".into());
                *run.last_sizes
                    .entry(region.clone())
                    .or_default()
                    .entry(size)
                    .or_default() += 1;
            }
        }
        runs.push(run);
    }
    congested_report(common, s, to, &runs)?;
    Ok(runs)
}

fn congested_report(
    common: &Common,
    s: &CongestedSettings,
    to: &str,
    runs: &[CongestedRun],
) -> Result<()> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Scenario 4: a congested inter-region link, with and without layer shedding\n"
    );
    let _ = writeln!(
        md,
        "Tree routing; the speaker on eu1 publishes VP8 simulcast (`pipemesh bot --simulcast 3`: \
         160x120 ~100 kbit/s, 320x240 ~300 kbit/s, 640x480 ~900 kbit/s) and Opus; {} listeners \
         over the nine nodes. {:.0} s after the last join, {} is limited to {:.0} kbit/s with a \
         {} byte queue (tail drop) for {:.0} s: less than the three layers need, more than the \
         lower two. Each run once with `--pipe-layer-shedding true` (the default) and once with \
         `false`.\n",
        common.listeners, s.before_secs, s.link, s.rate_kbps, s.queue_bytes, s.window_secs
    );
    let _ = writeln!(md, "| shedding | first layer shed after | highest level | link: packets offered / dropped at the queue | {to} video loss | eu video loss | ap video loss |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in runs {
        let loss = |g: &str| pct(r.video_loss.get(g).copied().unwrap_or((0, 0)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} / {} ({:.1}%) | {:.2}% | {:.2}% | {:.2}% |",
            if r.shedding { "on" } else { "off" },
            r.first_shed_secs
                .map_or("-".into(), |t| format!("{t:.0} s")),
            r.max_shed,
            r.link_drops.0,
            r.link_drops.1,
            pct((r.link_drops.1, r.link_drops.0)),
            loss(to),
            loss("eu"),
            loss("ap")
        );
    }
    let _ = writeln!(
        md,
        "\nLast keyframe size each listener received, by region:\n"
    );
    let _ = writeln!(md, "| shedding | region | listeners by size |");
    let _ = writeln!(md, "|---|---|---|");
    for r in runs {
        for g in REGIONS {
            let sizes = r
                .last_sizes
                .get(g)
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {g} | {sizes} |",
                if r.shedding { "on" } else { "off" }
            );
        }
    }
    let _ = writeln!(md, "\nLoss counts the whole listening time (the clean part included); with shedding on it comes from the seconds before the first shed. Video loss is after repair (NACKs over the pipe).\n");
    let _ = writeln!(md, "![link](congested-link.png)\n\n`congested-link.png`: kbit/s {} delivered each second under the limit, per run; the marker is the first shed layer.\n\n![loss](congested-loss.png)\n\n`congested-loss.png`: listener video loss per region, per run.", s.link);
    std::fs::write(common.out.join("report.md"), md)?;
    std::fs::write(
        common.out.join("result.json"),
        serde_json::to_vec_pretty(
            &json!({"scenario": "congested-link", "listeners": common.listeners,
            "wan": common.wan, "link": s.link, "rateKbps": s.rate_kbps, "queueBytes": s.queue_bytes, "runs": runs}),
        )?,
    )?;
    let chart = LineChart {
        series: runs
            .iter()
            .map(|r| Series {
                name: format!("shedding {}", if r.shedding { "on" } else { "off" }),
                points: r.timeline.iter().map(|x| (x.t, x.delivered_kbps)).collect(),
            })
            .collect(),
        markers: runs
            .iter()
            .filter_map(|r| {
                r.first_shed_secs
                    .map(|t| (t, "first layer shed".to_owned()))
            })
            .collect(),
        y_min_zero: true,
        ..LineChart::new(
            format!("{} under a {:.0} kbit/s limit", s.link, s.rate_kbps),
            "seconds since the limit",
            "kbit/s delivered",
        )
    };
    write_png(&common.out, "congested-link.png", chart.render_png())?;
    let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    let bars = BarChart {
        title: "Listener video loss per region".into(),
        y_label: "% lost".into(),
        categories: regions.clone(),
        series: runs
            .iter()
            .map(|r| {
                (
                    format!("shedding {}", if r.shedding { "on" } else { "off" }),
                    regions
                        .iter()
                        .map(|g| pct(r.video_loss.get(g).copied().unwrap_or((0, 0))))
                        .collect(),
                )
            })
            .collect(),
        width: 900,
        height: 500,
    };
    write_png(&common.out, "congested-loss.png", bars.render_png())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_spread_over_nine_nodes() {
        let s = spread_listeners(20);
        assert_eq!(s.len(), 9);
        assert_eq!(s.iter().map(|(_, n)| n).sum::<usize>(), 20);
        assert_eq!(s[0], ("eu1".to_owned(), 3));
        assert_eq!(s[1], ("eu2".to_owned(), 3));
        assert_eq!(s[2], ("eu3".to_owned(), 2));
        assert_eq!(s[8], ("ap3".to_owned(), 2));
        assert!(spread_listeners(0).iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn wan_delays_are_symmetric() {
        let w = Wan::default();
        assert_eq!(w.one_way_ms("eu", "us"), 40.0);
        assert_eq!(w.one_way_ms("us", "eu"), 40.0);
        assert_eq!(w.one_way_ms("ap", "us"), 100.0);
        assert_eq!(w.one_way_ms("eu", "eu"), 0.0);
    }

    #[test]
    fn relay_is_the_entry_into_the_region() {
        let room = json!({"producers": [{"producerId": "v", "paths": [
            ["eu1","us2"],["eu1","us2","us1"],["eu1","ap3"],["eu1","eu2"]]}]});
        assert_eq!(relay_in(&room, "v", "us").as_deref(), Some("us2"));
        assert_eq!(relay_in(&room, "v", "ap").as_deref(), Some("ap3"));
        assert_eq!(relay_in(&room, "v", "eu"), None);
    }

    #[test]
    fn speaker_producers_by_kind() {
        let room = json!({"producers": [
            {"producerId": "a1", "peerId": "speaker", "kind": "audio"},
            {"producerId": "v1", "peerId": "speaker", "kind": "video"},
            {"producerId": "x", "peerId": "other", "kind": "video"}]});
        let p = speaker_producers(&room);
        assert_eq!(p.len(), 2);
        assert_eq!(p["video"], "v1");
    }
}
