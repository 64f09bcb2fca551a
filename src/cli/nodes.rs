//! `pipemesh nodes`: one row per node record, with its drain request if there is one, and
//! what the node itself says right now (`GET /api/v1/node`: live counts, transports, CPU).
//! A node that does not answer keeps its record's figures (as last published, every few
//! seconds) and shows as `unreachable`; one too old to serve `/api/v1/node` keeps them too,
//! with a note.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::adminapi::{check_node, problems, targets, AdminClient, AdminError, Answer};
use super::etcd::Registry;
use super::snapshot::Snapshot;
use super::{block_on, human_duration, now_ms, print_json, print_out, render_table};
use super::{warn_malformed, CliError, CommonArgs, Format};
use crate::discovery::keys::NodeState;
use crate::ids::NodeId;

/// The path asked of every node.
pub const NODE_PATH: &str = "/api/v1/node";

/// Flags of `pipemesh nodes`.
#[derive(Args, Debug, Clone)]
pub struct NodesArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A node's `GET /api/v1/node`, decoded leniently (absent fields are `None`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeInfo {
    /// The node that answered.
    pub node_id: String,
    /// `serving` or `draining` (another word is ignored).
    pub state: Option<String>,
    /// Software and version.
    pub software: Option<String>,
    /// Process start (Unix milliseconds).
    pub started_at_ms: Option<u64>,
    /// Seconds since the start.
    pub uptime_secs: Option<u64>,
    /// Process CPU use, percent of one core (`None` where the node cannot tell).
    pub cpu_percent: Option<f64>,
    /// Cores the node may use.
    pub cpu_cores: Option<u64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Signaling sessions open.
    pub sessions: Option<u64>,
    /// Rooms with local peers.
    pub rooms: Option<u64>,
    /// Local peers.
    pub peers: Option<u64>,
    /// WebRTC transports.
    pub transports: Option<u64>,
    /// Local producers.
    pub producers: Option<u64>,
    /// Consumers.
    pub consumers: Option<u64>,
    /// Pipe links up.
    pub pipe_links: Option<u64>,
}

impl Answer for NodeInfo {
    fn answered_by(&self) -> &str {
        &self.node_id
    }
}

impl NodeInfo {
    fn node_state(&self) -> Option<NodeState> {
        match self.state.as_deref()? {
            "serving" => Some(NodeState::Serving),
            "draining" => Some(NodeState::Draining),
            _ => None,
        }
    }
}

/// One node as `pipemesh nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// The node.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// `serving` or `draining`: as the node says, else as its record says.
    pub state: NodeState,
    /// Its admin endpoint answered (see `adminError` for what it could not tell).
    pub reachable: bool,
    /// The figures are the node's own, now (else its record's, as last published).
    pub live: bool,
    /// Why the node's own figures are missing.
    pub admin_error: Option<String>,
    /// An operator asked it to drain (`drain/<node>` exists).
    pub drain_requested: bool,
    /// The drain request's deadline (Unix milliseconds).
    pub drain_deadline_ms: Option<u64>,
    /// The drain request's reason.
    pub drain_reason: Option<String>,
    /// Pipe listener other nodes dial.
    pub pipe_addr: Option<String>,
    /// Where clients connect.
    pub signaling_url: String,
    /// Its admin endpoint.
    pub admin_url: String,
    /// Rooms with local peers.
    pub rooms: u64,
    /// Local peers.
    pub peers: u64,
    /// WebRTC transports (only the node knows).
    pub transports: Option<u64>,
    /// Local producers.
    pub producers: u64,
    /// Consumers.
    pub consumers: u64,
    /// Pipe links up.
    pub pipe_links: u64,
    /// Signaling sessions (only the node knows).
    pub sessions: Option<u64>,
    /// CPU use, percent of one core (only the node knows).
    pub cpu_percent: Option<f64>,
    /// Cores it may use.
    pub cpu_cores: Option<u64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Process start (Unix milliseconds).
    pub started_at_ms: u64,
    /// Seconds since the start, at the time of the listing (`None` when the start is
    /// unknown).
    pub uptime_secs: Option<u64>,
    /// Software and version.
    pub version: String,
    /// What the state column says instead of the state when the node did not answer.
    #[serde(skip)]
    pub state_word: Option<&'static str>,
}

/// The rows, sorted by node id: each record, with the node's own answer where there is one
/// (`answers` lacks a node that was not asked); `now_ms` is the operator's clock.
pub fn node_rows(
    snapshot: &Snapshot,
    now_ms: u64,
    answers: &BTreeMap<NodeId, Result<NodeInfo, AdminError>>,
) -> Vec<NodeRow> {
    snapshot
        .nodes
        .iter()
        .map(|(id, n)| {
            let drain = snapshot.drains.get(id);
            let answer = match answers.get(id) {
                Some(Ok(info)) => check_node(id, &info.node_id).map(|()| info),
                Some(Err(e)) => Err(e.clone()),
                None => Err(AdminError::NoUrl),
            };
            let mut row = NodeRow {
                node_id: id.to_string(),
                region: n.region.clone(),
                state: n.state,
                reachable: false,
                live: false,
                admin_error: None,
                drain_requested: drain.is_some(),
                drain_deadline_ms: drain.and_then(|d| d.deadline_ms),
                drain_reason: drain.map(|d| d.reason.clone()).filter(|r| !r.is_empty()),
                pipe_addr: n.pipe_addr.clone(),
                signaling_url: n.signaling_url.clone(),
                admin_url: n.admin_url.clone(),
                rooms: n.load.rooms,
                peers: n.load.peers,
                transports: None,
                producers: n.load.producers,
                consumers: n.load.consumers,
                pipe_links: n.load.pipe_links,
                sessions: None,
                cpu_percent: None,
                cpu_cores: None,
                rss_bytes: None,
                started_at_ms: n.started_at_ms,
                uptime_secs: (n.started_at_ms > 0)
                    .then(|| now_ms.saturating_sub(n.started_at_ms) / 1_000),
                version: n.software.clone(),
                state_word: None,
            };
            match answer {
                Ok(info) => {
                    row.reachable = true;
                    row.live = true;
                    row.state = info.node_state().unwrap_or(row.state);
                    row.rooms = info.rooms.unwrap_or(row.rooms);
                    row.peers = info.peers.unwrap_or(row.peers);
                    row.transports = info.transports;
                    row.producers = info.producers.unwrap_or(row.producers);
                    row.consumers = info.consumers.unwrap_or(row.consumers);
                    row.pipe_links = info.pipe_links.unwrap_or(row.pipe_links);
                    row.sessions = info.sessions;
                    row.cpu_percent = info.cpu_percent.filter(|c| c.is_finite());
                    row.cpu_cores = info.cpu_cores;
                    row.rss_bytes = info.rss_bytes;
                    row.started_at_ms = info.started_at_ms.unwrap_or(row.started_at_ms);
                    row.uptime_secs = info.uptime_secs.or(row.uptime_secs);
                    if let Some(v) = info.software.as_ref().filter(|v| !v.is_empty()) {
                        row.version = v.clone();
                    }
                }
                Err(e) => {
                    row.reachable = !e.is_unreachable();
                    row.admin_error = Some(e.to_string());
                    row.state_word = e.state_word();
                }
            }
            row
        })
        .collect()
}

/// The note for nodes that answer 404: older versions, without the endpoint.
pub fn older_note(nodes: &str) -> String {
    format!("{nodes}: no {NODE_PATH} (an older version?): figures from the registry")
}

/// The state column: the node's own word (or why it did not answer), and the operator's
/// request when it says more.
pub fn state_cell(row: &NodeRow, now_ms: u64) -> String {
    if let Some(word) = row.state_word {
        return word.to_owned();
    }
    let mut cell = match row.state {
        NodeState::Serving => "serving".to_owned(),
        NodeState::Draining => "draining".to_owned(),
    };
    if row.drain_requested {
        match (row.state, row.drain_deadline_ms) {
            (NodeState::Serving, _) => cell.push_str(" (drain requested)"),
            (NodeState::Draining, Some(at)) if at > now_ms => cell.push_str(&format!(
                " (deadline in {})",
                human_duration(Duration::from_millis(at - now_ms))
            )),
            (NodeState::Draining, Some(_)) => cell.push_str(" (deadline passed)"),
            (NodeState::Draining, None) => {}
        }
    }
    cell
}

/// CPU use as people read it: `12%`.
pub fn cpu_cell(cpu_percent: Option<f64>) -> String {
    cpu_percent.map_or_else(|| "-".into(), |c| format!("{:.0}%", c.max(0.0)))
}

/// The table `pipemesh nodes` prints.
pub fn render(rows: &[NodeRow], now_ms: u64) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node_id.clone(),
                r.region.clone(),
                state_cell(r, now_ms),
                r.pipe_addr.clone().unwrap_or_else(|| "-".into()),
                r.signaling_url.clone(),
                r.rooms.to_string(),
                r.peers.to_string(),
                r.transports.map_or_else(|| "-".into(), |t| t.to_string()),
                r.producers.to_string(),
                r.consumers.to_string(),
                r.pipe_links.to_string(),
                cpu_cell(r.cpu_percent),
                r.uptime_secs
                    .map_or_else(|| "-".into(), |u| human_duration(Duration::from_secs(u))),
                r.version.clone(),
            ]
        })
        .collect();
    render_table(
        &[
            "NODE",
            "REGION",
            "STATE",
            "PIPE",
            "SIGNALING",
            "ROOMS",
            "PEERS",
            "TRANSPORTS",
            "PRODUCERS",
            "CONSUMERS",
            "LINKS",
            "CPU",
            "UPTIME",
            "VERSION",
        ],
        &cells,
    )
}

/// `pipemesh nodes`.
pub fn run(args: &NodesArgs) -> Result<(), CliError> {
    let format = args.common.format()?;
    let client = AdminClient::new(&args.common)?;
    let (snapshot, answers) = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        let mut kvs = registry.list("nodes/").await?;
        kvs.extend(registry.list("drain/").await?);
        let snapshot = Snapshot::from_kvs(&kvs);
        let answers = client
            .get_all::<NodeInfo>(targets(&snapshot, snapshot.nodes.keys()), |_| {
                NODE_PATH.to_owned()
            })
            .await;
        Ok((snapshot, answers))
    })?;
    let now = now_ms();
    let rows = node_rows(&snapshot, now, &answers);
    match format {
        Format::Json => print_json(&rows)?,
        Format::Table => print_out(&render(&rows, now))?,
    }
    for line in problems(&answers, older_note) {
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
                r#"{"nodeId":"n1","region":"eu","pipeAddr":"10.0.0.1:7000",
                    "signalingUrl":"ws://a","state":"draining","software":"pipemesh 0.1.0",
                    "startedAtMs":1000,"load":{"rooms":1,"peers":2,"producers":3,
                    "consumers":4,"pipeLinks":5}}"#,
            ),
            ("nodes/n2", r#"{"nodeId":"n2","region":"us"}"#),
            ("nodes/n3", "broken"),
            (
                "drain/n1",
                r#"{"requestedAtMs":1,"deadlineMs":601000,"reason":"kernel"}"#,
            ),
            ("drain/n2", "{}"),
        ])
    }

    /// `GET /api/v1/node` as the contract describes it.
    const N1_ANSWER: &str = r#"{"nodeId":"n1","region":"eu","state":"draining",
        "software":"pipemesh 0.2.0","startedAtMs":2000,"uptimeSecs":99,"cpuPercent":12.5,
        "cpuCores":2,"rssBytes":52428800,"sessions":3,"rooms":1,"peers":3,"transports":6,
        "producers":2,"consumers":7,"pipeLinks":2,"somethingNew":{}}"#;

    fn answers(n1: Result<NodeInfo, AdminError>) -> BTreeMap<NodeId, Result<NodeInfo, AdminError>> {
        BTreeMap::from([
            (NodeId::from("n1"), n1),
            (
                NodeId::from("n2"),
                Err(AdminError::Connect("Connection refused".into())),
            ),
        ])
    }

    fn n1_answer() -> Result<NodeInfo, AdminError> {
        Ok(serde_json::from_str(N1_ANSWER).unwrap())
    }

    #[test]
    fn rows_carry_records_load_and_drain_requests() {
        let s = snapshot();
        assert_eq!(s.malformed, 1);
        let rows = node_rows(&s, 1_000 + 3_725_000, &BTreeMap::new());
        assert_eq!(rows.len(), 2);
        let n1 = &rows[0];
        assert_eq!(
            (n1.node_id.as_str(), n1.region.as_str(), n1.state),
            ("n1", "eu", NodeState::Draining)
        );
        assert_eq!(
            (
                n1.rooms,
                n1.peers,
                n1.producers,
                n1.consumers,
                n1.pipe_links
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!(
            (n1.live, n1.transports, n1.cpu_percent),
            (false, None, None)
        );
        assert_eq!(n1.uptime_secs, Some(3_725));
        assert_eq!(rows[1].uptime_secs, None);
        assert_eq!(n1.drain_deadline_ms, Some(601_000));
        assert_eq!(n1.drain_reason.as_deref(), Some("kernel"));
        let n2 = &rows[1];
        assert!(n2.drain_requested && n2.drain_reason.is_none());
        assert_eq!(n2.state, NodeState::Serving);

        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["nodeId"], "n1");
        assert_eq!(json[0]["state"], "draining");
        assert_eq!(json[0]["pipeLinks"], 5);
        assert_eq!(json[1]["pipeAddr"], serde_json::Value::Null);
        assert_eq!(json[1]["uptimeSecs"], serde_json::Value::Null);
        assert!(json[0].get("stateWord").is_none());
    }

    #[test]
    fn the_nodes_own_answer_wins_over_its_record() {
        let rows = node_rows(&snapshot(), 5_000_000, &answers(n1_answer()));
        let n1 = &rows[0];
        assert!(n1.reachable && n1.live && n1.admin_error.is_none());
        assert_eq!(
            (
                n1.peers,
                n1.transports,
                n1.producers,
                n1.consumers,
                n1.pipe_links
            ),
            (3, Some(6), 2, 7, 2)
        );
        assert_eq!(
            (n1.cpu_percent, n1.cpu_cores, n1.sessions),
            (Some(12.5), Some(2), Some(3))
        );
        assert_eq!((n1.uptime_secs, n1.started_at_ms), (Some(99), 2000));
        assert_eq!(n1.version, "pipemesh 0.2.0");
        // The operator's request stays the registry's.
        assert_eq!(n1.drain_reason.as_deref(), Some("kernel"));

        // n2 did not answer: its record's figures, and why.
        let n2 = &rows[1];
        assert!(!n2.reachable && !n2.live);
        assert_eq!(
            n2.admin_error.as_deref(),
            Some("unreachable: Connection refused")
        );
        assert_eq!(state_cell(n2, 0), "unreachable");

        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["transports"], 6);
        assert_eq!(json[0]["cpuPercent"], 12.5);
        assert_eq!(json[1]["reachable"], false);
        assert_eq!(json[1]["state"], "serving");
        assert_eq!(json[1]["transports"], serde_json::Value::Null);
        assert_eq!(json[1]["adminError"], "unreachable: Connection refused");

        let table = render(&rows, 5_000_000);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("PEERS   TRANSPORTS   PRODUCERS   CONSUMERS   LINKS   CPU   UPTIME"),
            "{table}"
        );
        assert!(
            lines[1]
                .contains("   3       6            2           7           2       12%   1m39s"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("n2     us       unreachable"),
            "{table}"
        );
        assert!(lines[2].contains("   -            0  "), "{table}");
    }

    #[test]
    fn partial_answers_and_odd_states_keep_the_records_figures() {
        let partial =
            Ok(serde_json::from_str(r#"{"nodeId":"n1","state":"stopping","peers":9}"#).unwrap());
        let rows = node_rows(&snapshot(), 5_000_000, &answers(partial));
        let n1 = &rows[0];
        assert!(n1.live);
        assert_eq!(n1.state, NodeState::Draining);
        assert_eq!((n1.peers, n1.producers, n1.transports), (9, 3, None));
        assert_eq!(n1.version, "pipemesh 0.1.0");
        assert_eq!(cpu_cell(None), "-");
        assert_eq!(cpu_cell(Some(0.2)), "0%");
        assert_eq!(cpu_cell(Some(150.0)), "150%");
    }

    #[test]
    fn an_older_node_without_the_endpoint_is_a_note_not_a_failure() {
        let older = Err(AdminError::NotFound {
            path: NODE_PATH.into(),
            message: String::new(),
        });
        let answers = answers(older);
        let rows = node_rows(&snapshot(), 5_000_000, &answers);
        let n1 = &rows[0];
        assert!(n1.reachable && !n1.live);
        assert_eq!(n1.peers, 2);
        assert_eq!(state_cell(n1, 1_000), "draining (deadline in 10m0s)");
        assert_eq!(
            problems(&answers, older_note),
            [
                "pipemesh: note: n1: no /api/v1/node (an older version?): figures from the registry",
                "pipemesh: warning: n2: unreachable: Connection refused",
            ]
        );
        let unauthorized = node_rows(
            &snapshot(),
            0,
            &self::answers(Err(AdminError::Unauthorized)),
        );
        assert_eq!(state_cell(&unauthorized[0], 0), "unauthorized");
        assert!(unauthorized[0].reachable);
    }

    #[test]
    fn the_state_column_says_what_the_request_adds() {
        let rows = node_rows(&snapshot(), 1_000, &answers(n1_answer()));
        assert_eq!(state_cell(&rows[0], 1_000), "draining (deadline in 10m0s)");
        assert_eq!(state_cell(&rows[0], 700_000), "draining (deadline passed)");
        let registry_only = node_rows(&snapshot(), 1_000, &BTreeMap::new());
        assert_eq!(state_cell(&registry_only[1], 1_000), "unreachable");
        let mut n2 = registry_only[1].clone();
        n2.state_word = None;
        assert_eq!(state_cell(&n2, 1_000), "serving (drain requested)");
        let table = render(&rows, 1_000);
        let mut lines = table.lines();
        assert!(lines.next().unwrap().starts_with("NODE   REGION   STATE"));
        assert!(lines.next().unwrap().contains("10.0.0.1:7000"));
        assert!(lines
            .next()
            .unwrap()
            .starts_with("n2     us       unreachable"));
    }
}
