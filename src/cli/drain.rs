//! `pipemesh drain NODE` and `pipemesh undrain NODE`: write or delete the operator's
//! `drain/<node>` request, then wait until the node's own record says it has acted on it
//! (polled, bounded by `--wait`). The node does the draining (its directory turns the request
//! into a `LocalDrain` event); these commands only ask and watch.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::time::{sleep, Instant};

use super::etcd::Registry;
use super::{block_on, human_duration, now_ms, parse_duration, print_json, print_out};
use super::{CliError, CommonArgs, Format};
use crate::discovery::keys::{self, drain_key, node_key, DrainRecord, NodeState};
use crate::ids::NodeId;

/// How often the node's record is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Flags of `pipemesh drain`.
#[derive(Args, Debug, Clone)]
pub struct DrainArgs {
    /// The node to drain
    pub node: String,
    /// Close the sessions the node still has after this long (e.g. 10m) [default: never,
    /// they end on their own]
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// Why (shown by `pipemesh nodes`)
    #[arg(long, default_value = "")]
    pub reason: String,
    /// How long to wait for the node to report draining
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of `pipemesh undrain`.
#[derive(Args, Debug, Clone)]
pub struct UndrainArgs {
    /// The node to take back into service
    pub node: String,
    /// How long to wait for the node to report serving
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `drain` and `undrain` print once the node has confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainOutcome {
    /// The node.
    pub node_id: String,
    /// Its state now: `draining` after `drain`, `serving` after `undrain`.
    pub state: NodeState,
    /// The request's deadline (Unix milliseconds), after `drain --deadline`.
    pub deadline_ms: Option<u64>,
    /// How long the node took to confirm, in milliseconds.
    pub waited_ms: u64,
}

/// The request `pipemesh drain` writes at `now_ms`.
pub fn drain_record(now_ms: u64, deadline: Option<Duration>, reason: &str) -> DrainRecord {
    DrainRecord {
        requested_at_ms: now_ms,
        deadline_ms: deadline
            .map(|d| now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        reason: reason.to_owned(),
    }
}

/// The state the node record under `nodes/<node>` reports; `None` when absent or unreadable.
pub fn reported_state(node: &NodeId, value: Option<&[u8]>) -> Option<NodeState> {
    keys::parse_node_record(node, value?).ok().map(|r| r.state)
}

fn not_found(node: &str, cluster: &str) -> CliError {
    CliError::NotFound(format!("no node {node} in cluster {cluster}"))
}

/// Polls the node's record until it reports `want`; the time it took, or `None` past `wait`.
async fn wait_for(
    registry: &mut Registry,
    node: &NodeId,
    want: NodeState,
    wait: Duration,
) -> Result<Option<Duration>, CliError> {
    let started = Instant::now();
    let key = node_key(node);
    loop {
        let value = registry.get(&key).await?;
        if reported_state(node, value.as_deref()) == Some(want) {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= wait {
            return Ok(None);
        }
        sleep(POLL.min(wait.saturating_sub(started.elapsed()))).await;
    }
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Serving => "serving",
        NodeState::Draining => "draining",
    }
}

fn print_outcome(outcome: &DrainOutcome, output: Format) -> Result<(), CliError> {
    match output {
        Format::Json => print_json(outcome),
        Format::Table => {
            let deadline = match outcome.deadline_ms {
                Some(at) => format!(
                    " (sessions left are closed in {})",
                    human_duration(Duration::from_millis(at.saturating_sub(now_ms())))
                ),
                None => String::new(),
            };
            print_out(&format!(
                "node {} is {}{deadline}\n",
                outcome.node_id,
                state_name(outcome.state)
            ))
        }
    }
}

/// `pipemesh drain NODE`.
pub fn run_drain(args: &DrainArgs) -> Result<(), CliError> {
    let format = args.common.format()?;
    let cluster = &args.common.cluster;
    if !crate::config::valid_node_id(&args.node) {
        return Err(not_found(&args.node, cluster));
    }
    let node = NodeId::from(args.node.as_str());
    let record = drain_record(now_ms(), args.deadline, &args.reason);
    let value = keys::encode_value(&record).map_err(|e| CliError::Usage(e.to_string()))?;
    let waited = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        if registry.get(&node_key(&node)).await?.is_none() {
            return Err(not_found(&args.node, cluster));
        }
        registry.put(&drain_key(&node), value).await?;
        eprintln!("waiting for {node} to report draining...");
        wait_for(&mut registry, &node, NodeState::Draining, args.wait).await
    })?;
    let Some(waited) = waited else {
        return Err(CliError::NotConfirmed(format!(
            "the drain request is recorded ({}), but {node} has not reported draining within {}",
            drain_key(&node),
            human_duration(args.wait)
        )));
    };
    let outcome = DrainOutcome {
        node_id: args.node.clone(),
        state: NodeState::Draining,
        deadline_ms: record.deadline_ms,
        waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
    };
    print_outcome(&outcome, format)
}

/// `pipemesh undrain NODE`.
pub fn run_undrain(args: &UndrainArgs) -> Result<(), CliError> {
    let format = args.common.format()?;
    let cluster = &args.common.cluster;
    if !crate::config::valid_node_id(&args.node) {
        return Err(not_found(&args.node, cluster));
    }
    let node = NodeId::from(args.node.as_str());
    let waited = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        let removed = registry.delete(&drain_key(&node)).await?;
        if registry.get(&node_key(&node)).await?.is_none() {
            if removed {
                // A request for a node that is down: removing it is all there is to do.
                eprintln!("removed the drain request of {node}, which is not running");
                return Ok(Some(None));
            }
            return Err(not_found(&args.node, cluster));
        }
        eprintln!("waiting for {node} to report serving...");
        let waited = wait_for(&mut registry, &node, NodeState::Serving, args.wait).await?;
        Ok(waited.map(Some))
    })?;
    let Some(waited) = waited else {
        return Err(CliError::NotConfirmed(format!(
            "the drain request of {node} is removed, but {node} has not reported serving \
             within {} (is it shutting down?)",
            human_duration(args.wait)
        )));
    };
    let Some(waited) = waited else {
        return Ok(());
    };
    let outcome = DrainOutcome {
        node_id: args.node.clone(),
        state: NodeState::Serving,
        deadline_ms: None,
        waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
    };
    print_outcome(&outcome, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_deadline_from_now() {
        let r = drain_record(1_000, Some(Duration::from_secs(600)), "kernel");
        assert_eq!(r.deadline_ms, Some(601_000));
        let text = keys::encode_value(&r).unwrap();
        assert!(text.contains(r#""deadlineMs":601000"#), "{text}");
        assert_eq!(drain_record(1_000, None, "").deadline_ms, None);
        assert_eq!(
            drain_record(u64::MAX, Some(Duration::from_secs(1)), "").deadline_ms,
            Some(u64::MAX)
        );
    }

    #[test]
    fn only_the_nodes_own_record_confirms() {
        let n1 = NodeId::from("n1");
        let draining = br#"{"nodeId":"n1","state":"draining"}"#;
        assert_eq!(
            reported_state(&n1, Some(draining)),
            Some(NodeState::Draining)
        );
        assert_eq!(
            reported_state(&n1, Some(br#"{"nodeId":"n1"}"#)),
            Some(NodeState::Serving)
        );
        assert_eq!(reported_state(&NodeId::from("n2"), Some(draining)), None);
        assert_eq!(reported_state(&n1, Some(b"junk")), None);
        assert_eq!(reported_state(&n1, None), None);
    }
}
