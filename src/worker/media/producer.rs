//! Producers: what a client sends, its incoming streams and their receive-side state.

use super::*;

/// One incoming encoding of a producer.
pub(super) struct ProducerStream {
    pub(super) ssrc: Option<u32>,
    pub(super) rid: Option<String>,
    pub(super) rtx_ssrc: Option<u32>,
    pub(super) stats: ReceiveStats,
    pub(super) nack: NackGenerator,
    pub(super) last_packet: Option<Instant>,
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
    pub(super) streams: Vec<ProducerStream>,
    /// Producer payload type -> router payload type (0xFF: unknown).
    pub(super) pt_map: [u8; 128],
    /// Producer RTX payload type -> producer media payload type (0xFF: not RTX).
    pub(super) rtx_apt: [u8; 128],
    /// Producer header extension id -> router id (0: drop).
    pub(super) ext_map: [u8; 256],
    pub(super) video_codec: Option<VideoCodec>,
    pub(super) clock_rate: u32,
    pub(super) keyframes: KeyFrameRequestManager,
    pub(super) next_report: Instant,
    /// Scores last notified (producerScore is sent when they change).
    pub(super) last_scores: Vec<u8>,
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
    pub(super) fn scores_json(&self, scores: &[u8]) -> Value {
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

pub(super) fn codec_kind(c: Codec) -> Option<MediaKind> {
    match c {
        Codec::Opus => Some(MediaKind::Audio),
        Codec::Vp8 | Codec::Vp9 | Codec::H264 => Some(MediaKind::Video),
        _ => None,
    }
}
