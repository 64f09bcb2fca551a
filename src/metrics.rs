//! The node's metrics (`GET /metrics` on the admin listener), encoded with prometheus-client.
//!
//! **Format.** A scraper whose `Accept` names `application/openmetrics-text` (Prometheus does)
//! gets OpenMetrics text 1.0.0 (`application/openmetrics-text; version=1.0.0;
//! charset=utf-8`, ending in `# EOF`); anything else (curl, older scrapers) gets the
//! Prometheus text format 0.0.4 (`text/plain; version=0.0.4; charset=utf-8`). Both carry
//! `# HELP` and `# TYPE` for every family; OpenMetrics adds `# UNIT` where a name ends in a
//! unit. Every name starts with `pipemesh_`.
//!
//! **Cost.** Nothing on the packet path locks or allocates: the worker core and the glue bump
//! relaxed atomics (a histogram observation is a bucket search and two adds, see
//! [`hist::AtomicHistogram`]); a scrape builds a registry around one [`collector`] that reads
//! them. State gauges are stored by the worker whenever an input settles, so a scrape never
//! waits for the worker.
//!
//! **Families** (counters end in `_total`; histograms have `_bucket{le}`, `_sum`, `_count`):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `packets_total`, `bytes_total` | counter | `transport` = udp, tcp, pipe; `direction` = in, out |
//! | `packet_size_bytes` | histogram | `transport`, `direction` |
//! | `send_dropped_packets_total` | counter | `transport` = udp, tcp |
//! | `forwarding_latency_seconds` | histogram | `ingress` = udp, tcp, pipe |
//! | `dropped_packets_total` | counter | `reason` = stun, unknown_tuple, unclassified, srtp, rtp, rtcp, unknown_ssrc, pipe, pipe_unknown_stream |
//! | `rtcp_feedback_total` | counter | `type` = nack, pli, fir; `direction` |
//! | `pipe_feedback_total` | counter | `type` = nack, keyframe_request; `direction` |
//! | `retransmissions_total` | counter | `path` = client, pipe |
//! | `rooms`, `peers`, `sessions`, `transports`, `producers`, `consumers` | gauge | |
//! | `signaling_requests_total` | counter | `method` (protoo method, unknown ones as `other`); `result` = ok, 4xx, 5xx |
//! | `signaling_request_duration_seconds` | histogram | `method` |
//! | `tcp_framing_errors_total` and the worker's flat counters (`rtp_received_total`, `rtp_sent_total`, `srtp_failures_total`, `stun_dropped_total`, `pipe_rtp_sent_total`, `pipe_shed_packets_total`, `sessions_opened_total`, ...: [`crate::worker::WorkerCounters`]) | counter | |
//! | `registry_connected`, `registry_revision` (with a registry) | gauge | |
//! | `registry_{lease_regrants,watch_resumes,relists,failed_writes}_total` | counter | |
//! | `pipe_link_up` | gauge | `peer` |
//! | `pipe_{datagrams,bytes}_{in,out}_total`, `pipe_{garbage,dropped}_datagrams_total`, `pipe_skipped_control_total`, `pipe_control_{in,out}_total`, `pipe_{sent,lost}_packets_total`, `pipe_dials_total` | counter | `peer` |
//! | `pipe_rtt_seconds`, `pipe_loss_ratio`, `pipe_congestion_window_bytes` (while the link is up) | gauge | `peer` |
//! | `pipe_shed_layers` (simulcast layers withheld from a congested link, [`crate::pipe::shedding`]) | gauge | `peer` |
//!
//! Where things are counted: `packets`/`bytes` in where the worker core takes a packet
//! ([`crate::worker::Worker::handle_packet`], `handle_pipe_datagram`) and out where the glue
//! takes an output from it ([`crate::worker::Worker::poll_output`]); what the socket then
//! refuses is `send_dropped_packets` (pipe drops are the per-peer `pipe_dropped_datagrams`).
//! `forwarding_latency` is measured by the glue on the wall clock, per RTP packet that led to
//! at least one packet out: from the worker task taking it (UDP: `recv_from` returned; TCP
//! and pipe: dequeued from the reader task's channel, so time queued there is not included)
//! to the last resulting packet being handed on (UDP: `try_send_to` returned; TCP: queued to
//! the connection's writer task; pipe: handed to the QUIC endpoint). It covers SRTP
//! decryption, forwarding and re-encryption of every copy, and the sends.

pub mod collector;
pub mod families;
pub mod hist;

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

use crate::admin::AdminState;

pub use families::{
    Direction, Feedback, ForwardingLatency, Kind, MediaMetrics, PipeFeedback, RequestResult,
    SendDrops, SignalingMetrics,
};

/// Content type of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A text exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Prometheus,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// The node's metrics in `format`.
pub fn render(state: &AdminState, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("pipemesh");
    registry.register_collector(Box::new(collector::NodeCollector(state.clone())));
    let mut out = String::with_capacity(32 * 1024);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
    }
    Ok(out)
}

/// `GET /metrics`: the node's metrics, in the format the `Accept` header asks for.
pub async fn handler(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    match render(&s, format) {
        Ok(body) => ([(CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_curl_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }
}
