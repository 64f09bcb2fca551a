//! `GET /api/v1/node` and `GET /api/v1/rooms/{room}` (see the [module docs](super) for their
//! JSON), the CPU sampler behind `cpuPercent`, and the bearer-token check of the admin routes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, oneshot, watch};

use super::{AdminState, Inspect, INSPECT_TIMEOUT, MAX_ROOM_ID};
use crate::ids::{NodeId, RoomId};
use crate::procfs::{read_cpu_ticks, read_rss_bytes, CpuMeter};
use crate::worker::report::NodeCounts;

/// How often the process's CPU time is sampled; `cpuPercent` covers the last such window.
pub const CPU_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// When the node started, and its CPU use as last sampled.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    /// When the node started (monotonic).
    pub started: Instant,
    /// When the node started, Unix milliseconds.
    pub started_at_ms: u64,
    /// Percent of one core over the last [`CPU_SAMPLE_INTERVAL`] (`None` before two samples).
    pub cpu_percent: watch::Receiver<Option<f64>>,
}

/// `GET /api/v1/node`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// This node.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// `serving` or `draining`.
    pub state: &'static str,
    /// `pipemesh <version>`.
    pub software: String,
    /// When the node started, Unix milliseconds.
    pub started_at_ms: u64,
    /// Whole seconds since then.
    pub uptime_secs: u64,
    /// Process CPU time over the last sampling window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Cores this process may run on.
    pub cpu_cores: usize,
    /// Resident set size.
    pub rss_bytes: Option<u64>,
    /// What the worker holds.
    #[serde(flatten)]
    pub counts: NodeCounts,
}

/// What the node report is made of, besides the worker's counts.
#[derive(Clone, Debug)]
pub struct NodeFigures {
    /// Draining (else serving).
    pub draining: bool,
    /// Time since the node started.
    pub uptime: Duration,
    /// When it started, Unix milliseconds.
    pub started_at_ms: u64,
    /// Last CPU figure.
    pub cpu_percent: Option<f64>,
    /// Cores available.
    pub cpu_cores: usize,
    /// Resident set size.
    pub rss_bytes: Option<u64>,
}

/// Assembles `/api/v1/node` (pure).
pub fn node_report(node_id: &str, region: &str, f: &NodeFigures, counts: NodeCounts) -> NodeReport {
    NodeReport {
        node_id: node_id.to_owned(),
        region: region.to_owned(),
        state: if f.draining { "draining" } else { "serving" },
        software: concat!("pipemesh ", env!("CARGO_PKG_VERSION")).to_owned(),
        started_at_ms: f.started_at_ms,
        uptime_secs: f.uptime.as_secs(),
        // Rounded to 0.1 %: finer is noise at 10 ms ticks over 5 s.
        cpu_percent: f.cpu_percent.map(|p| (p * 10.0).round() / 10.0),
        cpu_cores: f.cpu_cores,
        rss_bytes: f.rss_bytes,
        counts,
    }
}

/// An error answer: `{"error": ...}` with `status`.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// Asks the worker one question, bounded by [`INSPECT_TIMEOUT`]; 503 when it does not answer.
async fn ask<T>(
    s: &AdminState,
    question: impl FnOnce(oneshot::Sender<T>) -> Inspect,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    if s.inspect.send(question(tx)).await.is_err() {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "worker stopped"));
    }
    match tokio::time::timeout(INSPECT_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker did not answer in time",
        )),
    }
}

/// `GET /api/v1/node`: this node's identity, state, process figures and what it holds.
pub(super) async fn node(State(s): State<AdminState>) -> Response {
    let counts = match ask(&s, Inspect::Node).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let figures = NodeFigures {
        draining: s.node.draining.load(Ordering::Relaxed),
        uptime: s.process.started.elapsed(),
        started_at_ms: s.process.started_at_ms,
        cpu_percent: *s.process.cpu_percent.borrow(),
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rss_bytes: read_rss_bytes(),
    };
    Json(node_report(&s.node_id, &s.region, &figures, counts)).into_response()
}

/// `GET /api/v1/rooms/{room}`: what this node has of the room; 404 when nothing.
pub(super) async fn room(State(s): State<AdminState>, Path(room): Path<String>) -> Response {
    if room.is_empty() || room.len() > MAX_ROOM_ID {
        return error(
            StatusCode::BAD_REQUEST,
            format!("room id must be 1-{MAX_ROOM_ID} bytes"),
        );
    }
    let node = NodeId::from(s.node_id.as_str());
    let room_id = RoomId::from(room.as_str());
    match ask(&s, |reply| Inspect::Room {
        room: room_id,
        node,
        reply,
    })
    .await
    {
        Ok(Some(report)) => Json(report).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "room {room:?} has no peers or streams on node {}",
                s.node_id
            ),
        ),
        Err(r) => r,
    }
}

/// Admin routes other than the probes: with a token configured, `Authorization: Bearer
/// <token>` is required; anything else is answered 401 with `WWW-Authenticate: Bearer`.
pub(super) async fn require_token(
    State(s): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if token.authorizes(presented) {
        return next.run(req).await;
    }
    let msg = if presented.is_some() {
        "invalid admin token"
    } else {
        "admin token required: send Authorization: Bearer <token>"
    };
    let mut r = error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Samples this process's CPU time every [`CPU_SAMPLE_INTERVAL`] (the first at once) and
/// publishes the percentage of one core over the last window, until `stop`.
pub async fn sample_cpu(tx: watch::Sender<Option<f64>>, mut stop: broadcast::Receiver<()>) {
    let mut meter = CpuMeter::new();
    let mut tick = tokio::time::interval(CPU_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tick.tick() => {
                if let Some(ticks) = read_cpu_ticks() {
                    meter.sample(Instant::now(), ticks);
                    tx.send_replace(meter.percent());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn to_json(r: &NodeReport) -> Value {
        serde_json::to_value(r).expect("report serializes")
    }

    fn figures() -> NodeFigures {
        NodeFigures {
            draining: false,
            uptime: Duration::from_millis(42_900),
            started_at_ms: 1_700_000_000_000,
            cpu_percent: Some(12.54),
            cpu_cores: 2,
            rss_bytes: Some(52_428_800),
        }
    }

    #[test]
    fn node_report_has_the_contract_fields() {
        let counts = NodeCounts {
            sessions: 2,
            rooms: 1,
            peers: 2,
            transports: 4,
            producers: 2,
            consumers: 6,
            pipe_links: 2,
        };
        let v = to_json(&node_report("n1", "eu", &figures(), counts));
        assert_eq!(
            v,
            json!({"nodeId": "n1", "region": "eu", "state": "serving",
                   "software": format!("pipemesh {}", env!("CARGO_PKG_VERSION")),
                   "startedAtMs": 1_700_000_000_000u64, "uptimeSecs": 42, "cpuPercent": 12.5,
                   "cpuCores": 2, "rssBytes": 52_428_800, "sessions": 2, "rooms": 1, "peers": 2,
                   "transports": 4, "producers": 2, "consumers": 6, "pipeLinks": 2})
        );
    }

    #[test]
    fn node_report_before_the_second_cpu_sample_and_while_draining() {
        let f = NodeFigures {
            draining: true,
            cpu_percent: None,
            rss_bytes: None,
            ..figures()
        };
        let v = to_json(&node_report("n1", "eu", &f, NodeCounts::default()));
        assert_eq!(v["state"], "draining");
        assert_eq!(v["cpuPercent"], Value::Null);
        assert_eq!(v["rssBytes"], Value::Null);
        assert_eq!(v["pipeLinks"], 0);
    }
}
