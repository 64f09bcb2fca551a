//! The node's prometheus-client [`Collector`]: reads the atomics, the registry status and
//! the pipe link figures at scrape time and encodes every family (see [`crate::metrics`]).

use std::fmt;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::families::{Direction, Feedback, Kind, PipeFeedback};
use super::hist::AtomicHistogram;
use crate::admin::{link_peers, AdminState};
use crate::edge::ice::Protocol;
use crate::pipe::endpoint::LinkStats;

/// Everything `/metrics` shows, read from the admin state at each scrape.
#[derive(Clone)]
pub struct NodeCollector(pub AdminState);

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector")
            .field("node_id", &self.0.node_id)
            .finish()
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A labelled counter family; nothing at all when `series` is empty.
fn counter_family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<(L, u64)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in &series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A labelled gauge family; nothing at all when `series` is empty.
fn gauge_family<L: EncodeLabelSet, V: EncodeGaugeValue + Copy>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: Vec<(L, V)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in &series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A labelled histogram family; nothing at all when `series` is empty.
fn histogram_family<L: EncodeLabelSet, const N: usize>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: &Unit,
    series: Vec<(L, &AtomicHistogram<N>)>,
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, Some(unit), MetricType::Histogram)?;
    for (labels, h) in &series {
        h.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// Every (transport, direction) pair with its label set.
fn kinds_and_directions() -> impl Iterator<Item = (Kind, Direction, Labels<2>)> {
    Kind::ALL.into_iter().flat_map(|k| {
        Direction::ALL
            .into_iter()
            .map(move |d| (k, d, [("transport", k.label()), ("direction", d.label())]))
    })
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let w = &s.worker;
        let media = &w.media;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

        // Traffic per transport kind and direction.
        let t = &media.traffic;
        counter_family(
            &mut e,
            "packets",
            "Packets received (in) and sent (out) per transport: udp and tcp are WebRTC (STUN, DTLS, RTP, RTCP), pipe is QUIC datagrams between nodes (media, RTCP, probes).",
            kinds_and_directions()
                .map(|(k, d, l)| (l, t.sizes(k, d).count()))
                .collect(),
        )?;
        counter_family(
            &mut e,
            "bytes",
            "Bytes of those packets (UDP payload, RFC 4571 frame payload, pipe datagram).",
            kinds_and_directions()
                .map(|(k, d, l)| (l, t.sizes(k, d).sum_raw()))
                .collect(),
        )?;
        histogram_family(
            &mut e,
            "packet_size",
            "Sizes of those packets.",
            &Unit::Bytes,
            kinds_and_directions()
                .map(|(k, d, l)| (l, t.sizes(k, d)))
                .collect(),
        )?;
        counter_family(
            &mut e,
            "send_dropped_packets",
            "Packets the worker emitted that the node could not hand on: UDP socket buffer full, or TCP connection gone or its write queue full.",
            [Protocol::Udp, Protocol::Tcp]
                .into_iter()
                .map(|p| ([("transport", Kind::of(p).label())], s.node.send_drops.get(p)))
                .collect(),
        )?;
        histogram_family(
            &mut e,
            "forwarding_latency",
            "Time from the worker task taking an RTP packet from a producer (UDP: recv returned; TCP, pipe: dequeued from the reader task) to the last packet it caused being handed on (UDP socket send returned; queued to the TCP writer; handed to the QUIC endpoint), per ingress transport.",
            &Unit::Seconds,
            Kind::ALL
                .into_iter()
                .map(|k| ([("ingress", k.label())], s.node.forwarding_latency.of(k)))
                .collect(),
        )?;

        // Drops, feedback, retransmissions.
        counter_family(
            &mut e,
            "dropped_packets",
            "Received packets dropped, by reason: stun (refused STUN), unknown_tuple (from no selected tuple), unclassified (no RFC 7983 class), srtp (failed SRTP/SRTCP), rtp and rtcp (did not parse after decryption), unknown_ssrc, pipe (pipe datagram or its RTCP did not parse), pipe_unknown_stream.",
            [
                ("stun", &w.stun_dropped),
                ("unknown_tuple", &w.unknown_tuple_dropped),
                ("unclassified", &w.unclassified_dropped),
                ("srtp", &w.srtp_failures),
                ("rtp", &w.rtp_malformed),
                ("rtcp", &w.rtcp_malformed),
                ("unknown_ssrc", &w.rtp_unknown_ssrc),
                ("pipe", &w.pipe_malformed),
                ("pipe_unknown_stream", &w.pipe_unknown_stream),
            ]
            .into_iter()
            .map(|(reason, a)| ([("reason", reason)], load(a)))
            .collect(),
        )?;
        counter_family(
            &mut e,
            "rtcp_feedback",
            "RTCP feedback messages received from (in) and sent to (out) WebRTC clients: generic NACKs, PLIs and FIRs.",
            Feedback::ALL
                .into_iter()
                .flat_map(|f| {
                    Direction::ALL.into_iter().map(move |d| {
                        (
                            [("type", f.label()), ("direction", d.label())],
                            media.rtcp_feedback_total(f, d),
                        )
                    })
                })
                .collect(),
        )?;
        counter_family(
            &mut e,
            "pipe_feedback",
            "Feedback about piped streams received from (in) and sent to (out) other nodes: NACK datagrams and keyframe requests.",
            PipeFeedback::ALL
                .into_iter()
                .flat_map(|f| {
                    Direction::ALL.into_iter().map(move |d| {
                        (
                            [("type", f.label()), ("direction", d.label())],
                            media.pipe_feedback_total(f, d),
                        )
                    })
                })
                .collect(),
        )?;
        counter_family(
            &mut e,
            "retransmissions",
            "RTP packets resent on a NACK: to a client (path=client, RTX when negotiated) or into a pipe (path=pipe).",
            vec![
                ([("path", "client")], load(&media.retransmissions)),
                ([("path", "pipe")], load(&w.pipe_rtp_retransmitted)),
            ],
        )?;

        // State.
        let g = &media.gauges;
        for (name, help, v) in [
            ("rooms", "Rooms open on this node.", &g.rooms),
            ("peers", "Peers connected to this node.", &g.peers),
            (
                "sessions",
                "Signaling sessions attached to a room.",
                &g.sessions,
            ),
            ("transports", "WebRTC transports.", &g.transports),
            (
                "producers",
                "Producers, local and piped in from other nodes.",
                &g.producers,
            ),
            ("consumers", "Consumers.", &g.consumers),
        ] {
            gauge(&mut e, name, help, load(v))?;
        }

        // Signaling.
        let sig = &w.signaling;
        counter_family(
            &mut e,
            "signaling_requests",
            "Signaling requests answered, by protoo method (unknown methods as other) and result (ok, 4xx, 5xx).",
            sig.requests()
                .filter(|&(_, _, v)| v > 0)
                .map(|(m, r, v)| ([("method", m), ("result", r.label())], v))
                .collect(),
        )?;
        histogram_family(
            &mut e,
            "signaling_request_duration",
            "Time from reading a signaling request to queueing its answer, by method.",
            &Unit::Seconds,
            sig.durations()
                .filter(|(_, h)| h.count() > 0)
                .map(|(m, h)| ([("method", m)], h))
                .collect(),
        )?;

        // Flat counters kept under their historical names.
        counter(
            &mut e,
            "tcp_framing_errors",
            "TCP media connections closed for bad RFC 4571 framing.",
            load(&s.node.tcp_framing_errors),
        )?;
        for (name, help, v) in w.described() {
            counter(&mut e, name, help, v)?;
        }

        // Registry session.
        if let Some(r) = &s.registry {
            let st = r.borrow().clone();
            gauge(
                &mut e,
                "registry_connected",
                "1 while the cluster registry session is healthy.",
                u64::from(st.connected),
            )?;
            gauge(
                &mut e,
                "registry_revision",
                "The last registry revision the watch delivered.",
                st.revision.max(0),
            )?;
            for (name, help, v) in [
                (
                    "registry_lease_regrants",
                    "Times the lease was lost and re-granted.",
                    st.lease_regrants,
                ),
                (
                    "registry_watch_resumes",
                    "Times the watch resumed after a reconnect.",
                    st.watch_resumes,
                ),
                (
                    "registry_relists",
                    "Times the view was re-listed after a compaction.",
                    st.relists,
                ),
                (
                    "registry_failed_writes",
                    "Registry writes that failed.",
                    st.failed_writes,
                ),
            ] {
                counter(&mut e, name, help, v)?;
            }
        }

        // Pipe links, per peer node.
        if let Some(handle) = &s.pipes {
            let links: Vec<(String, LinkStats)> = link_peers(s, handle)
                .into_iter()
                .filter_map(|p| handle.stats(&p).map(|st| (p, st)))
                .collect();
            encode_links(&mut e, &links)?;
        }
        Ok(())
    }
}

/// The `pipe_*` families, one series per peer node.
fn encode_links(e: &mut DescriptorEncoder, links: &[(String, LinkStats)]) -> fmt::Result {
    // Node ids are [A-Za-z0-9._-]; prometheus-client escapes label values anyway.
    let per_peer = |f: &dyn Fn(&LinkStats) -> u64| -> Vec<([(&'static str, &str); 1], u64)> {
        links
            .iter()
            .map(|(p, st)| ([("peer", p.as_str())], f(st)))
            .collect()
    };
    gauge_family(
        e,
        "pipe_link_up",
        "1 while the pipe link to the peer node is up.",
        None,
        per_peer(&|st| u64::from(st.up)),
    )?;
    type Field = fn(&LinkStats) -> u64;
    let counters: [(&str, &str, Field); 12] = [
        (
            "pipe_datagrams_in",
            "Datagrams received from the peer and handed to the worker.",
            |st| st.datagrams_in,
        ),
        ("pipe_bytes_in", "Bytes of those datagrams.", |st| {
            st.bytes_in
        }),
        ("pipe_datagrams_out", "Datagrams sent to the peer.", |st| {
            st.datagrams_out
        }),
        ("pipe_bytes_out", "Bytes of those datagrams.", |st| {
            st.bytes_out
        }),
        (
            "pipe_garbage_datagrams",
            "Received datagrams that did not parse.",
            |st| st.garbage_datagrams,
        ),
        (
            "pipe_dropped_datagrams",
            "Datagrams dropped: event queue full, link down or too large.",
            |st| st.dropped_datagrams,
        ),
        (
            "pipe_skipped_control",
            "Control frames that could not be decoded.",
            |st| st.skipped_control,
        ),
        ("pipe_control_in", "Control messages received.", |st| {
            st.control_in
        }),
        (
            "pipe_control_out",
            "Control messages queued for sending.",
            |st| st.control_out,
        ),
        (
            "pipe_sent_packets",
            "QUIC packets sent over the link (media, control and acks).",
            |st| st.sent_packets,
        ),
        (
            "pipe_lost_packets",
            "Of those, packets QUIC declared lost.",
            |st| st.lost_packets,
        ),
        (
            "pipe_dials",
            "QUIC connection attempts (0 on the accepting side).",
            |st| st.dials,
        ),
    ];
    for (name, help, f) in counters {
        counter_family(e, name, help, per_peer(&|st| f(st)))?;
    }
    // Figures of the current connection: absent while the link is down.
    let up: Vec<&(String, LinkStats)> = links.iter().filter(|(_, st)| st.up).collect();
    gauge_family(
        e,
        "pipe_rtt",
        "Smoothed round-trip time of the link's QUIC connection.",
        Some(&Unit::Seconds),
        up.iter()
            .map(|(p, st)| ([("peer", p.as_str())], st.rtt_us as f64 / 1e6))
            .collect(),
    )?;
    let ratio = Unit::Other("ratio".into());
    gauge_family(
        e,
        "pipe_loss",
        "QUIC packets lost over packets sent in the last rate window (0 to 1).",
        Some(&ratio),
        up.iter()
            .map(|(p, st)| ([("peer", p.as_str())], st.loss_percent / 100.0))
            .collect(),
    )?;
    gauge_family(
        e,
        "pipe_shed_layers",
        "Upper simulcast layers withheld from the peer because the link is congested (0: every layer flows).",
        None,
        links
            .iter()
            .map(|(p, st)| ([("peer", p.as_str())], u64::from(st.shed_layers)))
            .collect(),
    )?;
    gauge_family(
        e,
        "pipe_congestion_window",
        "Congestion window of the link's QUIC connection.",
        Some(&Unit::Bytes),
        up.iter()
            .map(|(p, st)| ([("peer", p.as_str())], st.congestion_window))
            .collect(),
    )
}
