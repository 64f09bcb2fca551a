//! `pipemesh topology`: the mesh as its nodes see it. Nodes come from the registry, grouped by
//! region; each node's pipe links come from its `GET /api/v1/links` (see the `links` handler
//! in [`crate::admin`]). A link between A and B (A the lower id) is one row joining both
//! views: A→B bitrate, loss and piped streams are what A says it sends, cross-checked with
//! what B says it receives (and taken from B when A did not answer); B→A likewise. A link only
//! one side reports still shows, with what only the other side knows as `-`.

use std::collections::BTreeMap;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::adminapi::{check_node, problems, targets, AdminClient, AdminError, Answer};
use super::etcd::Registry;
use super::snapshot::Snapshot;
use super::{block_on, print_json, print_out, render_table, warn_malformed};
use super::{CliError, CommonArgs, Output};
use crate::discovery::keys::NodeState;
use crate::ids::NodeId;

/// The path asked of every node.
pub const LINKS_PATH: &str = "/api/v1/links";

/// Flags of `pipemesh topology`.
#[derive(Args, Debug, Clone)]
pub struct TopologyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A node's `GET /api/v1/links`, decoded leniently (absent fields are `None`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LinksReport {
    /// The node that answered.
    pub node_id: String,
    /// Its links.
    pub links: Vec<LinkReport>,
}

impl Answer for LinksReport {
    fn answered_by(&self) -> &str {
        &self.node_id
    }
}

/// One link as one of its ends reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LinkReport {
    /// The node at the other end.
    pub peer: String,
    /// The link is up.
    pub up: bool,
    /// Round-trip time, milliseconds (`None` while down).
    pub rtt_ms: Option<f64>,
    /// Share of this end's packets lost, recently.
    pub loss_percent: Option<f64>,
    /// Media received, bits per second, recently.
    pub bitrate_in_bps: Option<f64>,
    /// Media sent, bits per second, recently.
    pub bitrate_out_bps: Option<f64>,
    /// Local producers piped to the peer.
    pub piped_streams_out: Option<u64>,
    /// The peer's producers piped here.
    pub piped_streams_in: Option<u64>,
    /// Upper simulcast layers withheld from the peer (the link is congested).
    pub shed_layers: Option<u64>,
}

/// The mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// Regions, sorted, with their nodes.
    pub regions: Vec<Region>,
    /// Links, sorted by (a, b).
    pub links: Vec<Link>,
    /// Nodes whose links could not be read, and why.
    pub unreachable: Vec<Unreachable>,
}

/// A region and its nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// The region (empty when the nodes name none).
    pub region: String,
    /// Its nodes, sorted.
    pub nodes: Vec<TopoNode>,
}

/// A node of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopoNode {
    /// The node.
    pub node_id: String,
    /// `serving` or `draining`, as its record says.
    pub state: NodeState,
    /// Its admin endpoint answered with its links.
    pub reachable: bool,
    /// Links it reports up (`None` when it did not answer).
    pub links_up: Option<usize>,
    /// Links it reports down.
    pub links_down: Option<usize>,
    /// Why its links are unknown.
    pub admin_error: Option<String>,
    #[serde(skip)]
    state_word: Option<&'static str>,
}

/// A node whose links are unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreachable {
    /// The node.
    pub node_id: String,
    /// Why.
    pub error: String,
}

/// A pipe link, from both ends' reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The end with the lower id.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Every end that reports the link says it is up.
    pub up: bool,
    /// Ends that report the link.
    pub reported_by: Vec<String>,
    /// Round-trip time in milliseconds: the mean of the ends' measurements.
    pub rtt_ms: Option<f64>,
    /// What flows from a to b.
    pub a_to_b: Direction,
    /// What flows from b to a.
    pub b_to_a: Direction,
}

/// One direction of a link: the sender's figures, and the receiver's to cross-check.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Direction {
    /// Media bits per second, as sent (or as received when the sender did not answer).
    pub bitrate_bps: Option<u64>,
    /// Share of the sender's packets lost (only the sender knows).
    pub loss_percent: Option<f64>,
    /// Producers piped this way, as the sender counts them (or as the receiver does).
    pub streams: Option<u64>,
    /// Media bits per second, as received.
    pub received_bps: Option<u64>,
    /// Producers piped this way, as the receiver counts them.
    pub streams_received: Option<u64>,
    /// Upper simulcast layers the sender withholds this way because the link is congested.
    pub shed_layers: Option<u64>,
}

impl Direction {
    fn new(sender: Option<&LinkReport>, receiver: Option<&LinkReport>) -> Direction {
        let sent_bps = sender.and_then(|s| s.bitrate_out_bps).map(bps);
        let received_bps = receiver.and_then(|r| r.bitrate_in_bps).map(bps);
        let sent_streams = sender.and_then(|s| s.piped_streams_out);
        let streams_received = receiver.and_then(|r| r.piped_streams_in);
        Direction {
            bitrate_bps: sent_bps.or(received_bps),
            loss_percent: sender.and_then(|s| s.loss_percent),
            streams: sent_streams.or(streams_received),
            received_bps,
            streams_received,
            shed_layers: sender.and_then(|s| s.shed_layers),
        }
    }

    /// The sender withholds upper simulcast layers this way.
    pub fn shedding(&self) -> bool {
        self.shed_layers.is_some_and(|n| n > 0)
    }

    /// Both ends count the streams, differently (for a moment, while a pipe opens or closes).
    pub fn streams_disagree(&self) -> bool {
        matches!((self.streams, self.streams_received), (Some(s), Some(r)) if s != r)
    }
}

fn bps(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// The mesh from the registry's nodes and each node's answer (a node missing from `answers`
/// counts as not asked).
pub fn topology(
    snapshot: &Snapshot,
    answers: &BTreeMap<NodeId, Result<LinksReport, AdminError>>,
) -> Topology {
    let mut regions: BTreeMap<String, Vec<TopoNode>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    // (a, b) with a < b: (a's report of b, b's report of a).
    type Ends<'a> = (Option<&'a LinkReport>, Option<&'a LinkReport>);
    let mut ends: BTreeMap<(String, String), Ends> = BTreeMap::new();
    for (id, record) in &snapshot.nodes {
        let answer = match answers.get(id) {
            Some(Ok(report)) => check_node(id, &report.node_id).map(|()| report),
            Some(Err(e)) => Err(e.clone()),
            None => Err(AdminError::NoUrl),
        };
        let node = match answer {
            Ok(report) => {
                for link in report.links.iter().filter(|l| l.peer != id.as_str()) {
                    let me = id.as_str().to_owned();
                    if me < link.peer {
                        ends.entry((me, link.peer.clone())).or_default().0 = Some(link);
                    } else {
                        ends.entry((link.peer.clone(), me)).or_default().1 = Some(link);
                    }
                }
                let up = report.links.iter().filter(|l| l.up).count();
                TopoNode {
                    node_id: id.to_string(),
                    state: record.state,
                    reachable: true,
                    links_up: Some(up),
                    links_down: Some(report.links.len() - up),
                    admin_error: None,
                    state_word: None,
                }
            }
            Err(e) => {
                unreachable.push(Unreachable {
                    node_id: id.to_string(),
                    error: e.to_string(),
                });
                TopoNode {
                    node_id: id.to_string(),
                    state: record.state,
                    reachable: false,
                    links_up: None,
                    links_down: None,
                    admin_error: Some(e.to_string()),
                    state_word: Some(e.state_word().unwrap_or("unknown")),
                }
            }
        };
        regions.entry(record.region.clone()).or_default().push(node);
    }
    let links = ends
        .into_iter()
        .map(|((a, b), (a_end, b_end))| {
            let present: Vec<&LinkReport> = a_end.iter().chain(b_end.iter()).copied().collect();
            let rtts: Vec<f64> = present
                .iter()
                .filter(|l| l.up)
                .filter_map(|l| l.rtt_ms)
                .filter(|r| r.is_finite())
                .collect();
            let mut reported_by = Vec::new();
            if a_end.is_some() {
                reported_by.push(a.clone());
            }
            if b_end.is_some() {
                reported_by.push(b.clone());
            }
            Link {
                up: present.iter().all(|l| l.up),
                rtt_ms: (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64),
                a_to_b: Direction::new(a_end, b_end),
                b_to_a: Direction::new(b_end, a_end),
                reported_by,
                a,
                b,
            }
        })
        .collect();
    Topology {
        regions: regions
            .into_iter()
            .map(|(region, nodes)| Region { region, nodes })
            .collect(),
        links,
        unreachable,
    }
}

/// Bits per second as people read them: `850 bps`, `12.5 kbps`, `1.48 Mbps`.
pub fn human_bitrate(bps: u64) -> String {
    let v = bps as f64;
    let (value, unit) = if bps < 1_000 {
        return format!("{bps} bps");
    } else if v < 1e6 {
        (v / 1e3, "kbps")
    } else if v < 1e9 {
        (v / 1e6, "Mbps")
    } else {
        (v / 1e9, "Gbps")
    };
    format!("{} {unit}", three_digits(value))
}

/// Three significant digits, without trailing zeros: `1.48`, `12.5`, `148`, `2`.
fn three_digits(v: f64) -> String {
    let decimals = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Milliseconds: `0.41 ms`, `12.3 ms`, `120 ms`.
pub fn human_ms(ms: f64) -> String {
    format!("{} ms", three_digits(ms.max(0.0)))
}

/// A percentage: `0%`, `0.25%`, `12%`.
pub fn human_percent(p: f64) -> String {
    format!("{}%", three_digits(p.max(0.0)))
}

fn or_dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Serving => "serving",
        NodeState::Draining => "draining",
    }
}

impl TopoNode {
    /// The state column: the node's state, or why its links are unknown.
    pub fn state_cell(&self) -> &'static str {
        self.state_word.unwrap_or(state_name(self.state))
    }

    fn links_cell(&self) -> String {
        match (self.links_up, self.links_down) {
            (Some(up), Some(0)) => format!("{up} up"),
            (Some(up), Some(down)) => format!("{up} up, {down} down"),
            _ => "-".into(),
        }
    }
}

impl Link {
    fn state_cell(&self) -> String {
        let state = if self.up { "up" } else { "down" };
        if self.reported_by.len() == 1 {
            format!("{state} (per {})", self.reported_by[0])
        } else {
            state.to_owned()
        }
    }
}

fn streams_cell(d: &Direction) -> String {
    let streams = match (d.streams, d.streams_received) {
        (Some(s), Some(r)) if s != r => format!("{s}/{r}"),
        (s, _) => or_dash(s, |s| s.to_string()),
    };
    match d.shed_layers {
        Some(n) if n > 0 => format!("{streams} (shed {n})"),
        _ => streams,
    }
}

/// The tables `pipemesh topology` prints: nodes by region, then links.
pub fn render(t: &Topology) -> String {
    let nodes: Vec<Vec<String>> = t
        .regions
        .iter()
        .flat_map(|r| {
            r.nodes.iter().map(|n| {
                vec![
                    if r.region.is_empty() {
                        "-".into()
                    } else {
                        r.region.clone()
                    },
                    n.node_id.clone(),
                    n.state_cell().into(),
                    n.links_cell(),
                ]
            })
        })
        .collect();
    let links: Vec<Vec<String>> = t
        .links
        .iter()
        .map(|l| {
            let mut row = vec![
                l.a.clone(),
                l.b.clone(),
                l.state_cell(),
                or_dash(l.rtt_ms, human_ms),
            ];
            for d in [&l.a_to_b, &l.b_to_a] {
                row.push(or_dash(d.bitrate_bps, human_bitrate));
                row.push(or_dash(d.loss_percent, human_percent));
                row.push(streams_cell(d));
            }
            row
        })
        .collect();
    let mut out = render_table(&["REGION", "NODE", "STATE", "LINKS"], &nodes);
    out.push('\n');
    out.push_str(&render_table(
        &[
            "A",
            "B",
            "STATE",
            "RTT",
            "A→B BITRATE",
            "LOSS",
            "STREAMS",
            "B→A BITRATE",
            "LOSS",
            "STREAMS",
        ],
        &links,
    ));
    if t.links
        .iter()
        .any(|l| l.a_to_b.streams_disagree() || l.b_to_a.streams_disagree())
    {
        out.push_str("(STREAMS s/r: the sender counts s, the receiver r)\n");
    }
    if t.links
        .iter()
        .any(|l| l.a_to_b.shedding() || l.b_to_a.shedding())
    {
        out.push_str(
            "(shed n: the link is congested; the sender withholds the top n simulcast layers)\n",
        );
    }
    out
}

/// A DOT quoted string: `"` and `\` escaped, line breaks as DOT's `\n`.
pub fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A DOT label of several lines (each escaped).
fn dot_label(lines: &[String]) -> String {
    let quoted: Vec<String> = lines
        .iter()
        .map(|l| {
            let q = dot_quote(l);
            q[1..q.len() - 1].to_owned()
        })
        .collect();
    format!("\"{}\"", quoted.join("\\n"))
}

fn direction_line(from: &str, to: &str, d: &Direction) -> String {
    format!(
        "{from}→{to} {}, {} streams",
        or_dash(d.bitrate_bps, human_bitrate),
        streams_cell(d)
    )
}

/// The mesh in Graphviz DOT: an undirected graph, one `cluster_<region>` subgraph per region,
/// one edge per link labelled with its RTT and each direction's bitrate and streams; nodes
/// that did not answer and links that are down are dashed.
pub fn render_dot(t: &Topology) -> String {
    let mut out = String::from(
        "graph pipemesh {\n  node [shape=box, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for region in &t.regions {
        let indent = if region.region.is_empty() {
            "  "
        } else {
            out.push_str(&format!(
                "  subgraph {} {{\n    label={};\n",
                dot_quote(&format!("cluster_{}", region.region)),
                dot_quote(&region.region)
            ));
            "    "
        };
        for n in &region.nodes {
            let mut attrs = format!(
                "label={}",
                dot_label(&[n.node_id.clone(), n.state_cell().to_owned()])
            );
            if !n.reachable {
                attrs.push_str(", style=dashed, color=red");
            }
            out.push_str(&format!("{indent}{} [{attrs}];\n", dot_quote(&n.node_id)));
        }
        if !region.region.is_empty() {
            out.push_str("  }\n");
        }
    }
    for l in &t.links {
        let mut attrs = format!(
            "label={}",
            dot_label(&[
                or_dash(l.rtt_ms, human_ms),
                direction_line(&l.a, &l.b, &l.a_to_b),
                direction_line(&l.b, &l.a, &l.b_to_a),
            ])
        );
        if !l.up {
            attrs.push_str(", style=dashed, color=red");
        }
        out.push_str(&format!(
            "  {} -- {} [{attrs}];\n",
            dot_quote(&l.a),
            dot_quote(&l.b)
        ));
    }
    out.push_str("}\n");
    out
}

/// `pipemesh topology`.
pub fn run(args: &TopologyArgs) -> Result<(), CliError> {
    let client = AdminClient::new(&args.common)?;
    let (snapshot, answers) = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        let snapshot = Snapshot::from_kvs(&registry.list("nodes/").await?);
        let answers = client
            .get_all::<LinksReport>(targets(&snapshot, snapshot.nodes.keys()), |_| {
                LINKS_PATH.to_owned()
            })
            .await;
        Ok((snapshot, answers))
    })?;
    let t = topology(&snapshot, &answers);
    match args.common.output {
        Output::Json => print_json(&t)?,
        Output::Table => print_out(&render(&t))?,
        Output::Dot => print_out(&render_dot(&t))?,
    }
    for line in problems(&answers, |nodes| {
        format!("{nodes}: no {LINKS_PATH} (an older version?): links unknown there")
    }) {
        eprintln!("{line}");
    }
    warn_malformed(snapshot.malformed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot::from_kvs(&[
            (
                "nodes/n1",
                r#"{"nodeId":"n1","region":"eu","adminUrl":"http://a:1"}"#,
            ),
            (
                "nodes/n2",
                r#"{"nodeId":"n2","region":"eu","state":"draining"}"#,
            ),
            ("nodes/n3", r#"{"nodeId":"n3","region":"us"}"#),
            ("nodes/n4", r#"{"nodeId":"n4","region":"us"}"#),
        ])
    }

    fn report(json: &str) -> Result<LinksReport, AdminError> {
        Ok(serde_json::from_str(json).unwrap())
    }

    fn answers() -> BTreeMap<NodeId, Result<LinksReport, AdminError>> {
        BTreeMap::from([
            (
                NodeId::from("n1"),
                report(
                    r#"{"nodeId":"n1","links":[
                    {"peer":"n2","up":true,"rttMs":0.4,"lossPercent":0.0,"bitrateInBps":2400,
                     "bitrateOutBps":1480000,"pipedStreamsOut":2,"pipedStreamsIn":0,
                     "sentPackets":5120,"futureField":[1]},
                    {"peer":"n3","up":true,"rttMs":80.0,"lossPercent":1.5,"bitrateInBps":0,
                     "bitrateOutBps":750000.4,"pipedStreamsOut":2,"pipedStreamsIn":null},
                    {"peer":"n1","up":true}]}"#,
                ),
            ),
            (
                NodeId::from("n2"),
                report(
                    r#"{"nodeId":"n2","links":[
                    {"peer":"n1","up":true,"rttMs":0.6,"lossPercent":0.25,"bitrateInBps":1470000,
                     "bitrateOutBps":2500,"pipedStreamsOut":0,"pipedStreamsIn":1},
                    {"peer":"n9","up":false,"rttMs":null}]}"#,
                ),
            ),
            (
                NodeId::from("n3"),
                Err(AdminError::Connect(
                    "Connection refused (os error 111)".into(),
                )),
            ),
            (NodeId::from("n4"), Err(AdminError::Unauthorized)),
        ])
    }

    #[test]
    fn links_join_both_ends_views() {
        let t = topology(&snapshot(), &answers());
        assert_eq!(t.links.len(), 3);
        let l = &t.links[0];
        assert_eq!((l.a.as_str(), l.b.as_str(), l.up), ("n1", "n2", true));
        assert_eq!(l.reported_by, ["n1", "n2"]);
        assert!((l.rtt_ms.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(
            l.a_to_b,
            Direction {
                bitrate_bps: Some(1_480_000),
                loss_percent: Some(0.0),
                streams: Some(2),
                received_bps: Some(1_470_000),
                streams_received: Some(1),
                shed_layers: None,
            }
        );
        assert!(l.a_to_b.streams_disagree());
        assert_eq!(l.b_to_a.bitrate_bps, Some(2_500));
        assert_eq!(l.b_to_a.loss_percent, Some(0.25));
        assert_eq!(l.b_to_a.streams, Some(0));

        // n3 did not answer: n1's side alone, with n3's figures unknown.
        let l = &t.links[1];
        assert_eq!((l.a.as_str(), l.b.as_str()), ("n1", "n3"));
        assert_eq!(l.reported_by, ["n1"]);
        assert_eq!(l.a_to_b.bitrate_bps, Some(750_000));
        assert_eq!(l.a_to_b.received_bps, None);
        assert_eq!(l.b_to_a.bitrate_bps, Some(0));
        assert_eq!(l.b_to_a.loss_percent, None);
        assert_eq!(l.b_to_a.streams, None);

        // A peer without a record (a node gone, its link still slotted) shows as reported.
        let l = &t.links[2];
        assert_eq!((l.a.as_str(), l.b.as_str(), l.up), ("n2", "n9", false));
        assert_eq!(l.rtt_ms, None);
        assert_eq!(l.a_to_b, Direction::default());
    }

    #[test]
    fn nodes_group_by_region_and_unanswered_nodes_say_why() {
        let t = topology(&snapshot(), &answers());
        let regions: Vec<(&str, Vec<&str>)> = t
            .regions
            .iter()
            .map(|r| {
                (
                    r.region.as_str(),
                    r.nodes.iter().map(|n| n.node_id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            regions,
            [("eu", vec!["n1", "n2"]), ("us", vec!["n3", "n4"])]
        );
        let n1 = &t.regions[0].nodes[0];
        assert_eq!((n1.links_up, n1.links_down), (Some(3), Some(0)));
        let n2 = &t.regions[0].nodes[1];
        assert_eq!(n2.state_cell(), "draining");
        assert_eq!(n2.links_cell(), "1 up, 1 down");
        let n3 = &t.regions[1].nodes[0];
        assert!(!n3.reachable);
        assert_eq!(n3.state_cell(), "unreachable");
        assert_eq!(t.regions[1].nodes[1].state_cell(), "unauthorized");
        assert_eq!(
            t.unreachable,
            [
                Unreachable {
                    node_id: "n3".into(),
                    error: "unreachable: Connection refused (os error 111)".into()
                },
                Unreachable {
                    node_id: "n4".into(),
                    error: "unauthorized (check --admin-token-file)".into()
                },
            ]
        );

        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["regions"][0]["region"], "eu");
        assert_eq!(json["regions"][0]["nodes"][0]["nodeId"], "n1");
        assert_eq!(json["regions"][1]["nodes"][0]["reachable"], false);
        assert!(json["regions"][1]["nodes"][0].get("stateWord").is_none());
        assert_eq!(json["links"][0]["a"], "n1");
        assert_eq!(json["links"][0]["rttMs"], 0.5);
        assert_eq!(json["links"][0]["aToB"]["bitrateBps"], 1_480_000);
        assert_eq!(json["links"][0]["aToB"]["streams"], 2);
        assert_eq!(json["links"][0]["bToA"]["lossPercent"], 0.25);
        assert_eq!(
            json["links"][1]["bToA"]["lossPercent"],
            serde_json::Value::Null
        );
        assert_eq!(json["unreachable"][0]["nodeId"], "n3");
    }

    #[test]
    fn an_answer_from_another_node_is_not_believed() {
        let mut answers = answers();
        answers.insert(NodeId::from("n2"), report(r#"{"nodeId":"n7","links":[]}"#));
        let t = topology(&snapshot(), &answers);
        assert!(!t.regions[0].nodes[1].reachable);
        assert_eq!(t.regions[0].nodes[1].state_cell(), "unknown");
        assert_eq!(t.unreachable[0].node_id, "n2");
        assert!(t.links.iter().all(|l| l.a != "n7" && l.b != "n7"));
    }

    #[test]
    fn the_table_reads_in_human_units() {
        let t = topology(&snapshot(), &answers());
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "REGION   NODE   STATE          LINKS");
        assert_eq!(lines[1], "eu       n1     serving        3 up");
        assert_eq!(lines[2], "eu       n2     draining       1 up, 1 down");
        assert_eq!(lines[3], "us       n3     unreachable    -");
        assert_eq!(lines[4], "us       n4     unauthorized   -");
        assert_eq!(lines[5], "");
        assert_eq!(
            lines[6],
            "A    B    STATE           RTT      A→B BITRATE   LOSS   STREAMS   B→A BITRATE   LOSS    STREAMS"
        );
        assert_eq!(
            lines[7],
            "n1   n2   up              0.5 ms   1.48 Mbps     0%     2/1       2.5 kbps      0.25%   0"
        );
        assert_eq!(
            lines[8],
            "n1   n3   up (per n1)     80 ms    750 kbps      1.5%   2         0 bps         -       -"
        );
        assert_eq!(
            lines[9],
            "n2   n9   down (per n2)   -        -             -      -         -             -       -"
        );
        assert_eq!(
            lines[10],
            "(STREAMS s/r: the sender counts s, the receiver r)"
        );
    }

    #[test]
    fn shed_layers_show_in_the_streams_cell() {
        let mut answers = answers();
        answers.insert(
            NodeId::from("n2"),
            report(
                r#"{"nodeId":"n2","links":[
                {"peer":"n1","up":true,"rttMs":0.6,"bitrateOutBps":2500,"pipedStreamsOut":3,
                 "pipedStreamsIn":2,"shedLayers":1}]}"#,
            ),
        );
        let t = topology(&snapshot(), &answers);
        let l = &t.links[0];
        assert_eq!(l.b_to_a.shed_layers, Some(1));
        assert_eq!(l.a_to_b.shed_layers, None, "n1 reports no shedding field");
        let text = render(&t);
        let row = text
            .lines()
            .find(|r| r.starts_with("n1   n2 "))
            .expect("the n1-n2 row");
        assert!(row.ends_with("3/0 (shed 1)"), "{row}");
        assert!(text.ends_with(
            "(shed n: the link is congested; the sender withholds the top n simulcast layers)\n"
        ));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["links"][0]["bToA"]["shedLayers"], 1);
        assert!(render_dot(&t).contains("3/0 (shed 1) streams"));
    }

    #[test]
    fn units_for_people() {
        assert_eq!(human_bitrate(0), "0 bps");
        assert_eq!(human_bitrate(999), "999 bps");
        assert_eq!(human_bitrate(2_400), "2.4 kbps");
        assert_eq!(human_bitrate(12_500), "12.5 kbps");
        assert_eq!(human_bitrate(1_480_000), "1.48 Mbps");
        assert_eq!(human_bitrate(148_000_000), "148 Mbps");
        assert_eq!(human_bitrate(2_000_000_000), "2 Gbps");
        assert_eq!(human_ms(0.41), "0.41 ms");
        assert_eq!(human_ms(12.34), "12.3 ms");
        assert_eq!(human_ms(120.0), "120 ms");
        assert_eq!(human_percent(0.0), "0%");
        assert_eq!(human_percent(0.5), "0.5%");
        assert_eq!(human_percent(0.25), "0.25%");
        assert_eq!(human_percent(12.0), "12%");
    }

    #[test]
    fn dot_has_a_cluster_per_region_and_escapes_ids() {
        let t = topology(&snapshot(), &answers());
        let dot = render_dot(&t);
        assert!(dot.starts_with("graph pipemesh {\n"), "{dot}");
        assert!(dot.ends_with("}\n"));
        assert!(
            dot.contains("  subgraph \"cluster_eu\" {\n    label=\"eu\";\n"),
            "{dot}"
        );
        assert!(dot.contains("\"cluster_us\""));
        assert!(
            dot.contains("    \"n1\" [label=\"n1\\nserving\"];\n"),
            "{dot}"
        );
        assert!(dot.contains("    \"n3\" [label=\"n3\\nunreachable\", style=dashed, color=red];"));
        assert!(
            dot.contains(
                "  \"n1\" -- \"n2\" [label=\"0.5 ms\\nn1→n2 1.48 Mbps, 2/1 streams\\nn2→n1 2.5 kbps, 0 streams\"];"
            ),
            "{dot}"
        );
        assert!(dot.contains("\"n2\" -- \"n9\" [label=\"-\\n"), "{dot}");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());

        assert_eq!(dot_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(dot_quote("x\ny"), r#""x\ny""#);
        // A region named by an operator can hold anything.
        let odd =
            Snapshot::from_kvs(&[("nodes/n1", r#"{"nodeId":"n1","region":"eu \"west\" {1}"}"#)]);
        let dot = render_dot(&topology(&odd, &BTreeMap::new()));
        assert!(
            dot.contains(r#"subgraph "cluster_eu \"west\" {1}" {"#),
            "{dot}"
        );
        // No region: no cluster.
        let plain = Snapshot::from_kvs(&[("nodes/n1", r#"{"nodeId":"n1"}"#)]);
        let dot = render_dot(&topology(&plain, &BTreeMap::new()));
        assert!(!dot.contains("subgraph"), "{dot}");
        assert!(
            dot.contains("  \"n1\" [label=\"n1\\nunreachable\""),
            "{dot}"
        );
    }
}
