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

/// One encoding of a producer as received, for reports.
pub(in crate::worker) struct EncodingReceived {
    /// Its RTP stream id, if it has one.
    pub(in crate::worker) rid: Option<String>,
    /// Its SSRC, once known.
    pub(in crate::worker) ssrc: Option<u32>,
    /// When its last packet arrived.
    pub(in crate::worker) last_packet: Option<Instant>,
    /// Received bitrate over the last second, bits per second.
    pub(in crate::worker) bitrate_bps: u64,
}

/// Where a producer's media comes from.
#[derive(Debug)]
pub enum Source {
    /// A client transport on this node (a local producer).
    Transport(TransportId),
    /// A pipe from the producer's origin node (mediasoup's pipe producer).
    Pipe(PipeSource),
}

/// The far side of a piped producer.
#[derive(Debug)]
pub struct PipeSource {
    /// The origin node.
    pub node: NodeId,
    /// Pipe stream id of each encoding, once subscribed (empty otherwise).
    pub stream_ids: Vec<u64>,
    /// Scores of each encoding as the origin measures them.
    pub scores: Vec<u8>,
    /// The way the stream came, origin first, ending with the node it is piped from (as the
    /// `Subscribed` answer told it); empty until subscribed.
    pub path: Vec<NodeId>,
}

/// A producer: media a client sends.
pub struct Producer {
    /// Id (kept across nodes when piped).
    pub id: ProducerId,
    /// Owning peer.
    pub peer: PeerId,
    /// Where its media arrives from.
    pub source: Source,
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
    /// A piped producer whose link is down: its consumers are paused until it returns.
    pub link_paused: bool,
    /// Consumers of this producer (the fan-out).
    pub consumers: Vec<ConsumerId>,
    /// Origin side: nodes this producer is piped to (one copy each).
    pub piped_to: Vec<NodeId>,
    /// Origin side: pipe stream id of each encoding, assigned at the first subscription.
    pub(crate) pipe_stream_ids: Vec<u64>,
    /// Origin side: each encoding's packets as piped, for far nodes' NACKs.
    pub(crate) pipe_buffers: Vec<RetransmissionBuffer>,
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
        let (media, codec) = media_codec(&params, kind)?;
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
            source: Source::Transport(transport.id.clone()),
            link_paused: false,
            piped_to: Vec::new(),
            pipe_stream_ids: Vec::new(),
            pipe_buffers: Vec::new(),
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
            video_codec: video_codec(codec),
            keyframes: KeyFrameRequestManager::new(KEYFRAME_REQUEST_THROTTLE),
            next_report: now + RTCP_REPORT_INTERVAL,
            last_scores: Vec::new(),
        })
    }

    /// A pipe producer: the far-node image of `id`, a producer on `node`, created from the
    /// router-side parameters the origin announced. Packets arrive from the pipe already in
    /// router space (router payload types and header extension ids, RTX repaired), with each
    /// encoding's consumable SSRC, so the maps are identities.
    #[allow(clippy::too_many_arguments)]
    pub fn new_pipe(
        now: Instant,
        id: ProducerId,
        peer: PeerId,
        node: NodeId,
        kind: MediaKind,
        consumable: RtpParameters,
        app_data: Value,
        paused: bool,
    ) -> Result<Self, String> {
        /// More encodings than any simulcast sender uses; bounds what a peer node can make us
        /// allocate.
        const MAX_ENCODINGS: usize = 8;
        if consumable.encodings.is_empty() || consumable.encodings.len() > MAX_ENCODINGS {
            return Err(format!(
                "{} encodings (1..={MAX_ENCODINGS} expected)",
                consumable.encodings.len()
            ));
        }
        let mut ssrcs = Vec::with_capacity(consumable.encodings.len());
        for e in &consumable.encodings {
            match e.ssrc {
                Some(s) if !ssrcs.contains(&s) => ssrcs.push(s),
                _ => return Err("every encoding needs its own ssrc".into()),
            }
        }
        let (media, codec) = media_codec(&consumable, kind)?;
        let mut pt_map = [0xFFu8; 128];
        for c in consumable.codecs.iter().filter(|c| !c.is_rtx()) {
            if let Some(slot) = pt_map.get_mut(c.payload_type as usize) {
                *slot = c.payload_type;
            }
        }
        let mut ext_map = [0u8; 256];
        for e in &consumable.header_extensions {
            ext_map[e.id as usize] = e.id;
        }
        let streams = ssrcs
            .iter()
            .map(|&ssrc| ProducerStream {
                ssrc: Some(ssrc),
                rid: None,
                rtx_ssrc: None,
                stats: ReceiveStats::new(),
                nack: NackGenerator::new(NackConfig::default()),
                last_packet: None,
            })
            .collect();
        Ok(Self {
            id,
            peer,
            source: Source::Pipe(PipeSource {
                node,
                stream_ids: Vec::new(),
                scores: Vec::new(),
                path: Vec::new(),
            }),
            link_paused: false,
            piped_to: Vec::new(),
            pipe_stream_ids: Vec::new(),
            pipe_buffers: Vec::new(),
            kind,
            clock_rate: media.clock_rate,
            rtp_parameters: consumable.clone(),
            consumable,
            app_data,
            paused,
            consumers: Vec::new(),
            streams,
            pt_map,
            rtx_apt: [0xFF; 128],
            ext_map,
            video_codec: video_codec(codec),
            keyframes: KeyFrameRequestManager::new(KEYFRAME_REQUEST_THROTTLE),
            next_report: now + RTCP_REPORT_INTERVAL,
            last_scores: Vec::new(),
        })
    }

    /// Per-encoding scores (0..=10) from reception statistics; 0 for a silent encoding.
    pub fn scores(&self, now: Instant) -> Vec<u8> {
        if let Source::Pipe(p) = &self.source {
            return (0..self.streams.len())
                .map(|i| p.scores.get(i).copied().unwrap_or(0))
                .collect();
        }
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

    /// The transport of a local producer.
    pub fn transport(&self) -> Option<&TransportId> {
        match &self.source {
            Source::Transport(t) => Some(t),
            Source::Pipe(_) => None,
        }
    }

    /// The origin of a piped producer.
    pub fn pipe(&self) -> Option<&PipeSource> {
        match &self.source {
            Source::Pipe(p) => Some(p),
            Source::Transport(_) => None,
        }
    }

    /// Paused at the origin or cut off by a broken link: consumers receive nothing.
    pub fn effectively_paused(&self) -> bool {
        self.paused || self.link_paused
    }

    /// Number of encodings (streams) it receives.
    pub fn streams_len(&self) -> usize {
        self.streams.len()
    }

    /// Index of the encoding whose stream has `ssrc`.
    pub fn encoding_of_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.ssrc == Some(ssrc))
    }

    /// The SSRC of each encoding in the router-side parameters (what pipes carry).
    pub(crate) fn consumable_ssrc(&self, encoding: usize) -> Option<u32> {
        self.consumable.encodings.get(encoding).and_then(|e| e.ssrc)
    }

    /// Removes this producer's SSRCs from its transport.
    pub fn unregister(&self, t: &mut Transport) {
        t.ssrc_table.retain(|_, r| r.producer != self.id);
    }

    /// Whether the producer has more than one encoding (simulcast).
    pub fn is_simulcast(&self) -> bool {
        self.streams.len() > 1
    }

    /// Each encoding as received, in order.
    pub(in crate::worker) fn encodings_received(&mut self, now: Instant) -> Vec<EncodingReceived> {
        self.streams
            .iter_mut()
            .map(|s| EncodingReceived {
                rid: s.rid.clone(),
                ssrc: s.ssrc,
                last_packet: s.last_packet,
                bitrate_bps: s.stats.bitrate_bps(now),
            })
            .collect()
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
        // A piped producer that is not subscribed has nowhere to send a request: none is made
        // (nor throttled); the subscription asks for a keyframe when it becomes active.
        if self.pipe().is_some_and(|p| p.stream_ids.is_empty()) {
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

/// The first media codec of `params` and what it is; it must be of `kind`.
fn media_codec(
    params: &RtpParameters,
    kind: MediaKind,
) -> Result<(&crate::router::rtp_parameters::RtpCodecParameters, Codec), String> {
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
    Ok((media, codec))
}

fn video_codec(c: Codec) -> Option<VideoCodec> {
    match c {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

pub(super) fn codec_kind(c: Codec) -> Option<MediaKind> {
    match c {
        Codec::Opus => Some(MediaKind::Audio),
        Codec::Vp8 | Codec::Vp9 | Codec::H264 => Some(MediaKind::Video),
        _ => None,
    }
}
