//! The figures of the scenarios, from what the harness collected: bots' JSON reports,
//! `pipemesh rooms ROOM -o json` and the WAN emulator's statistics. Pure functions, tested
//! without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::bot::run::{BotReport, ReceivedStream};

/// The region of a simulation node id: the id without its trailing digits (`us2` → `us`).
pub fn region_of(node: &str) -> &str {
    node.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Nearest-rank percentile `p` (0..=100) of `values` (sorted here); `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    values.get(rank.clamp(1, n) - 1).copied()
}

/// A producer's pipe edges (from, to), from the `paths` of its entry in a
/// `pipemesh rooms ROOM -o json` answer: the last hop of every path, which is the answering
/// node's own upstream (the hops before it are what its upstream said when it subscribed,
/// which a later re-route upstream may have changed).
pub fn producer_edges(room: &Value, producer_id: &str) -> BTreeSet<(String, String)> {
    let mut edges = BTreeSet::new();
    let producers = room["producers"]
        .as_array()
        .map_or(&[][..], |v| v.as_slice());
    for p in producers {
        if p["producerId"] != producer_id {
            continue;
        }
        for path in p["paths"].as_array().into_iter().flatten() {
            let hops: Vec<&str> = path
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if let [.., a, b] = hops[..] {
                edges.insert((a.to_owned(), b.to_owned()));
            }
        }
    }
    edges
}

/// How many copies of a producer cross a region boundary, and how many pipe copies it has
/// in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Copies {
    /// Edges whose ends are in different regions.
    pub inter_region: usize,
    /// All edges.
    pub total: usize,
}

/// Counts `edges` (see [`producer_edges`]).
pub fn copies(edges: &BTreeSet<(String, String)>) -> Copies {
    Copies {
        inter_region: edges
            .iter()
            .filter(|(a, b)| region_of(a) != region_of(b))
            .count(),
        total: edges.len(),
    }
}

/// Bytes each directed WAN link (`eu>us`, ...) delivered between two `stats` answers of the
/// emulator.
pub fn wan_bytes(before: &Value, after: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(links) = after["links"].as_object() {
        for (name, l) in links {
            let a = l["stats"]["bytes_out"].as_u64().unwrap_or(0);
            let b = before["links"][name]["stats"]["bytes_out"]
                .as_u64()
                .unwrap_or(0);
            out.insert(name.clone(), a.saturating_sub(b));
        }
    }
    out
}

/// Packets a directed WAN link was offered and dropped for loss between two `stats`
/// answers: (offered, dropped).
pub fn wan_loss(before: &Value, after: &Value, link: &str) -> (u64, u64) {
    let d = |k: &str| {
        after["links"][link]["stats"][k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before["links"][link]["stats"][k].as_u64().unwrap_or(0))
    };
    (d("packets_in"), d("dropped_loss"))
}

/// The simulcast layers each node withholds from `from`'s links, by peer, in a
/// `pipemesh topology -o json` answer (`shedLayers` of the direction leaving `from`).
pub fn shed_from(topology: &Value, from: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in topology["links"].as_array().into_iter().flatten() {
        let (a, b) = (l["a"].as_str().unwrap_or(""), l["b"].as_str().unwrap_or(""));
        let (peer, dir) = if a == from {
            (b, &l["aToB"])
        } else if b == from {
            (a, &l["bToA"])
        } else {
            continue;
        };
        out.insert(peer.to_owned(), dir["shedLayers"].as_u64().unwrap_or(0));
    }
    out
}

/// The most layers a node withholds toward any node of `region`, from its
/// `/api/v1/links` answer (`shedLayers` per link).
pub fn shed_toward(links: &Value, region: &str) -> u64 {
    links["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["peer"].as_str().is_some_and(|p| region_of(p) == region))
        .filter_map(|l| l["shedLayers"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The streams a bot received from `speaker` of this kind (`audio`, `video`).
pub fn streams_from<'a>(
    bot: &'a BotReport,
    speaker: &'a str,
    kind: &'a str,
) -> impl Iterator<Item = &'a ReceivedStream> + 'a {
    bot.streams
        .iter()
        .filter(move |s| s.from_peer == speaker && s.stats.kind == kind)
}

/// Join to first frame: from the start of the bot's join to the first packet of the first
/// keyframe of `speaker`'s video, in ms; `None` if no keyframe came.
pub fn join_to_first_frame_ms(bot: &BotReport, speaker: &str) -> Option<u64> {
    streams_from(bot, speaker, "video")
        .filter_map(|s| s.stats.first_keyframe_ms)
        .min()
        .map(|t| t.saturating_sub(bot.join_start_ms))
}

/// One-way latency of `speaker`'s video at this bot, µs: (median, 95th percentile) over the
/// bot's last samples.
pub fn latency_us(bot: &BotReport, speaker: &str) -> Option<(i64, i64)> {
    streams_from(bot, speaker, "video")
        .filter_map(|s| Some((s.stats.owd_p50_us?, s.stats.owd_p95_us?)))
        .max_by_key(|&(p50, _)| p50)
}

/// Loss after repair of `speaker`'s streams of `kind` at this bot: (lost, expected).
pub fn loss(bot: &BotReport, speaker: &str, kind: &str) -> (u64, u64) {
    streams_from(bot, speaker, kind).fold((0, 0), |(l, e), s| {
        (l + s.stats.lost.max(0) as u64, e + s.stats.expected)
    })
}

/// Interarrival gaps shorter than this are jitter, not an outage (video frames come every
/// 33 ms, audio packets every 20 ms).
pub const OUTAGE_GAP_MS: u64 = 250;

/// How long after `at_ms` (an outage's cause, e.g. a node killed) the bot received
/// `speaker`'s `kind` again, in ms. Per stream: a gap of at least [`OUTAGE_GAP_MS`] that
/// began within `window_ms` after `at_ms` (or spans it) ended when media came back; a stream that began after `at_ms` (a
/// new consumer) came back with its first packet; a stream without such a gap that kept
/// receiving was not interrupted (0). The earliest over the streams; `None` if none received
/// anything after `at_ms`.
pub fn recovery_ms(
    bot: &BotReport,
    speaker: &str,
    kind: &str,
    at_ms: u64,
    window_ms: u64,
) -> Option<u64> {
    let mut best: Option<u64> = None;
    for s in streams_from(bot, speaker, kind) {
        let st = &s.stats;
        let (Some(first), Some(last)) = (st.first_packet_ms, st.last_packet_ms) else {
            continue;
        };
        let back = if first >= at_ms {
            Some(first)
        } else {
            let gap = st
                .long_gaps
                .iter()
                .filter(|g| {
                    let start = g.end_ms.saturating_sub(g.gap_ms);
                    g.gap_ms >= OUTAGE_GAP_MS && g.end_ms >= at_ms && start <= at_ms + window_ms
                })
                .max_by_key(|g| g.gap_ms);
            match gap {
                Some(g) => Some(g.end_ms),
                // Still receiving after the window without a gap: never interrupted.
                None if last > at_ms + window_ms => Some(at_ms),
                None => None,
            }
        };
        if let Some(b) = back {
            let r = b.saturating_sub(at_ms);
            best = Some(best.map_or(r, |x| x.min(r)));
        }
    }
    best
}

/// Packets per second of `speaker`'s `kind` at one bot over time: (seconds relative to
/// `origin_ms`, packets/s) per 100 ms bucket of its arrival histograms, summed over streams.
pub fn arrival_rate(bot: &BotReport, speaker: &str, kind: &str, origin_ms: u64) -> Vec<(f64, f64)> {
    let mut buckets: BTreeMap<i64, u32> = BTreeMap::new();
    for s in streams_from(bot, speaker, kind) {
        let Some(first) = s.stats.first_packet_ms else {
            continue;
        };
        // Buckets start at the first packet; align them to the 100 ms grid around origin.
        let base = (first as i64 - origin_ms as i64).div_euclid(100);
        for (i, &n) in s.stats.arrivals_100ms.iter().enumerate() {
            *buckets.entry(base + i as i64).or_default() += n;
        }
    }
    buckets
        .into_iter()
        .map(|(b, n)| (b as f64 / 10.0, f64::from(n) * 10.0))
        .collect()
}

/// The p50 and p95 of some per-listener values, with how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    /// Values.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

/// The spread of `values`; `None` when empty.
pub fn spread(mut values: Vec<f64>) -> Option<Spread> {
    Some(Spread {
        n: values.len(),
        p50: percentile(&mut values, 50.0)?,
        p95: percentile(&mut values, 95.0)?,
        max: percentile(&mut values, 100.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::stats::{GapExport, StreamExport};
    use serde_json::json;

    fn stream(from: &str, kind: &str) -> ReceivedStream {
        ReceivedStream {
            from_peer: from.into(),
            producer_id: format!("{from}-{kind}"),
            stats: StreamExport {
                ssrc: 1,
                kind: kind.into(),
                received: 0,
                expected: 0,
                lost: 0,
                bytes: 0,
                avg_kbps: 0.0,
                frames: 0,
                keyframes: 0,
                first_packet_ms: None,
                first_keyframe_ms: None,
                last_packet_ms: None,
                owd_p50_us: None,
                owd_p95_us: None,
                owd_samples: 0,
                long_gaps: Vec::new(),
                arrivals_100ms: Vec::new(),
                last_keyframe_width: None,
                last_keyframe_height: None,
            },
        }
    }

    fn bot(streams: Vec<ReceivedStream>) -> BotReport {
        BotReport {
            peer_id: "l".into(),
            join_start_ms: 1_000,
            joined_ms: 1_100,
            rtp_sent: 0,
            streams,
        }
    }

    #[test]
    fn regions_and_percentiles() {
        assert_eq!(region_of("us2"), "us");
        assert_eq!(region_of("eu"), "eu");
        assert_eq!(region_of("ap13"), "ap");
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut v, 0.0), Some(1.0));
        assert_eq!(percentile(&mut [], 50.0), None);
        let s = spread(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.p50, s.p95, s.max), (3, 2.0, 3.0, 3.0));
    }

    #[test]
    fn copies_from_tree_and_mesh_paths() {
        // Tree: eu1 -> us2 (relay) -> us1, us3; eu1 -> ap1 -> ap2; eu1 -> eu2. us3 subscribed
        // to us2 when us2 still came through ap1: only its last hop counts.
        let tree = json!({"producers": [
            {"producerId": "v", "paths": [["eu1"],["eu1","us2"],["eu1","us2","us1"],["eu1","ap1","us2","us3"],
                                          ["eu1","ap1"],["eu1","ap1","ap2"],["eu1","eu2"]]},
            {"producerId": "a", "paths": [["eu1","us1"]]}
        ]});
        let e = producer_edges(&tree, "v");
        assert_eq!(e.len(), 6);
        assert_eq!(
            copies(&e),
            Copies {
                inter_region: 2,
                total: 6
            }
        );
        // Mesh: every node straight from the origin.
        let mesh = json!({"producers": [{"producerId": "v", "paths": [
            ["eu1","eu2"],["eu1","us1"],["eu1","us2"],["eu1","us3"],["eu1","ap1"],["eu1","ap2"]]}]});
        assert_eq!(
            copies(&producer_edges(&mesh, "v")),
            Copies {
                inter_region: 5,
                total: 6
            }
        );
        assert!(producer_edges(&mesh, "nope").is_empty());
        assert!(producer_edges(&json!({}), "v").is_empty());
    }

    #[test]
    fn shed_levels_leaving_a_node() {
        let t = json!({"links": [
            {"a": "eu1", "b": "us2", "aToB": {"shedLayers": 1}, "bToA": {"shedLayers": 0}},
            {"a": "ap1", "b": "eu1", "aToB": {"shedLayers": 2}, "bToA": {}},
            {"a": "us1", "b": "us2", "aToB": {"shedLayers": 2}, "bToA": {}}]});
        let s = shed_from(&t, "eu1");
        assert_eq!(s.len(), 2);
        assert_eq!((s["us2"], s["ap1"]), (1, 0));
        assert!(shed_from(&json!({}), "eu1").is_empty());
        let links = json!({"nodeId": "eu1", "links": [
            {"peer": "us1", "shedLayers": 0}, {"peer": "us3", "shedLayers": 2},
            {"peer": "ap1", "shedLayers": 1}, {"peer": "eu2"}]});
        assert_eq!(shed_toward(&links, "us"), 2);
        assert_eq!(shed_toward(&links, "eu"), 0);
        assert_eq!(shed_toward(&json!({}), "us"), 0);
    }

    #[test]
    fn wan_byte_and_loss_deltas() {
        let before = json!({"links": {"eu>us": {"stats": {"bytes_out": 100, "packets_in": 10, "dropped_loss": 1}}}});
        let after = json!({"links": {"eu>us": {"stats": {"bytes_out": 350, "packets_in": 110, "dropped_loss": 2}},
                                     "us>eu": {"stats": {"bytes_out": 7}}}});
        let b = wan_bytes(&before, &after);
        assert_eq!(b["eu>us"], 250);
        assert_eq!(b["us>eu"], 7);
        assert_eq!(wan_loss(&before, &after, "eu>us"), (100, 1));
        assert_eq!(wan_loss(&before, &after, "ap>us"), (0, 0));
    }

    #[test]
    fn first_frame_latency_and_loss() {
        let mut v = stream("sp", "video");
        v.stats.first_keyframe_ms = Some(1_450);
        v.stats.owd_p50_us = Some(41_000);
        v.stats.owd_p95_us = Some(45_000);
        v.stats.lost = 3;
        v.stats.expected = 1000;
        let mut a = stream("sp", "audio");
        a.stats.lost = -1;
        a.stats.expected = 50;
        let other = stream("x", "video");
        let b = bot(vec![v, a, other]);
        assert_eq!(join_to_first_frame_ms(&b, "sp"), Some(450));
        assert_eq!(join_to_first_frame_ms(&b, "x"), None);
        assert_eq!(latency_us(&b, "sp"), Some((41_000, 45_000)));
        assert_eq!(loss(&b, "sp", "video"), (3, 1000));
        assert_eq!(loss(&b, "sp", "audio"), (0, 50));
    }

    #[test]
    fn recovery_after_an_outage() {
        let at = 10_000;
        // A gap from 10 020 to 12 520: back 2 520 ms after the kill.
        let mut s = stream("sp", "video");
        s.stats.first_packet_ms = Some(5_000);
        s.stats.last_packet_ms = Some(20_000);
        s.stats.long_gaps = vec![
            GapExport {
                end_ms: 7_000,
                gap_ms: 100,
            },
            // Jitter right after the kill: not an outage.
            GapExport {
                end_ms: 10_100,
                gap_ms: 80,
            },
            GapExport {
                end_ms: 12_520,
                gap_ms: 2_500,
            },
        ];
        assert_eq!(
            recovery_ms(&bot(vec![s.clone()]), "sp", "video", at, 2_000),
            Some(2_520)
        );
        // Not interrupted: still receiving, no gap near the kill.
        let mut calm = s.clone();
        calm.stats.long_gaps.truncate(2);
        assert_eq!(
            recovery_ms(&bot(vec![calm]), "sp", "video", at, 2_000),
            Some(0)
        );
        // The old stream died, a new consumer's stream began at 13 000.
        let mut dead = s.clone();
        dead.stats.long_gaps.clear();
        dead.stats.last_packet_ms = Some(10_010);
        let mut fresh = stream("sp", "video");
        fresh.stats.first_packet_ms = Some(13_000);
        fresh.stats.last_packet_ms = Some(20_000);
        assert_eq!(
            recovery_ms(&bot(vec![dead.clone(), fresh]), "sp", "video", at, 2_000),
            Some(3_000)
        );
        // Nothing after the kill.
        assert_eq!(
            recovery_ms(&bot(vec![dead]), "sp", "video", at, 2_000),
            None
        );
    }

    #[test]
    fn arrival_rates_on_a_grid_around_the_origin() {
        let mut s = stream("sp", "video");
        s.stats.first_packet_ms = Some(9_800);
        s.stats.arrivals_100ms = vec![5, 0, 3];
        let r = arrival_rate(&bot(vec![s]), "sp", "video", 10_000);
        assert_eq!(r, [(-0.2, 50.0), (-0.1, 0.0), (0.0, 30.0)]);
    }
}
