//! `pipemesh nodes`: one row per node record, with its drain request if there is one.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::etcd::Registry;
use super::snapshot::Snapshot;
use super::{block_on, human_duration, now_ms, print_json, print_out, render_table};
use super::{warn_malformed, CliError, CommonArgs, Format};
use crate::discovery::keys::NodeState;

/// Flags of `pipemesh nodes`.
#[derive(Args, Debug, Clone)]
pub struct NodesArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One node as `pipemesh nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// The node.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// `serving` or `draining`, as the node reports it.
    pub state: NodeState,
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
    /// Rooms with local peers.
    pub rooms: u64,
    /// Local peers.
    pub peers: u64,
    /// Local producers.
    pub producers: u64,
    /// Consumers.
    pub consumers: u64,
    /// Pipe links up.
    pub pipe_links: u64,
    /// Process start (Unix milliseconds).
    pub started_at_ms: u64,
    /// Seconds since the start, at the time of the listing.
    pub uptime_secs: u64,
    /// Software and version.
    pub version: String,
}

/// The rows, sorted by node id; `now_ms` is the operator's clock.
pub fn node_rows(snapshot: &Snapshot, now_ms: u64) -> Vec<NodeRow> {
    snapshot
        .nodes
        .iter()
        .map(|(id, n)| {
            let drain = snapshot.drains.get(id);
            NodeRow {
                node_id: id.to_string(),
                region: n.region.clone(),
                state: n.state,
                drain_requested: drain.is_some(),
                drain_deadline_ms: drain.and_then(|d| d.deadline_ms),
                drain_reason: drain.map(|d| d.reason.clone()).filter(|r| !r.is_empty()),
                pipe_addr: n.pipe_addr.clone(),
                signaling_url: n.signaling_url.clone(),
                rooms: n.load.rooms,
                peers: n.load.peers,
                producers: n.load.producers,
                consumers: n.load.consumers,
                pipe_links: n.load.pipe_links,
                started_at_ms: n.started_at_ms,
                uptime_secs: now_ms.saturating_sub(n.started_at_ms) / 1_000,
                version: n.software.clone(),
            }
        })
        .collect()
}

/// The state column: the node's own word, and the operator's request when it says more.
pub fn state_cell(row: &NodeRow, now_ms: u64) -> String {
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
                r.producers.to_string(),
                r.consumers.to_string(),
                r.pipe_links.to_string(),
                human_duration(Duration::from_secs(r.uptime_secs)),
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
            "PRODUCERS",
            "CONSUMERS",
            "LINKS",
            "UPTIME",
            "VERSION",
        ],
        &cells,
    )
}

/// `pipemesh nodes`.
pub fn run(args: &NodesArgs) -> Result<(), CliError> {
    let format = args.common.format()?;
    let snapshot = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        let mut kvs = registry.list("nodes/").await?;
        kvs.extend(registry.list("drain/").await?);
        Ok(Snapshot::from_kvs(&kvs))
    })?;
    let now = now_ms();
    let rows = node_rows(&snapshot, now);
    match format {
        Format::Json => print_json(&rows)?,
        Format::Table => print_out(&render(&rows, now))?,
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

    #[test]
    fn rows_carry_records_load_and_drain_requests() {
        let s = snapshot();
        assert_eq!(s.malformed, 1);
        let rows = node_rows(&s, 1_000 + 3_725_000);
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
        assert_eq!(n1.uptime_secs, 3_725);
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
    }

    #[test]
    fn the_state_column_says_what_the_request_adds() {
        let rows = node_rows(&snapshot(), 1_000);
        assert_eq!(state_cell(&rows[0], 1_000), "draining (deadline in 10m0s)");
        assert_eq!(state_cell(&rows[0], 700_000), "draining (deadline passed)");
        assert_eq!(state_cell(&rows[1], 1_000), "serving (drain requested)");
        let table = render(&rows, 1_000);
        let mut lines = table.lines();
        assert!(lines.next().unwrap().starts_with("NODE   REGION   STATE"));
        assert!(lines.next().unwrap().contains("10.0.0.1:7000"));
        assert!(lines.next().unwrap().starts_with("n2     us       serving"));
    }
}
