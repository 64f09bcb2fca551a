//! Admin HTTP endpoint: `/healthz` for load balancers and orchestrators, `/metrics` with the
//! node's counters in Prometheus text format.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::node::NodeCounters;
use crate::worker::WorkerCounters;

#[derive(Clone)]
struct AdminState {
    node_id: String,
    region: String,
    node: Arc<NodeCounters>,
    worker: Arc<WorkerCounters>,
}

/// The admin router.
pub fn router(
    node_id: String,
    region: String,
    node: Arc<NodeCounters>,
    worker: Arc<WorkerCounters>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            node_id,
            region,
            node,
            worker,
        })
}

async fn healthz(State(s): State<AdminState>) -> Json<Value> {
    Json(json!({"status": "ok", "nodeId": s.node_id, "region": s.region}))
}

async fn metrics(State(s): State<AdminState>) -> String {
    let mut out = String::new();
    let mut line = |name: &str, v: u64| {
        out.push_str(&format!("pipemesh_{name} {v}\n"));
    };
    line(
        "tcp_framing_errors_total",
        s.node.tcp_framing_errors.load(Ordering::Relaxed),
    );
    for (name, v) in s.worker.snapshot() {
        line(name, v);
    }
    out
}
