//! Sans-IO part of the pipe benchmark: what one measurement window recorded, the per-scenario
//! summary (medians over windows for rates and CPU, pooled percentiles for latency), and the
//! printed report.

use std::collections::BTreeMap;
use std::fmt;

/// What one measurement window of one scenario recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Wall-clock length of the window, seconds.
    pub secs: f64,
    /// CPU time of each node over the window, µs (in [`Report::nodes`] order).
    pub cpu_us: Vec<f64>,
    /// RTP packets the nodes sent to consumers (sum over nodes of `pipemesh_rtp_sent_total`).
    pub delivered: u64,
    /// RTP packets the consumer bots received (their transports' counters), as a check.
    pub bot_received: u64,
    /// RTP packets the producer's node received from it (`pipemesh_rtp_received_total`).
    pub ingress: u64,
    /// One-way latency samples of the window (µs), every consumer and stream pooled.
    pub latency_us: Vec<i64>,
    /// Samples that fell out of the bots' latency rings before they were read.
    pub latency_lost: u64,
    /// Increase of every `/metrics` counter whose name contains `pipe`, keyed `node:series`.
    pub pipe_counters: BTreeMap<String, f64>,
    /// CPU time of the bench process itself (the bots) over the window, µs.
    pub bots_cpu_us: f64,
    /// Busy CPU time of the whole host (every core) over the window, µs; NaN if unknown.
    pub host_busy_us: f64,
}

/// Latency percentiles, µs (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Number of samples.
    pub samples: usize,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place); `None` if empty.
    pub fn of(samples: &mut [i64]) -> Option<Self> {
        samples.sort_unstable();
        Some(Latency {
            p50: percentile(samples, 50.0)? as f64,
            p99: percentile(samples, 99.0)? as f64,
            samples: samples.len(),
        })
    }
}

/// Nearest-rank percentile of sorted `v`.
pub fn percentile(v: &[i64], p: f64) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

/// Median of the non-NaN values of `v` (mean of the middle two for an even count); NaN if
/// there are none.
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One scenario's figures over its windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Row label.
    pub name: String,
    /// Windows measured.
    pub windows: usize,
    /// Median delivered packets per second.
    pub delivered_per_s: f64,
    /// Median packets per second the consumer bots received.
    pub received_per_s: f64,
    /// Median ingress packets per second.
    pub ingress_per_s: f64,
    /// Median CPU µs per delivered packet, per node.
    pub cpu_us_per_pkt: Vec<f64>,
    /// Median of the per-window total (all nodes) CPU µs per delivered packet.
    pub total_us_per_pkt: f64,
    /// Smallest and largest per-window total.
    pub total_range: (f64, f64),
    /// Median CPU per node, ms per second (share of one core × 1000).
    pub cpu_ms_per_s: Vec<f64>,
    /// Latency: medians over windows of each window's p50 and p99 (robust to a window the
    /// host disturbed); `samples` counts every window's.
    pub latency: Option<Latency>,
    /// Latency over every window's samples pooled.
    pub pooled_latency: Option<Latency>,
    /// Latency samples lost to the bots' rings.
    pub latency_lost: u64,
    /// Median rate of each pipe counter, per second.
    pub pipe_rates: BTreeMap<String, f64>,
    /// Median CPU of the bench process (bots), ms per second.
    pub bots_ms_per_s: f64,
    /// Median busy CPU of the host outside the nodes and the bench process, ms per second.
    pub other_ms_per_s: f64,
}

impl Summary {
    /// Summarises `windows` (each with `nodes` CPU readings).
    pub fn of(name: &str, nodes: usize, windows: &[Window]) -> Self {
        let per_window = |f: &dyn Fn(&Window) -> f64| -> f64 {
            median(&windows.iter().map(f).collect::<Vec<_>>())
        };
        let per_pkt = |w: &Window, us: f64| {
            if w.delivered == 0 {
                f64::NAN
            } else {
                us / w.delivered as f64
            }
        };
        let totals: Vec<f64> = windows
            .iter()
            .map(|w| per_pkt(w, w.cpu_us.iter().sum()))
            .collect();
        let finite: Vec<f64> = totals.iter().copied().filter(|x| x.is_finite()).collect();
        let mut pooled: Vec<i64> = windows
            .iter()
            .flat_map(|w| w.latency_us.iter().copied())
            .collect();
        let mut pipe_keys: Vec<&String> = windows
            .iter()
            .flat_map(|w| w.pipe_counters.keys())
            .collect();
        pipe_keys.sort();
        pipe_keys.dedup();
        Summary {
            name: name.to_owned(),
            windows: windows.len(),
            delivered_per_s: per_window(&|w| w.delivered as f64 / w.secs),
            received_per_s: per_window(&|w| w.bot_received as f64 / w.secs),
            ingress_per_s: per_window(&|w| w.ingress as f64 / w.secs),
            cpu_us_per_pkt: (0..nodes)
                .map(|i| per_window(&|w| per_pkt(w, w.cpu_us.get(i).copied().unwrap_or(0.0))))
                .collect(),
            total_us_per_pkt: median(&totals),
            total_range: (
                finite.iter().copied().fold(f64::NAN, f64::min),
                finite.iter().copied().fold(f64::NAN, f64::max),
            ),
            cpu_ms_per_s: (0..nodes)
                .map(|i| per_window(&|w| w.cpu_us.get(i).copied().unwrap_or(0.0) / w.secs / 1e3))
                .collect(),
            latency: {
                let per: Vec<Latency> = windows
                    .iter()
                    .filter_map(|w| Latency::of(&mut w.latency_us.clone()))
                    .collect();
                (!per.is_empty()).then(|| Latency {
                    p50: median(&per.iter().map(|l| l.p50).collect::<Vec<_>>()),
                    p99: median(&per.iter().map(|l| l.p99).collect::<Vec<_>>()),
                    samples: per.iter().map(|l| l.samples).sum(),
                })
            },
            pooled_latency: Latency::of(&mut pooled),
            latency_lost: windows.iter().map(|w| w.latency_lost).sum(),
            pipe_rates: pipe_keys
                .into_iter()
                .map(|k| {
                    let r =
                        per_window(&|w| w.pipe_counters.get(k).copied().unwrap_or(0.0) / w.secs);
                    (k.clone(), r)
                })
                .collect(),
            bots_ms_per_s: per_window(&|w| w.bots_cpu_us / w.secs / 1e3),
            other_ms_per_s: per_window(&|w| {
                (w.host_busy_us - w.bots_cpu_us - w.cpu_us.iter().sum::<f64>()) / w.secs / 1e3
            }),
        }
    }
}

/// The benchmark's result: scenario 1 (all on a) and, when pipes ran, scenario 2 (consumers on
/// b), plus the idle CPU of the linked nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Node ids, in the order of the per-node columns.
    pub nodes: Vec<String>,
    /// Consumers per scenario.
    pub consumers: usize,
    /// Rounds (each scenario ran this many times, alternating).
    pub rounds: usize,
    /// Windows per scenario and round.
    pub windows: usize,
    /// Window length, seconds.
    pub window_secs: f64,
    /// Scenario 1: producer and consumers on a.
    pub local: Summary,
    /// Scenario 2: producer on a, consumers on b.
    pub piped: Option<Summary>,
    /// CPU of each node with no bots, ms per second.
    pub idle_ms_per_s: Vec<f64>,
    /// WARN/ERROR lines each node logged during the run, by kind.
    pub node_problems: Vec<BTreeMap<String, u64>>,
    /// Cores of the host, if known.
    pub host_cores: Option<usize>,
}

fn ratio(a: f64, b: f64) -> String {
    if b.abs() < 1e-9 || !a.is_finite() || !b.is_finite() {
        "-".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<&Summary> = std::iter::once(&self.local).chain(&self.piped).collect();
        writeln!(
            f,
            "pipe bench: 1 producer (Opus + VP8 bot) on node a, {} consumer bots; loopback; \
             {} round(s) x {} windows x {:.1} s per scenario{}",
            self.consumers,
            self.rounds,
            self.windows,
            self.window_secs,
            if self.rounds > 1 {
                ", scenarios alternating"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "CPU: node process CPU time / RTP packets the nodes delivered to consumers \
             (median over windows)"
        )?;
        writeln!(
            f,
            "latency: one-way, producer bot -> consumer bots, same clock; p50 and p99 of each \
             window, median over windows (µs)"
        )?;
        writeln!(f)?;
        let mut head = format!("{:<22} {:>9} {:>9}", "scenario", "in pkt/s", "out pkt/s");
        for n in &self.nodes {
            head.push_str(&format!(" {:>8}", format!("{n} µs/pkt")));
        }
        head.push_str(&format!(
            " {:>9} {:>13} {:>7} {:>7} {:>8}",
            "total µs", "(range)", "p50 µs", "p99 µs", "samples"
        ));
        writeln!(f, "{head}")?;
        for s in &rows {
            let mut line = format!(
                "{:<22} {:>9} {:>9}",
                s.name,
                num(s.ingress_per_s, 0),
                num(s.delivered_per_s, 0)
            );
            for v in &s.cpu_us_per_pkt {
                line.push_str(&format!(" {:>8}", num(*v, 2)));
            }
            let (p50, p99, n) = s.latency.map_or(("-".into(), "-".into(), 0), |l| {
                (num(l.p50, 0), num(l.p99, 0), l.samples)
            });
            line.push_str(&format!(
                " {:>9} {:>13} {:>7} {:>7} {:>8}",
                num(s.total_us_per_pkt, 2),
                format!("{}-{}", num(s.total_range.0, 2), num(s.total_range.1, 2)),
                p50,
                p99,
                n
            ));
            writeln!(f, "{line}")?;
        }
        if let Some(p) = &self.piped {
            let l = &self.local;
            let mut line = format!(
                "{:<22} {:>9} {:>9}",
                "ratio 2 / 1",
                "",
                ratio(p.delivered_per_s, l.delivered_per_s)
            );
            for (a, b) in p.cpu_us_per_pkt.iter().zip(&l.cpu_us_per_pkt) {
                line.push_str(&format!(" {:>8}", ratio(*a, *b)));
            }
            let (r50, r99) = match (p.latency, l.latency) {
                (Some(a), Some(b)) => (ratio(a.p50, b.p50), ratio(a.p99, b.p99)),
                _ => ("-".into(), "-".into()),
            };
            line.push_str(&format!(
                " {:>9} {:>13} {:>7} {:>7}",
                ratio(p.total_us_per_pkt, l.total_us_per_pkt),
                "",
                r50,
                r99
            ));
            writeln!(f, "{line}")?;
            writeln!(f)?;
            if let (Some(a), Some(b)) = (p.latency, l.latency) {
                writeln!(
                    f,
                    "added one-way latency of the pipe hop (2 - 1): p50 {:+.0} µs, p99 {:+.0} µs",
                    a.p50 - b.p50,
                    a.p99 - b.p99
                )?;
            }
            // CPU per second of the whole cluster, minus scenario 1's, per packet crossing the
            // pipe (one per packet the producer sends).
            let rate = |s: &Summary| s.cpu_ms_per_s.iter().sum::<f64>();
            if p.ingress_per_s > 0.0 {
                writeln!(
                    f,
                    "extra cluster CPU of scenario 2: {:+.2} ms/s, {:+.1} µs per packet crossing \
                     the pipe",
                    rate(p) - rate(l),
                    (rate(p) - rate(l)) * 1e3 / p.ingress_per_s
                )?;
            }
        }
        for s in &rows {
            let cpu: Vec<String> = self
                .nodes
                .iter()
                .zip(&s.cpu_ms_per_s)
                .map(|(n, v)| format!("{n} {v:.1}"))
                .collect();
            // Tick rounding makes a quiet host's remainder slightly negative at times.
            let other = if s.other_ms_per_s.is_finite() {
                s.other_ms_per_s.max(0.0)
            } else {
                f64::NAN
            };
            writeln!(
                f,
                "{}: node CPU ms/s {}; bots received {} pkt/s; bench process (bots) {:.0} ms/s; \
                 other processes {} ms/s; latency pooled over windows p50 {} p99 {} µs{}",
                s.name,
                cpu.join(", "),
                num(s.received_per_s, 0),
                s.bots_ms_per_s,
                num(other, 0),
                s.pooled_latency.map_or("-".into(), |l| num(l.p50, 0)),
                s.pooled_latency.map_or("-".into(), |l| num(l.p99, 0)),
                if s.latency_lost > 0 {
                    format!("; {} latency samples lost", s.latency_lost)
                } else {
                    String::new()
                }
            )?;
            let c: Vec<String> = s
                .pipe_rates
                .iter()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, v)| format!("{k} {v:.1}/s"))
                .collect();
            if !c.is_empty() {
                writeln!(f, "  pipe counters: {}", c.join(", "))?;
            }
        }
        let idle: Vec<String> = self
            .nodes
            .iter()
            .zip(&self.idle_ms_per_s)
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect();
        write!(f, "idle nodes (no bots), CPU ms/s: {}", idle.join(", "))?;
        if let Some(cores) = self.host_cores {
            write!(f, "; host has {cores} cores")?;
            let busy = rows
                .iter()
                .map(|s| s.other_ms_per_s)
                .fold(f64::NAN, f64::max);
            if busy > 100.0 {
                write!(
                    f,
                    "\nwarning: other processes kept the host busy ({busy:.0} ms/s of CPU): the \
                     figures are noisy"
                )?;
            }
        }
        for (n, kinds) in self.nodes.iter().zip(&self.node_problems) {
            for (kind, count) in kinds {
                write!(f, "\nnode {n} logged {count}x: {kind}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(cpu: [f64; 2], delivered: u64, lat: &[i64]) -> Window {
        Window {
            secs: 2.0,
            cpu_us: cpu.to_vec(),
            delivered,
            bot_received: delivered,
            ingress: 200,
            latency_us: lat.to_vec(),
            ..Window::default()
        }
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v[..1], 99.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn summary_takes_medians_per_window_and_pools_latency() {
        let ws = [
            window([4000.0, 0.0], 4000, &[100, 200]),
            window([8000.0, 400.0], 4000, &[300]),
            window([6000.0, 200.0], 4000, &[400]),
            window([1.0, 1.0], 0, &[]),
        ];
        let s = Summary::of("1: all on a", 2, &ws);
        assert_eq!(s.windows, 4);
        // The empty window has no per-packet figure and is ignored by the medians of those.
        assert_eq!(s.cpu_us_per_pkt, vec![1.5, 0.05]);
        assert!((s.total_us_per_pkt - 1.55).abs() < 1e-9);
        assert_eq!(s.total_range, (1.0, 2.1));
        assert_eq!(s.delivered_per_s, 2000.0);
        // Per window p50/p99: (100, 200), (300, 300), (400, 400); medians 300 and 300.
        let l = s.latency.unwrap();
        assert_eq!((l.p50, l.p99, l.samples), (300.0, 300.0, 4));
        let l = s.pooled_latency.unwrap();
        assert_eq!((l.p50, l.p99, l.samples), (200.0, 400.0, 4));
    }

    #[test]
    fn report_prints_both_scenarios_and_the_differences() {
        let local = Summary::of(
            "1: all on a",
            2,
            &[window([4000.0, 10.0], 4000, &[100, 200])],
        );
        let piped = Summary::of(
            "2: consumers on b",
            2,
            &[window([1000.0, 5000.0], 4000, &[300, 500])],
        );
        let r = Report {
            nodes: vec!["a".into(), "b".into()],
            consumers: 20,
            rounds: 1,
            windows: 1,
            window_secs: 2.0,
            local,
            piped: Some(piped),
            idle_ms_per_s: vec![0.1, 0.2],
            node_problems: vec![BTreeMap::new(), BTreeMap::new()],
            host_cores: Some(2),
        };
        let text = r.to_string();
        assert!(
            text.contains(
                "added one-way latency of the pipe hop (2 - 1): p50 +200 µs, p99 +300 µs"
            ),
            "{text}"
        );
        assert!(text.contains("ratio 2 / 1"), "{text}");
        assert!(text.contains("1.50x"), "{text}");
        assert!(!text.contains("logged"), "{text}");
        assert!(!text.contains("noisy"), "{text}");
        let mut problems = BTreeMap::new();
        problems.insert("WARN x: y".to_owned(), 3);
        let single = Report {
            piped: None,
            node_problems: vec![problems, BTreeMap::new()],
            ..r
        };
        let text = single.to_string();
        assert!(!text.contains("ratio"), "{text}");
        assert!(text.contains("node a logged 3x: WARN x: y"), "{text}");
    }
}
