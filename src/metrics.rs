//! The node's metrics in Prometheus text format (`GET /metrics` on the admin listener).

use std::sync::atomic::Ordering;

use axum::extract::State;

use crate::admin::{link_peers, AdminState};

/// `GET /metrics`: the node's counters in Prometheus text format.
pub async fn handler(State(s): State<AdminState>) -> String {
    let mut out = String::new();
    line(
        &mut out,
        "tcp_framing_errors_total",
        s.node.tcp_framing_errors.load(Ordering::Relaxed),
    );
    for (name, v) in s.worker.snapshot() {
        line(&mut out, name, v);
    }
    if let Some(r) = &s.registry {
        let st = r.borrow().clone();
        line(&mut out, "registry_connected", u64::from(st.connected));
        line(&mut out, "registry_revision", st.revision.max(0) as u64);
        line(&mut out, "registry_lease_regrants_total", st.lease_regrants);
        line(&mut out, "registry_watch_resumes_total", st.watch_resumes);
        line(&mut out, "registry_relists_total", st.relists);
        line(&mut out, "registry_failed_writes_total", st.failed_writes);
    }
    if let Some(handle) = &s.pipes {
        for peer in link_peers(&s, handle) {
            let Some(st) = handle.stats(&peer) else {
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
                ("pipe_sent_packets_total", st.sent_packets),
                ("pipe_lost_packets_total", st.lost_packets),
            ] {
                // Node ids are [A-Za-z0-9._-]: safe inside a label value.
                line(&mut out, &format!("{name}{{peer=\"{peer}\"}}"), v);
            }
            if st.up {
                // A gauge in seconds, as Prometheus prefers; absent while the link is down.
                let rtt = st.rtt_us as f64 / 1e6;
                line(
                    &mut out,
                    &format!("pipe_rtt_seconds{{peer=\"{peer}\"}}"),
                    rtt,
                );
            }
        }
    }
    out
}

/// Appends the sample `pipemesh_{name} {v}`.
fn line(out: &mut String, name: &str, v: impl std::fmt::Display) {
    out.push_str(&format!("pipemesh_{name} {v}\n"));
}
