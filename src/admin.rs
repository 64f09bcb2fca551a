//! Admin HTTP endpoint: `/healthz` for load balancers and orchestrators, `/metrics` with the
//! node's counters in Prometheus text format.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::node::NodeCounters;
use crate::pipe::endpoint::PipeHandle;
use crate::worker::WorkerCounters;

#[derive(Clone)]
struct AdminState {
    node_id: String,
    region: String,
    node: Arc<NodeCounters>,
    worker: Arc<WorkerCounters>,
    pipes: Option<(PipeHandle, Vec<String>)>,
}

/// The admin router.
pub fn router(
    node_id: String,
    region: String,
    node: Arc<NodeCounters>,
    worker: Arc<WorkerCounters>,
    pipes: Option<(PipeHandle, Vec<String>)>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            node_id,
            region,
            node,
            worker,
            pipes,
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
    if let Some((handle, peers)) = &s.pipes {
        for peer in peers {
            let Some(st) = handle.stats(peer) else {
                continue;
            };
            for (name, v) in [
                ("pipe_link_up", u64::from(st.up)),
                ("pipe_datagrams_in_total", st.datagrams_in),
                ("pipe_bytes_in_total", st.bytes_in),
                ("pipe_datagrams_out_total", st.datagrams_out),
                ("pipe_bytes_out_total", st.bytes_out),
                ("pipe_garbage_datagrams_total", st.garbage_datagrams),
                ("pipe_dropped_datagrams_total", st.dropped_datagrams),
                ("pipe_skipped_control_total", st.skipped_control),
                ("pipe_control_in_total", st.control_in),
                ("pipe_control_out_total", st.control_out),
            ] {
                // Node ids are [A-Za-z0-9._-]: safe inside a label value.
                line(&format!("{name}{{peer=\"{peer}\"}}"), v);
            }
        }
    }
    out
}
