//! The media path: producers and consumers, the per-packet forwarding from one to many, RTCP
//! in both directions, and the periodic RTCP work (reports, NACKs, keyframe requests).
//!
//! Per packet, the path copies the decrypted packet once into a reusable buffer per
//! consumer, rewrites it in place ([`StreamRewriter`]), stores it for retransmission in the
//! consumer's preallocated [`RetransmissionBuffer`] and encrypts it for the consumer's
//! transport. Nothing else allocates per consumer per packet; SRTP itself (webrtc-srtp)
//! returns a fresh buffer, which is the known remaining cost.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::room::Room;
use super::{Output, Transport, Worker};
use crate::edge::demux::{classify, PacketClass};
use crate::edge::ice::{IceOutcome, Tuple};
use crate::ids::{ConsumerId, PeerId, ProducerId, TransportId};
use crate::router::keyframe::{self, VideoCodec, Vp8Rewriter};
use crate::router::ortc;
use crate::router::rtcp_core::{
    self, parse_compound, KeyFrameRequestKind, KeyFrameRequestManager, NackConfig, NackGenerator,
    ReceiveStats, RtcpItem, SendStats, TwccRecorder,
};
use crate::router::rtp_parameters::ScalabilityMode;
use crate::router::rtp_parameters::{Codec, MediaKind, RtpCapabilities, RtpParameters};
use crate::router::rtx::{RetransmissionBuffer, RetransmissionConfig, RtxEncoder};
use crate::router::seq::{RtpView, StreamRewriter};
use crate::router::simulcast::{
    Forward, LayerPacket, SimulcastConfig, SimulcastEvent, SimulcastSelector,
};
use crate::signaling::server::ToPeer;
use crate::timing::{KEYFRAME_REQUEST_THROTTLE, RTCP_REPORT_INTERVAL};

type Outputs = VecDeque<Output>;
type Transports = std::collections::HashMap<TransportId, Transport>;

const URI_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const URI_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const URI_RRID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
const URI_TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// SSRC our RTCP feedback and receiver reports are sent from.
const RTCP_SENDER_SSRC: u32 = 1;

/// Where an incoming SSRC goes.
#[derive(Clone, Debug)]
pub struct StreamRef {
    /// The producer.
    pub producer: ProducerId,
    /// Index of the encoding in the producer's RTP parameters.
    pub encoding: usize,
    /// Whether this SSRC carries the encoding's RTX stream.
    pub rtx: bool,
}

/// Receiver side of transport-wide congestion control for a producing transport.
pub struct TwccIn {
    /// Header extension id the client uses.
    pub ext_id: u8,
    /// Arrival record and feedback builder.
    pub recorder: TwccRecorder,
    /// A media SSRC of the transport, named in feedback packets.
    pub media_ssrc: u32,
}

impl TwccIn {
    /// Writes due feedback into `buf` (cleared first); true when there is some to send.
    pub fn poll_feedback(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        self.recorder
            .poll_feedback(now, RTCP_SENDER_SSRC, self.media_ssrc, buf)
            > 0
    }
}

/// One incoming encoding of a producer.
struct ProducerStream {
    ssrc: Option<u32>,
    rid: Option<String>,
    rtx_ssrc: Option<u32>,
    stats: ReceiveStats,
    nack: NackGenerator,
    last_packet: Option<Instant>,
}

/// A producer: media a client sends.
pub struct Producer {
    /// Id (kept across nodes when piped).
    pub id: ProducerId,
    /// Owning peer.
    pub peer: PeerId,
    /// Transport it arrives on.
    pub transport: TransportId,
    /// audio or video.
    pub kind: MediaKind,
    /// As signaled by the client.
    pub rtp_parameters: RtpParameters,
    /// Router-side parameters consumers are derived from.
    pub consumable: RtpParameters,
    /// Opaque application data from `produce`.
    pub app_data: Value,
    /// Paused by its owner.
    pub paused: bool,
    /// Consumers of this producer (the fan-out).
    pub consumers: Vec<ConsumerId>,
    streams: Vec<ProducerStream>,
    /// Producer payload type -> router payload type (0xFF: unknown).
    pt_map: [u8; 128],
    /// Producer RTX payload type -> producer media payload type (0xFF: not RTX).
    rtx_apt: [u8; 128],
    /// Producer header extension id -> router id (0: drop).
    ext_map: [u8; 256],
    video_codec: Option<VideoCodec>,
    clock_rate: u32,
    keyframes: KeyFrameRequestManager,
    next_report: Instant,
    /// Scores last notified (producerScore is sent when they change).
    last_scores: Vec<u8>,
}

impl Producer {
    /// Validates `params` against the router and registers the producer's SSRCs on
    /// `transport`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        id: ProducerId,
        peer: PeerId,
        transport: &mut Transport,
        kind: MediaKind,
        mut params: RtpParameters,
        app_data: Value,
        router_caps: &RtpCapabilities,
        rng: &mut StdRng,
    ) -> Result<Self, String> {
        // As mediasoup: producers without a CNAME (Chrome's simulcast sends "") get the
        // transport's, so every consumer has a stream id for its msid.
        if params.rtcp.cname.as_deref().is_none_or(str::is_empty) {
            params.rtcp.cname = Some(transport.cname_for_producers.clone());
        }
        ortc::validate_rtp_parameters(&params)
            .map_err(|e| format!("invalid rtpParameters: {e}"))?;
        if params.encodings.is_empty() {
            return Err("rtpParameters.encodings is empty".into());
        }
        let mapping = ortc::get_producer_rtp_parameters_mapping(&params, router_caps, &mut || {
            ortc::random_ssrc(rng)
        })
        .map_err(|e| format!("unsupported rtpParameters: {e}"))?;
        let consumable = ortc::get_consumable_rtp_parameters(kind, &params, router_caps, &mapping)
            .map_err(|e| format!("unsupported rtpParameters: {e}"))?;
        let media = params
            .codecs
            .iter()
            .find(|c| !c.is_rtx())
            .ok_or("rtpParameters has no media codec")?;
        let codec = Codec::from_mime_type(&media.mime_type).ok_or("unknown codec")?;
        if codec_kind(codec) != Some(kind) {
            return Err(format!(
                "codec {} does not match kind {}",
                media.mime_type,
                kind.as_str()
            ));
        }
        let mut pt_map = [0xFFu8; 128];
        for m in &mapping.codecs {
            if let Some(slot) = pt_map.get_mut(m.payload_type as usize) {
                *slot = m.mapped_payload_type;
            }
        }
        let mut rtx_apt = [0xFFu8; 128];
        for c in params.codecs.iter().filter(|c| c.is_rtx()) {
            if let (Some(apt), Some(slot)) = (c.apt(), rtx_apt.get_mut(c.payload_type as usize)) {
                *slot = apt;
            }
        }
        let mut ext_map = [0u8; 256];
        for e in &params.header_extensions {
            if let Some(r) = router_caps
                .header_extensions
                .iter()
                .find(|h| h.uri == e.uri && h.kind == kind)
            {
                ext_map[e.id as usize] = r.preferred_id;
            }
        }
        let streams: Vec<ProducerStream> = params
            .encodings
            .iter()
            .map(|e| ProducerStream {
                ssrc: e.ssrc,
                rid: e.rid.clone(),
                rtx_ssrc: e.rtx.map(|r| r.ssrc),
                stats: ReceiveStats::new(),
                nack: NackGenerator::new(NackConfig::default()),
                last_packet: None,
            })
            .collect();
        // Conflicting SSRCs on one transport would misroute media: refuse them.
        for s in &streams {
            for ssrc in [s.ssrc, s.rtx_ssrc].into_iter().flatten() {
                if transport.ssrc_table.contains_key(&ssrc) {
                    return Err(format!("ssrc {ssrc} is already in use on this transport"));
                }
            }
        }
        for (i, s) in streams.iter().enumerate() {
            if let Some(ssrc) = s.ssrc {
                transport.ssrc_table.insert(
                    ssrc,
                    StreamRef {
                        producer: id.clone(),
                        encoding: i,
                        rtx: false,
                    },
                );
            }
            if let Some(ssrc) = s.rtx_ssrc {
                transport.ssrc_table.insert(
                    ssrc,
                    StreamRef {
                        producer: id.clone(),
                        encoding: i,
                        rtx: true,
                    },
                );
            }
        }
        if transport.twcc_in.is_none() {
            if let Some(e) = params.header_extensions.iter().find(|e| e.uri == URI_TWCC) {
                transport.twcc_in = Some(TwccIn {
                    ext_id: e.id,
                    recorder: TwccRecorder::new(crate::timing::TWCC_FEEDBACK_INTERVAL),
                    media_ssrc: 0,
                });
            }
        }
        Ok(Self {
            id,
            peer,
            transport: transport.id.clone(),
            kind,
            clock_rate: media.clock_rate,
            rtp_parameters: params,
            consumable,
            app_data,
            paused: false,
            consumers: Vec::new(),
            streams,
            pt_map,
            rtx_apt,
            ext_map,
            video_codec: match codec {
                Codec::Vp8 => Some(VideoCodec::Vp8),
                Codec::Vp9 => Some(VideoCodec::Vp9),
                Codec::H264 => Some(VideoCodec::H264),
                _ => None,
            },
            keyframes: KeyFrameRequestManager::new(KEYFRAME_REQUEST_THROTTLE),
            next_report: now + RTCP_REPORT_INTERVAL,
            last_scores: Vec::new(),
        })
    }

    /// Per-encoding scores (0..=10) from reception statistics; 0 for a silent encoding.
    pub fn scores(&self, now: Instant) -> Vec<u8> {
        self.streams
            .iter()
            .map(|s| match s.last_packet {
                Some(t) if now.saturating_duration_since(t) < Duration::from_secs(2) => {
                    s.stats.score()
                }
                _ => 0,
            })
            .collect()
    }

    /// The `producerScore` / `consumerScore` `producerScores` JSON.
    fn scores_json(&self, scores: &[u8]) -> Value {
        Value::Array(
            self.streams
                .iter()
                .zip(scores)
                .enumerate()
                .map(|(i, (s, score))| json!({"encodingIdx": i, "ssrc": s.ssrc, "rid": s.rid, "score": score}))
                .collect(),
        )
    }

    /// Removes this producer's SSRCs from its transport.
    pub fn unregister(&self, t: &mut Transport) {
        t.ssrc_table.retain(|_, r| r.producer != self.id);
    }

    /// Whether the producer has more than one encoding (simulcast).
    pub fn is_simulcast(&self) -> bool {
        self.streams.len() > 1
    }

    /// Next media deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let n = self
            .streams
            .iter()
            .filter_map(|s| s.nack.poll_timeout(None))
            .min();
        let k = self.keyframes.poll_timeout();
        [Some(self.next_report), n, k].into_iter().flatten().min()
    }

    /// Asks the publisher for a keyframe of one encoding (or all). Throttled per SSRC.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        encoding: Option<usize>,
    ) -> Vec<(u32, KeyFrameRequestKind, u8)> {
        let mut out = Vec::new();
        if self.kind != MediaKind::Video {
            return out;
        }
        for (i, s) in self.streams.iter().enumerate() {
            if encoding.is_some_and(|e| e != i) {
                continue;
            }
            if let Some(ssrc) = s.ssrc {
                if let Some(r) =
                    self.keyframes
                        .request_keyframe(now, ssrc, KeyFrameRequestKind::Pli)
                {
                    out.push((r.media_ssrc, r.kind, r.fir_seq));
                }
            }
        }
        out
    }

    /// `getProducerStats`.
    pub fn stats(&self) -> Value {
        Value::Array(
            self.streams
                .iter()
                .map(|s| {
                    json!({
                        "type": "inbound-rtp",
                        "kind": self.kind.as_str(),
                        "ssrc": s.ssrc,
                        "rid": s.rid,
                        "packetCount": s.stats.packets_received(),
                        "byteCount": s.stats.octets_received(),
                        "packetsLost": s.stats.packets_lost(),
                        "jitter": s.stats.jitter(),
                        "score": s.stats.score(),
                    })
                })
                .collect(),
        )
    }
}

fn codec_kind(c: Codec) -> Option<MediaKind> {
    match c {
        Codec::Opus => Some(MediaKind::Audio),
        Codec::Vp8 | Codec::Vp9 | Codec::H264 => Some(MediaKind::Video),
        _ => None,
    }
}

/// A consumer: one producer's media delivered to one client transport.
pub struct Consumer {
    /// Id.
    pub id: ConsumerId,
    /// Consuming peer.
    pub peer: PeerId,
    /// Transport it is sent on.
    pub transport: TransportId,
    /// The producer consumed.
    pub producer: ProducerId,
    /// Parameters sent to the client in `newConsumer`.
    pub rtp_parameters: RtpParameters,
    /// Paused by the client (consumers start paused until `newConsumer` is accepted).
    pub paused: bool,
    /// The producer is paused.
    pub producer_paused: bool,
    /// Priority set by `setConsumerPriority`.
    pub priority: u8,
    simulcast: bool,
    /// Layer selection of a simulcast consumer.
    selector: Option<SimulcastSelector>,
    /// PictureID/TL0PICIDX continuity for a simulcast VP8 consumer.
    vp8: Option<Vp8Rewriter>,
    payload_type: u8,
    ssrc: u32,
    rewriter: StreamRewriter,
    rtx: Option<RtxEncoder>,
    buffer: RetransmissionBuffer,
    /// NACK was negotiated: keep sent packets for retransmission.
    nack: bool,
    send: SendStats,
    twcc_ext: Option<u8>,
    /// Router header-extension id -> itself when this consumer negotiated it, else 0 (erase).
    ext_filter: Box<[u8; 256]>,
    /// The same, also erasing MID (used when our MID does not fit the packet's MID bytes).
    ext_filter_no_mid: Box<[u8; 256]>,
    /// MID header extension id and this consumer's MID value.
    mid: Option<(u8, Vec<u8>)>,
    scratch: Vec<u8>,
    next_report: Instant,
    /// (score, producer score) last notified.
    last_score: Option<(u8, u8)>,
}

impl Consumer {
    /// A paused consumer of `producer` on `transport`.
    pub fn new(
        now: Instant,
        id: ConsumerId,
        peer: PeerId,
        transport: &mut Transport,
        producer: &Producer,
        mut rtp_parameters: RtpParameters,
    ) -> Self {
        let mid = transport.next_mid_for_consumers.to_string();
        transport.next_mid_for_consumers =
            transport.next_mid_for_consumers.wrapping_add(1) % 100_000_000;
        rtp_parameters.mid = Some(mid.clone());
        let mut ext_filter = Box::new([0u8; 256]);
        for e in &rtp_parameters.header_extensions {
            ext_filter[e.id as usize] = e.id;
        }
        let mid_ext = rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == URI_MID)
            .map(|e| e.id);
        let mut ext_filter_no_mid = ext_filter.clone();
        if let Some(id) = mid_ext {
            ext_filter_no_mid[id as usize] = 0;
        }
        let enc = rtp_parameters
            .encodings
            .first()
            .cloned()
            .unwrap_or_default();
        let ssrc = enc.ssrc.unwrap_or(1);
        let media = rtp_parameters.codecs.iter().find(|c| !c.is_rtx());
        let payload_type = media.map(|c| c.payload_type).unwrap_or(0);
        let nack = media.is_some_and(|c| {
            c.rtcp_feedback
                .iter()
                .any(|f| f.r#type == "nack" && f.parameter.is_empty())
        });
        let clock_rate = media.map(|c| c.clock_rate).unwrap_or(90_000);
        let rtx = match (enc.rtx, rtp_parameters.codecs.iter().find(|c| c.is_rtx())) {
            (Some(r), Some(c)) => Some(RtxEncoder::new(r.ssrc, c.payload_type, rand::random())),
            _ => None,
        };
        transport.consumer_by_ssrc.insert(ssrc, id.clone());
        if let Some(r) = &rtx {
            transport.consumer_by_ssrc.insert(r.ssrc(), id.clone());
        }
        let twcc_ext = rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == URI_TWCC)
            .map(|e| e.id);
        let n = producer.streams.len();
        Self {
            id,
            peer,
            transport: transport.id.clone(),
            producer: producer.id.clone(),
            paused: true,
            producer_paused: producer.paused,
            priority: 1,
            simulcast: n > 1,
            selector: (n > 1).then(|| {
                let temporal = ScalabilityMode::parse_or_default(enc.scalability_mode.as_deref())
                    .temporal_layers;
                SimulcastSelector::new(SimulcastConfig::default(), n as u8, temporal.max(1) as u8)
            }),
            vp8: (n > 1 && producer.video_codec == Some(VideoCodec::Vp8)).then(Vp8Rewriter::new),
            payload_type,
            ssrc,
            rewriter: StreamRewriter::new(ssrc, clock_rate, rand::random()),
            rtx,
            // Slots fill lazily up to ~1.5 KB each: size the buffer to what NACK can use. A
            // consumer without negotiated NACK (usually audio) keeps none.
            buffer: RetransmissionBuffer::new(RetransmissionConfig {
                capacity: if nack { 512 } else { 16 },
                ..RetransmissionConfig::default()
            }),
            nack,
            send: SendStats::new(clock_rate),
            twcc_ext,
            ext_filter,
            ext_filter_no_mid,
            mid: mid_ext.map(|id| (id, mid.into_bytes())),
            scratch: Vec::with_capacity(1500),
            rtp_parameters,
            next_report: now + RTCP_REPORT_INTERVAL,
            last_score: None,
        }
    }

    /// `simple` or `simulcast`, as mediasoup-demo's `newConsumer.type`.
    pub fn kind_label(&self) -> &'static str {
        if self.simulcast {
            "simulcast"
        } else {
            "simple"
        }
    }

    /// Forwarding media: neither side paused.
    pub fn is_active(&self) -> bool {
        !self.paused && !self.producer_paused
    }

    /// Removes this consumer's SSRCs from its transport.
    pub fn unregister(&self, t: &mut Transport) {
        t.consumer_by_ssrc.retain(|_, c| c != &self.id);
    }

    /// The consumer (re)starts: continuity on the next packet and a keyframe for video.
    pub fn on_resumed(
        &mut self,
        now: Instant,
        producer: &mut Producer,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        self.rewriter.request_sync();
        if let Some(v) = self.vp8.as_mut() {
            v.sync();
        }
        let encoding = self
            .selector
            .as_ref()
            .and_then(|s| s.target_layers())
            .map(|(s, _)| s as usize);
        let reqs = producer.request_keyframe(now, encoding);
        send_keyframe_requests(producer, reqs, outputs, transports);
    }

    /// The encoding a keyframe request should target: the one forwarded (or being switched
    /// to) for a simulcast consumer, every encoding (`None`) otherwise.
    pub fn forwarded_encoding(&self) -> Option<usize> {
        let s = self.selector.as_ref()?;
        s.current_layers()
            .or(s.target_layers())
            .map(|(s, _)| s as usize)
    }

    /// Encoding currently forwarded (simulcast), or 0.
    fn current_encoding(&self) -> Option<usize> {
        match &self.selector {
            Some(s) => s.current_layers().map(|(s, _)| s as usize),
            None => Some(0),
        }
    }

    /// `setConsumerPreferredLayers`.
    pub fn set_preferred_layers(&mut self, now: Instant, spatial: u8, temporal: Option<u8>) {
        if let Some(s) = self.selector.as_mut() {
            s.set_preferred_layers(now, spatial, temporal.unwrap_or(u8::MAX));
        }
    }

    /// Next media deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = self.selector.as_ref().and_then(|s| s.poll_timeout());
        Some(s.map_or(self.next_report, |s| s.min(self.next_report)))
    }

    /// `getConsumerStats`.
    pub fn stats(&self) -> Value {
        json!([{
            "type": "outbound-rtp",
            "ssrc": self.ssrc,
            "packetCount": self.send.packets_sent(),
            "byteCount": self.send.octets_sent(),
            "roundTripTime": self.send.rtt().map(|d| d.as_secs_f64() * 1000.0),
            "fractionLost": self.send.remote_fraction_lost(),
        }])
    }
}

/// `getTransportStats`.
pub fn transport_stats(t: &Transport) -> Value {
    json!([{
        "type": "webrtc-transport",
        "transportId": t.id,
        "iceState": format!("{:?}", t.ice.state()).to_lowercase(),
        "iceSelectedTuple": t.ice.selected_tuple().map(|tu| json!({
            "remoteIp": tu.remote.ip().to_string(), "remotePort": tu.remote.port(),
            "protocol": format!("{:?}", tu.protocol).to_lowercase(),
        })),
        "dtlsState": format!("{:?}", t.dtls).to_lowercase(),
    }])
}

pub(super) fn send_keyframe_requests(
    producer: &Producer,
    reqs: Vec<(u32, KeyFrameRequestKind, u8)>,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    if reqs.is_empty() {
        return;
    }
    let mut buf = Vec::with_capacity(64);
    for (ssrc, kind, seq) in reqs {
        match kind {
            KeyFrameRequestKind::Pli => rtcp_core::write_pli(&mut buf, RTCP_SENDER_SSRC, ssrc),
            KeyFrameRequestKind::Fir => rtcp_core::write_fir(&mut buf, RTCP_SENDER_SSRC, ssrc, seq),
        }
    }
    send_rtcp(transports, &producer.transport, &buf, outputs);
}

/// Encrypts and sends an RTCP compound packet on a transport's selected tuple.
fn send_rtcp(transports: &mut Transports, id: &TransportId, plain: &[u8], outputs: &mut Outputs) {
    let Some(t) = transports.get_mut(id) else {
        return;
    };
    let Some(tuple) = t.ice.selected_tuple() else {
        return;
    };
    let Some(ctx) = t.srtp_out.as_mut() else {
        return;
    };
    if let Ok(enc) = ctx.encrypt_rtcp(plain) {
        outputs.push_back(Output::Transmit { tuple, data: enc });
    }
}

/// Sends transport-wide-cc feedback to a publishing client when due.
pub fn send_twcc_feedback(
    t: &mut Transport,
    now: Instant,
    buf: &mut Vec<u8>,
    outputs: &mut Outputs,
) {
    let Some(twcc) = t.twcc_in.as_mut() else {
        return;
    };
    if !twcc.poll_feedback(now, buf) {
        return;
    }
    let Some(tuple) = t.ice.selected_tuple() else {
        return;
    };
    let Some(ctx) = t.srtp_out.as_mut() else {
        return;
    };
    if let Ok(enc) = ctx.encrypt_rtcp(buf) {
        outputs.push_back(Output::Transmit { tuple, data: enc });
    }
    buf.clear();
}

/// Entry point for every packet on the shared port.
pub fn handle_packet(w: &mut Worker, now: Instant, tuple: Tuple, data: &[u8]) {
    match classify(data) {
        PacketClass::Stun => handle_stun(w, now, tuple, data),
        PacketClass::Unknown => {
            w.counters
                .unclassified_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        class => {
            let Some(id) = w.by_tuple.get(&tuple).cloned() else {
                w.counters
                    .unknown_tuple_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            };
            let Some(t) = w.transports.get_mut(&id) else {
                return;
            };
            // DTLS and media are accepted only from the ICE-selected tuple.
            if t.ice.selected_tuple() != Some(tuple) {
                w.counters
                    .unknown_tuple_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            match class {
                PacketClass::Dtls => w.outputs.push_back(Output::DtlsFeed {
                    transport: id,
                    data: data.to_vec(),
                }),
                PacketClass::Rtp => handle_rtp(w, now, &id, data),
                PacketClass::Rtcp => handle_rtcp(w, now, &id, data),
                _ => {}
            }
        }
    }
}

fn handle_stun(w: &mut Worker, now: Instant, tuple: Tuple, data: &[u8]) {
    let id = crate::edge::stun::local_ufrag_of_request(data)
        .and_then(|u| w.by_ufrag.get(u))
        .cloned();
    let Some(id) = id else {
        w.counters.stun_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Some(t) = w.transports.get_mut(&id) else {
        return;
    };
    let mut out = std::mem::take(&mut w.scratch);
    let refused = match t.ice.handle_stun_bytes(now, tuple, data, &mut out) {
        Ok(IceOutcome::Success) => false,
        Ok(_) => true,
        Err(e) => {
            tracing::trace!(transport = %id, error = %e, "STUN check dropped");
            true
        }
    };
    if refused {
        w.counters.stun_dropped.fetch_add(1, Ordering::Relaxed);
    }
    // Error responses (401, 487, ...) are sent too: libwebrtc learns from them.
    if !out.is_empty() {
        w.outputs.push_back(Output::Transmit {
            tuple,
            data: bytes::Bytes::copy_from_slice(&out),
        });
    }
    out.clear();
    w.scratch = out;
    w.after_ice(now, &id);
}

fn handle_rtp(w: &mut Worker, now: Instant, id: &TransportId, data: &[u8]) {
    let Worker {
        transports,
        rooms,
        outputs,
        counters,
        scratch,
        ..
    } = w;
    let Some(t) = transports.get_mut(id) else {
        return;
    };
    let Some(ctx) = t.srtp_in.as_mut() else {
        return;
    };
    let plain = match ctx.decrypt_rtp(data) {
        Ok(p) => p,
        Err(_) => {
            counters.srtp_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    scratch.clear();
    scratch.extend_from_slice(&plain);
    let Ok(view) = RtpView::parse(&scratch[..]) else {
        counters.rtp_malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.rtp_received.fetch_add(1, Ordering::Relaxed);
    let ssrc = view.ssrc();
    let sref = match t.ssrc_table.get(&ssrc) {
        Some(r) => r.clone(),
        None => match learn_ssrc(t, rooms, &view) {
            Some(r) => r,
            None => {
                counters.rtp_unknown_ssrc.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
    };
    if let Some(twcc) = t.twcc_in.as_mut() {
        if let Some(seq) = view.transport_wide_seq(twcc.ext_id) {
            twcc.recorder.on_packet(now, seq);
            if twcc.media_ssrc == 0 {
                twcc.media_ssrc = ssrc;
            }
        }
    }
    let Some(room) = rooms.get_mut(&t.room) else {
        return;
    };
    forward(room, transports, outputs, counters, now, &sref, scratch);
}

/// Binds an unknown SSRC to a producer encoding by its MID and RID header extensions
/// (rid-based simulcast, as Chrome sends by default).
fn learn_ssrc(
    t: &mut Transport,
    rooms: &mut std::collections::HashMap<crate::ids::RoomId, Room>,
    view: &RtpView<&[u8]>,
) -> Option<StreamRef> {
    let room = rooms.get(&t.room)?;
    for pid in &t.producers {
        let p = room.producers.get(pid)?;
        let ext = |uri: &str| {
            p.rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id)
        };
        let mid = ext(URI_MID).and_then(|i| view.sdes_str(i));
        if mid.is_none() || mid != p.rtp_parameters.mid.as_deref() {
            continue;
        }
        let (rid, rtx) = match ext(URI_RID).and_then(|i| view.sdes_str(i)) {
            Some(r) => (Some(r), false),
            None => (ext(URI_RRID).and_then(|i| view.sdes_str(i)), true),
        };
        let encoding = match rid {
            Some(rid) => p
                .streams
                .iter()
                .position(|s| s.rid.as_deref() == Some(rid))?,
            None if p.streams.len() == 1 && p.streams[0].ssrc.is_none() => 0,
            None => continue,
        };
        let r = StreamRef {
            producer: pid.clone(),
            encoding,
            rtx,
        };
        t.ssrc_table.insert(view.ssrc(), r.clone());
        return Some(r);
    }
    None
}

/// Producer ingress and fan-out of one decrypted packet held in `pkt`.
fn forward(
    room: &mut Room,
    transports: &mut Transports,
    outputs: &mut Outputs,
    counters: &super::WorkerCounters,
    now: Instant,
    sref: &StreamRef,
    pkt: &mut Vec<u8>,
) {
    let Some(p) = room.producers.get_mut(&sref.producer) else {
        return;
    };
    let Some(stream) = p.streams.get_mut(sref.encoding) else {
        return;
    };
    if sref.rtx {
        // RFC 4588: restore the original packet (seq from the OSN, media payload type).
        let Ok(view) = RtpView::parse(&pkt[..]) else {
            return;
        };
        let apt = p
            .rtx_apt
            .get(view.payload_type() as usize)
            .copied()
            .unwrap_or(0xFF);
        let Some(media_ssrc) = stream.ssrc else {
            return;
        };
        if apt == 0xFF {
            return;
        }
        let mut restored = vec![0u8; pkt.len()];
        match crate::router::rtx::rtx_decode(&pkt[..], apt, media_ssrc, &mut restored) {
            Ok(n) => {
                restored.truncate(n);
                *pkt = restored;
            }
            Err(_) => return,
        }
    }
    let Ok(mut view) = RtpView::parse(&mut pkt[..]) else {
        return;
    };
    if stream.ssrc.is_none() {
        stream.ssrc = Some(view.ssrc());
    }
    let seq = view.sequence_number();
    stream.last_packet = Some(now);
    stream
        .stats
        .on_packet(now, seq, view.timestamp(), p.clock_rate, view.len());
    let _ = stream.nack.on_packet(now, seq);
    let mapped_pt = p
        .pt_map
        .get(view.payload_type() as usize)
        .copied()
        .unwrap_or(0xFF);
    if mapped_pt == 0xFF {
        return;
    }
    view.set_payload_type(mapped_pt);
    view.remap_extension_ids(&p.ext_map);
    let is_key = p
        .video_codec
        .is_some_and(|c| keyframe::is_keyframe(c, view.payload()));
    if is_key {
        p.keyframes.on_keyframe_received(view.ssrc());
    }
    if p.paused {
        return;
    }
    let len = view.len();
    let payload_range = view.payload_offset()..view.payload_offset() + view.payload_len();
    let encoding = sref.encoding;
    let layer = match p
        .video_codec
        .and_then(|c| keyframe::layer_info(c, view.payload()))
    {
        Some(i) => LayerPacket {
            spatial: encoding as u8,
            temporal: i.temporal_id,
            keyframe: i.keyframe,
            layer_sync: i.layer_sync,
        },
        None => LayerPacket {
            spatial: encoding as u8,
            ..LayerPacket::default()
        },
    };
    // Borrow the fan-out list out of the producer for the loop (no per-packet allocation).
    let consumers = std::mem::take(&mut p.consumers);
    let mut want_keyframe: Vec<usize> = Vec::new();
    for cid in &consumers {
        let Some(c) = room.consumers.get_mut(cid) else {
            continue;
        };
        let Some(t) = transports.get_mut(&c.transport) else {
            continue;
        };
        if !c.is_active() || !t.is_connected() {
            continue;
        }
        if let Some(sel) = c.selector.as_mut() {
            let decision = sel.should_forward(now, &layer);
            match decision {
                Forward::Ignore => {}
                Forward::Drop => {
                    c.rewriter.drop_input(seq);
                    if let (Some(v), Some(payload)) =
                        (c.vp8.as_mut(), pkt.get(payload_range.clone()))
                    {
                        v.drop_packet(payload);
                    }
                }
                Forward::Switch => {
                    c.rewriter.request_sync();
                    if let Some(v) = c.vp8.as_mut() {
                        v.sync();
                    }
                }
                Forward::Forward => {}
            }
            while let Some(ev) = sel.poll_event() {
                match ev {
                    SimulcastEvent::RequestKeyFrame { spatial } => {
                        want_keyframe.push(spatial as usize)
                    }
                    SimulcastEvent::LayersChanged { spatial, temporal } => {
                        if let Some(peer) = room.peers.get(&c.peer) {
                            let data = match (spatial, temporal) {
                                (Some(s), Some(t)) => {
                                    json!({"consumerId": c.id, "spatialLayer": s, "temporalLayer": t})
                                }
                                _ => {
                                    json!({"consumerId": c.id, "spatialLayer": null, "temporalLayer": null})
                                }
                            };
                            outputs.push_back(Output::ToPeer {
                                session: peer.session,
                                msg: ToPeer::Notify {
                                    method: "consumerLayersChanged",
                                    data,
                                },
                            });
                        }
                    }
                }
            }
            if matches!(decision, Forward::Ignore | Forward::Drop) {
                continue;
            }
        }
        c.scratch.clear();
        c.scratch.extend_from_slice(&pkt[..len]);
        let Ok(mut out) = RtpView::parse(&mut c.scratch[..]) else {
            continue;
        };
        if let Some(v) = c.vp8.as_mut() {
            match v.rewrite(out.payload_mut()) {
                Ok(true) => {}
                _ => continue,
            }
        }
        let Some(rw) = c.rewriter.rewrite(now, &mut out, c.payload_type) else {
            continue;
        };
        // Only the extensions this consumer negotiated, with its own MID (the producer's MID
        // would steer the packet to the wrong m-section of a BUNDLEd receiver).
        match &c.mid {
            Some((id, mid)) if out.extension(*id).is_some_and(|v| v.len() == mid.len()) => {
                out.remap_extension_ids(&c.ext_filter);
                if let Some(v) = out.extension_mut(*id) {
                    v.copy_from_slice(mid);
                }
            }
            Some(_) => out.remap_extension_ids(&c.ext_filter_no_mid),
            None => out.remap_extension_ids(&c.ext_filter),
        }
        if let Some(ext) = c.twcc_ext {
            let s = t.next_twcc_seq();
            out.set_transport_wide_seq(ext, s);
        }
        if c.nack {
            let _ = c.buffer.insert(now, rw.seq, &c.scratch);
        }
        c.send.on_packet_sent(now, rw.timestamp, len);
        let Some(tuple) = t.ice.selected_tuple() else {
            continue;
        };
        let Some(ctx) = t.srtp_out.as_mut() else {
            continue;
        };
        if let Ok(enc) = ctx.encrypt_rtp(&c.scratch) {
            counters.rtp_sent.fetch_add(1, Ordering::Relaxed);
            outputs.push_back(Output::Transmit { tuple, data: enc });
        }
    }
    let Some(p) = room.producers.get_mut(&sref.producer) else {
        return;
    };
    p.consumers = consumers;
    if !want_keyframe.is_empty() {
        want_keyframe.sort_unstable();
        want_keyframe.dedup();
        {
            for e in want_keyframe {
                let reqs = p.request_keyframe(now, Some(e));
                send_keyframe_requests(p, reqs, outputs, transports);
            }
        }
    }
}

fn handle_rtcp(w: &mut Worker, now: Instant, id: &TransportId, data: &[u8]) {
    let Worker {
        transports,
        rooms,
        outputs,
        counters,
        ..
    } = w;
    let Some(t) = transports.get_mut(id) else {
        return;
    };
    let Some(ctx) = t.srtp_in.as_mut() else {
        return;
    };
    let plain = match ctx.decrypt_rtcp(data) {
        Ok(p) => p,
        Err(_) => {
            counters.srtp_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Ok(items) = parse_compound(&plain) else {
        counters.rtcp_malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let room_id = t.room.clone();
    let Some(room) = rooms.get_mut(&room_id) else {
        return;
    };
    let mut resend: Vec<u16> = Vec::new();
    for item in items {
        match item {
            RtcpItem::SenderReport { report, .. } => {
                let Some(t) = transports.get(id) else {
                    continue;
                };
                if let Some(r) = t.ssrc_table.get(&report.ssrc) {
                    if let Some(s) = room
                        .producers
                        .get_mut(&r.producer)
                        .and_then(|p| p.streams.get_mut(r.encoding))
                    {
                        s.stats
                            .on_sender_report(now, rtcp_core::ntp_middle_32(report.ntp_time));
                    }
                }
            }
            RtcpItem::ReceiverReport { blocks, .. } => {
                for b in blocks {
                    let cid = transports
                        .get(id)
                        .and_then(|t| t.consumer_by_ssrc.get(&b.ssrc))
                        .cloned();
                    if let Some(c) = cid.and_then(|cid| room.consumers.get_mut(&cid)) {
                        c.send.on_receiver_report(now, &b, ntp_now(now));
                        if let Some(rtt) = c.send.rtt() {
                            c.buffer.set_rtt(rtt);
                        }
                    }
                }
            }
            RtcpItem::Nack {
                media_ssrc, items, ..
            } => {
                let cid = transports
                    .get(id)
                    .and_then(|t| t.consumer_by_ssrc.get(&media_ssrc))
                    .cloned();
                let Some(c) = cid.and_then(|cid| room.consumers.get_mut(&cid)) else {
                    continue;
                };
                c.buffer.handle_nack(now, items.pairs(), &mut resend);
                let Some(t) = transports.get_mut(id) else {
                    continue;
                };
                let Some(tuple) = t.ice.selected_tuple() else {
                    continue;
                };
                for seq in resend.iter().copied() {
                    let Some(orig) = c.buffer.get(now, seq) else {
                        continue;
                    };
                    let mut out = vec![0u8; orig.len() + 2];
                    let pkt: &[u8] = match c.rtx.as_mut() {
                        Some(enc) => match enc.encode(orig, &mut out) {
                            Ok(n) => &out[..n],
                            Err(_) => continue,
                        },
                        None => orig,
                    };
                    if let Some(ctx) = t.srtp_out.as_mut() {
                        if let Ok(enc) = ctx.encrypt_rtp(pkt) {
                            outputs.push_back(Output::Transmit { tuple, data: enc });
                        }
                    }
                }
            }
            RtcpItem::Pli { media_ssrc, .. } | RtcpItem::Fir { media_ssrc, .. } => {
                let cid = transports
                    .get(id)
                    .and_then(|t| t.consumer_by_ssrc.get(&media_ssrc))
                    .cloned();
                let Some(c) = cid.and_then(|cid| room.consumers.get(&cid)) else {
                    continue;
                };
                let enc = c.forwarded_encoding();
                let pid = c.producer.clone();
                if let Some(p) = room.producers.get_mut(&pid) {
                    let reqs = p.request_keyframe(now, enc);
                    send_keyframe_requests(p, reqs, outputs, transports);
                }
            }
            _ => {}
        }
    }
}

/// Periodic media work of one room.
pub fn room_timeout(
    room: &mut Room,
    now: Instant,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut seqs: Vec<u16> = Vec::new();
    let mut reported = false;
    for p in room.producers.values_mut() {
        buf.clear();
        // NACKs for missing packets.
        for s in p.streams.iter_mut() {
            let Some(ssrc) = s.ssrc else { continue };
            s.nack.poll_nacks(now, None, &mut seqs);
            // Bounded so one compound packet stays well under the MTU.
            for chunk in seqs.chunks(64) {
                rtcp_core::write_nack(&mut buf, RTCP_SENDER_SSRC, ssrc, chunk);
            }
        }
        // Held keyframe requests whose throttle window ended.
        while let Some(r) = p.keyframes.poll_request(now) {
            match r.kind {
                KeyFrameRequestKind::Pli => {
                    rtcp_core::write_pli(&mut buf, RTCP_SENDER_SSRC, r.media_ssrc)
                }
                KeyFrameRequestKind::Fir => {
                    rtcp_core::write_fir(&mut buf, RTCP_SENDER_SSRC, r.media_ssrc, r.fir_seq)
                }
            }
        }
        if now >= p.next_report {
            p.next_report = now + RTCP_REPORT_INTERVAL;
            reported = true;
            let mut blocks = Vec::new();
            for s in p.streams.iter_mut() {
                if let Some(ssrc) = s.ssrc {
                    if let Some(b) = s.stats.report_block(now, ssrc) {
                        blocks.push(b);
                    }
                }
            }
            let mut rr = Vec::with_capacity(128);
            rtcp_core::write_receiver_reports(&mut rr, RTCP_SENDER_SSRC, &blocks);
            rr.extend_from_slice(&buf);
            buf = rr;
        }
        if !buf.is_empty() {
            // A compound packet must begin with a report (RFC 3550 6.1); reduced-size RTCP
            // (RFC 5506, negotiated by WebRTC) allows feedback alone.
            send_rtcp(transports, &p.transport, &buf, outputs);
        }
    }
    // Scores move with RTCP reports: evaluate them on the same cadence.
    if reported {
        notify_scores(room, now, outputs);
    }
    simulcast_timeouts(room, now, outputs, transports);
    for c in room.consumers.values_mut() {
        if now < c.next_report {
            continue;
        }
        c.next_report =
            now + RTCP_REPORT_INTERVAL + Duration::from_millis(rand::rng().random_range(0..100));
        if c.send.packets_sent() == 0 {
            continue;
        }
        buf.clear();
        if let Some(sr) = c.send.sender_report(now, ntp_now(now), c.ssrc) {
            let _ = rtcp_core::write_sender_report(&mut buf, &sr, &[]);
            send_rtcp(transports, &c.transport, &buf, outputs);
        }
    }
}

/// Runs simulcast selectors' timers (layer inactivity, keyframe request retries).
fn simulcast_timeouts(
    room: &mut Room,
    now: Instant,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    let Room {
        producers,
        consumers,
        peers,
        ..
    } = room;
    for c in consumers.values_mut() {
        let Some(sel) = c.selector.as_mut() else {
            continue;
        };
        if sel.poll_timeout().is_none_or(|t| t > now) {
            continue;
        }
        sel.handle_timeout(now);
        while let Some(ev) = sel.poll_event() {
            match ev {
                SimulcastEvent::RequestKeyFrame { spatial } => {
                    if let Some(p) = producers.get_mut(&c.producer) {
                        let reqs = p.request_keyframe(now, Some(spatial as usize));
                        send_keyframe_requests(p, reqs, outputs, transports);
                    }
                }
                SimulcastEvent::LayersChanged { spatial, temporal } => {
                    if let Some(peer) = peers.get(&c.peer) {
                        outputs.push_back(Output::ToPeer {
                            session: peer.session,
                            msg: ToPeer::Notify {
                                method: "consumerLayersChanged",
                                data: json!({"consumerId": c.id, "spatialLayer": spatial, "temporalLayer": temporal}),
                            },
                        });
                    }
                }
            }
        }
    }
}

/// Sends `producerScore` and `consumerScore` when scores changed since the last report.
fn notify_scores(room: &mut Room, now: Instant, outputs: &mut Outputs) {
    let Room {
        producers,
        consumers,
        peers,
        ..
    } = room;
    for p in producers.values_mut() {
        let scores = p.scores(now);
        let changed = scores != p.last_scores;
        if changed {
            if let Some(peer) = peers.get(&p.peer) {
                outputs.push_back(Output::ToPeer {
                    session: peer.session,
                    msg: ToPeer::Notify {
                        method: "producerScore",
                        data: json!({"producerId": p.id, "score": p.scores_json(&scores)}),
                    },
                });
            }
        }
        let producer_score = match p.consumers.first().and_then(|c| consumers.get(c)) {
            Some(c) if c.simulcast => c
                .current_encoding()
                .and_then(|e| scores.get(e))
                .copied()
                .unwrap_or(0),
            _ => scores.iter().copied().max().unwrap_or(0),
        };
        for cid in &p.consumers {
            let Some(c) = consumers.get_mut(cid) else {
                continue;
            };
            let own = if c.send.packets_sent() > 0 {
                c.send.score()
            } else {
                0
            };
            let pscore = if c.simulcast {
                c.current_encoding()
                    .and_then(|e| scores.get(e))
                    .copied()
                    .unwrap_or(producer_score)
            } else {
                producer_score
            };
            if c.last_score == Some((own, pscore)) && !changed {
                continue;
            }
            c.last_score = Some((own, pscore));
            if let Some(peer) = peers.get(&c.peer) {
                outputs.push_back(Output::ToPeer {
                    session: peer.session,
                    msg: ToPeer::Notify {
                        method: "consumerScore",
                        data: json!({"consumerId": c.id, "score": {"score": own, "producerScore": pscore, "producerScores": scores}}),
                    },
                });
            }
        }
        p.last_scores = scores;
    }
}

/// NTP time for reports. The worker does not read the wall clock; sender reports only need a
/// consistent NTP timeline, which a fixed origin plus the monotonic clock gives.
fn ntp_now(now: Instant) -> u64 {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();
    let (base, ntp0) = *ORIGIN.get_or_init(|| {
        // 2_208_988_800: seconds from 1900 (NTP epoch) to 1970.
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = unix.as_secs() + 2_208_988_800;
        let frac = ((unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
        (now, (secs << 32) | frac)
    });
    let d = now.saturating_duration_since(base);
    let add = (d.as_secs() << 32) | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000);
    ntp0.wrapping_add(add)
}
