//! Admin HTTP endpoint: `/healthz` (the process is alive and serving), `/readyz` (it should get
//! new clients: its cluster registry session is healthy), `/cluster` (this node's view of the
//! cluster: nodes, rooms, peers, producers, links), `/api/v1/rooms/{room}/assign` (placement:
//! which node a new client of a room should use), `/api/v1/links` (this node's pipe links:
//! RTT, loss, bitrate each way and piped producers, for `pipemesh topology`),
//! `/api/v1/node` and `/api/v1/rooms/{room}` (below) and `/metrics` with the node's counters
//! in Prometheus text format.
//!
//! Liveness and readiness differ on purpose: when etcd is unreachable, existing sessions keep
//! their media, so the process is healthy (an orchestrator must not restart it), but it is not
//! ready (a load balancer should send new clients elsewhere until the registry is back).
//!
//! ## Access
//!
//! The listener binds loopback by default (`--admin-listen`). With a token
//! (`--admin-token-file FILE`, its first line; or the token itself in `PIPEMESH_ADMIN_TOKEN`;
//! the file wins when both are given), every route but `/healthz` and `/readyz` (orchestrator
//! probes, which reveal nothing sensitive) needs `Authorization: Bearer <token>`; a missing or
//! wrong one is answered `401` with `WWW-Authenticate: Bearer` and `{"error": "..."}`. The
//! token is compared in constant time ([`token`]). Without a token the API is open; a node
//! whose admin listener is not on loopback then warns at start.
//!
//! ## `GET /api/v1/node`
//!
//! ```json
//! {"nodeId": "n1", "region": "eu", "state": "serving", "software": "pipemesh 0.1.0",
//!  "startedAtMs": 1700000000000, "uptimeSecs": 42, "cpuPercent": 12.5, "cpuCores": 2,
//!  "rssBytes": 52428800, "sessions": 2, "rooms": 1, "peers": 2, "transports": 4,
//!  "producers": 2, "consumers": 6, "pipeLinks": 2}
//! ```
//!
//! `state` is `serving` or `draining`. `cpuPercent` is the process's CPU time (user + system,
//! every thread) over the last 5 s sampling window in percent of one core (two busy cores:
//! 200), `null` until the second sample; `cpuCores` the cores the process may run on;
//! `rssBytes` its resident set size, `null` where `/proc` is unreadable. The counts come from
//! the worker ([`crate::worker::report::NodeCounts`]): `peers` are local peers, `producers`
//! local producers (not those piped in), `pipeLinks` links up. A worker that does not answer
//! in time gives `503` with `{"error": "..."}`.
//!
//! ## `GET /api/v1/rooms/{room}`
//!
//! ```json
//! {"nodeId": "n2", "room": "r",
//!  "peers": [{"peerId": "c2", "displayName": "C2", "transports": 2, "producers": 0,
//!             "consumers": 2}],
//!  "producers": [{"producerId": "...", "peerId": "pub", "originNodeId": "n1",
//!    "kind": "video", "paused": false, "local": false, "via": "n1", "pipedTo": ["n3"],
//!    "path": ["n1", "n2"],
//!    "layers": [{"rid": "r0", "ssrc": 1234, "active": true, "bitrateBps": 150000}],
//!    "consumers": [{"consumerId": "...", "peerId": "c2", "paused": false,
//!                   "spatialLayer": 2, "temporalLayer": 1}]}]}
//! ```
//!
//! What this node has of the room ([`crate::worker::report::RoomReport`]): its local `peers`,
//! and every producer it has something of: local ones (`local: true`, `via: null`) and remote
//! ones piped here or consumed here (`via`: the node whose pipe brings it, from the pipe
//! subscription; `originNodeId`: the node its peer is on). A remote producer the directory
//! announced that is neither piped nor consumed here is not listed. `pipedTo` lists the nodes
//! this node pipes it to (sorted). `layers` are its encodings as received here, lowest
//! spatial layer first: `rid` is `null` when not simulcast (and for encodings piped in, which
//! carry no rid), `ssrc` `null` until a rid-only encoding's first packet, `active` when a
//! packet arrived in the last 2 s, `bitrateBps` over the last second. `consumers` are its
//! local consumers with the layers forwarded now (`null` when not simulcast or none yet).
//! `404` with `{"error": "room \"x\" has no peers or streams on node n1"}` when the node
//! has nothing of the room; `400` for a room id outside 1-256 bytes; `503` when the worker
//! does not answer in time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

pub mod api;
pub mod token;

pub use token::AdminToken;

use crate::discovery::cluster::ClusterView;
use crate::discovery::placement;
use crate::discovery::registry::RegistryStatus;
use crate::ids::{NodeId, RoomId};
use crate::node::NodeCounters;
use crate::pipe::endpoint::PipeHandle;
use crate::worker::WorkerCounters;

/// How long `/cluster` waits for the worker's answer.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A question the admin endpoint asks the worker task.
#[derive(Debug)]
pub enum Inspect {
    /// The directory's view of the cluster as JSON (`null` when the directory has none).
    Cluster(oneshot::Sender<Value>),
    /// How many signaling sessions are open.
    Sessions(oneshot::Sender<usize>),
    /// Per remote node: producers piped there and from there, as
    /// [`crate::worker::Worker::pipe_stream_counts`] counts them, and the simulcast layers
    /// shed toward it ([`crate::worker::Worker::pipe_link_reports`]).
    Links(oneshot::Sender<Vec<crate::worker::report::PipeLinkReport>>),
    /// How much the node holds (`/api/v1/node`).
    Node(oneshot::Sender<crate::worker::report::NodeCounts>),
    /// What the node (`node`, this one) has of a room (`None`: nothing).
    Room {
        /// The room.
        room: RoomId,
        /// This node's id.
        node: NodeId,
        /// The answer.
        reply: oneshot::Sender<Option<crate::worker::report::RoomReport>>,
    },
    /// Drain (or serve again); at `deadline_ms` (Unix milliseconds) close what is left.
    Drain {
        /// Drain or serve.
        draining: bool,
        /// When to close the remaining sessions, if ever.
        deadline_ms: Option<u64>,
    },
}

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    /// This node's id.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Glue counters.
    pub node: Arc<NodeCounters>,
    /// Worker counters.
    pub worker: Arc<WorkerCounters>,
    /// The pipe endpoint, when pipes are on.
    pub pipes: Option<PipeHandle>,
    /// Static peers (always listed in the per-link metrics, even before their first link).
    pub static_peers: Vec<String>,
    /// The registry session; `None` on a node without one (static peers).
    pub registry: Option<watch::Receiver<RegistryStatus>>,
    /// Which registry backs the directory: "etcd", "in-process" or "static".
    pub registry_kind: &'static str,
    /// Questions to the worker task.
    pub inspect: mpsc::Sender<Inspect>,
    /// The bearer token every route but the probes requires; `None`: open.
    pub token: Option<AdminToken>,
    /// Start time and CPU use.
    pub process: api::ProcessInfo,
}

/// The admin router: the probes, and the other routes behind the token check.
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/cluster", get(cluster))
        .route("/api/v1/node", get(api::node))
        .route("/api/v1/rooms/{room}", get(api::room))
        .route("/api/v1/rooms/{room}/assign", get(assign))
        .route("/api/v1/links", get(links))
        .route("/metrics", get(crate::metrics::handler))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            api::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(state)
}

async fn healthz(State(s): State<AdminState>) -> Json<Value> {
    Json(json!({"status": "ok", "nodeId": s.node_id, "region": s.region}))
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, Json<Value>) {
    if s.node.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "draining",
                "nodeId": s.node_id,
                "registry": s.registry_kind,
                "reason": "the node is draining: it takes no new peers",
            })),
        );
    }
    let status = s.registry.as_ref().map(|r| r.borrow().clone());
    match status {
        Some(st) if !st.connected => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not ready",
                "nodeId": s.node_id,
                "registry": s.registry_kind,
                "reason": st.last_error.unwrap_or_else(|| "registry session not established".into()),
            })),
        ),
        _ => (
            StatusCode::OK,
            Json(json!({"status": "ready", "nodeId": s.node_id, "registry": s.registry_kind})),
        ),
    }
}

async fn cluster(State(s): State<AdminState>) -> (StatusCode, Json<Value>) {
    let (tx, rx) = oneshot::channel();
    if s.inspect.send(Inspect::Cluster(tx)).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "worker stopped"})),
        );
    }
    match tokio::time::timeout(INSPECT_TIMEOUT, rx).await {
        Ok(Ok(mut view)) => {
            if let Value::Object(m) = &mut view {
                m.insert("nodeId".into(), json!(s.node_id));
                m.insert("registry".into(), json!(s.registry_kind));
                if let Some(r) = &s.registry {
                    let st = r.borrow().clone();
                    m.insert(
                        "session".into(),
                        json!({
                            "connected": st.connected,
                            "leaseId": st.lease_id,
                            "revision": st.revision,
                            "leaseRegrants": st.lease_regrants,
                            "watchResumes": st.watch_resumes,
                            "relists": st.relists,
                            "failedWrites": st.failed_writes,
                            "lastError": st.last_error,
                        }),
                    );
                }
            }
            (StatusCode::OK, Json(view))
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "worker did not answer"})),
        ),
    }
}

/// Query of `/api/v1/rooms/{room}/assign`.
#[derive(Debug, serde::Deserialize)]
struct AssignQuery {
    /// The client's region; absent: any region.
    region: Option<String>,
}

/// Longest room id accepted by the placement endpoint (as signaling accepts).
const MAX_ROOM_ID: usize = 256;

/// `GET /api/v1/rooms/{room}/assign?region=X`: the node a new client of the room should
/// connect to (see [`crate::discovery::placement`]), as this node's directory sees the
/// cluster. Any node answers for the whole cluster.
async fn assign(
    State(s): State<AdminState>,
    Path(room): Path<String>,
    Query(q): Query<AssignQuery>,
) -> (StatusCode, Json<Value>) {
    if room.is_empty() || room.len() > MAX_ROOM_ID {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("room id must be 1-{MAX_ROOM_ID} bytes")})),
        );
    }
    let (tx, rx) = oneshot::channel();
    if s.inspect.send(Inspect::Cluster(tx)).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "worker stopped"})),
        );
    }
    let view = match tokio::time::timeout(INSPECT_TIMEOUT, rx).await {
        Ok(Ok(v)) => v,
        _ => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "worker did not answer"})),
            )
        }
    };
    let Ok(view) = serde_json::from_value::<ClusterView>(view) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"error": "placement needs the cluster registry (this node runs on static peers)"}),
            ),
        );
    };
    let region = q.region.as_deref().filter(|r| !r.is_empty());
    match placement::assign(&view, &RoomId::from(room.as_str()), region) {
        Ok(a) => (StatusCode::OK, Json(json!(a))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

/// Nodes with a pipe slot, and static peers not yet linked; sorted.
pub(crate) fn link_peers(s: &AdminState, handle: &PipeHandle) -> Vec<String> {
    let mut peers = handle.peers();
    for p in &s.static_peers {
        if !peers.contains(p) {
            peers.push(p.clone());
        }
    }
    peers.sort_unstable();
    peers
}

/// `GET /api/v1/links`: every pipe link of this node (see [`PipeHandle::stats`]):
///
/// ```json
/// {"nodeId": "a", "links": [{"peer": "b", "up": true, "upSinceMs": 1700000000000,
///   "rttMs": 0.41, "lossPercent": 0.0, "sentPackets": 5120, "lostPackets": 0,
///   "congestionWindow": 14720, "bitrateInBps": 2400, "bitrateOutBps": 1480000,
///   "datagramsIn": 12, "datagramsOut": 4410, "bytesIn": 900, "bytesOut": 3520000,
///   "pipedStreamsOut": 2, "pipedStreamsIn": 0, "shedLayers": 0}]}
/// ```
///
/// `rttMs` and `upSinceMs` are `null` while the link is down. Bitrates (media datagram
/// payload, bits per second) and `lossPercent` cover the last few seconds
/// ([`crate::timing::PIPE_RATE_WINDOW`]); packet and byte figures are totals since the node
/// started. `pipedStreamsOut` counts local producers piped to the peer,
/// `pipedStreamsIn` the peer's producers piped here (producers, not simulcast encodings);
/// `shedLayers` the upper simulcast layers withheld from the peer because the link is
/// congested ([`crate::pipe::shedding`]; 0: every layer flows). The three are `null` if the
/// worker did not answer in time. A node without pipes has no links.
async fn links(State(s): State<AdminState>) -> Json<Value> {
    let Some(handle) = &s.pipes else {
        return Json(json!({"nodeId": s.node_id, "links": []}));
    };
    let (tx, rx) = oneshot::channel();
    let counts = if s.inspect.send(Inspect::Links(tx)).await.is_ok() {
        tokio::time::timeout(INSPECT_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    let links: Vec<Value> = link_peers(&s, handle)
        .into_iter()
        .filter_map(|peer| {
            let st = handle.stats(&peer)?;
            let piped = counts.as_ref().map(|c| {
                c.iter()
                    .find(|r| r.node.as_str() == peer)
                    .map_or((0, 0, 0), |r| (r.piped_out, r.piped_in, r.shed_layers))
            });
            Some(json!({
                "peer": peer,
                "up": st.up,
                "upSinceMs": st.up_since_ms,
                "rttMs": st.up.then(|| st.rtt_us as f64 / 1000.0),
                "lossPercent": st.loss_percent,
                "sentPackets": st.sent_packets,
                "lostPackets": st.lost_packets,
                "congestionWindow": st.congestion_window,
                "bitrateInBps": st.bitrate_in_bps,
                "bitrateOutBps": st.bitrate_out_bps,
                "datagramsIn": st.datagrams_in,
                "datagramsOut": st.datagrams_out,
                "bytesIn": st.bytes_in,
                "bytesOut": st.bytes_out,
                "pipedStreamsOut": piped.map(|p| p.0),
                "pipedStreamsIn": piped.map(|p| p.1),
                "shedLayers": piped.map(|p| p.2),
            }))
        })
        .collect();
    Json(json!({"nodeId": s.node_id, "links": links}))
}
