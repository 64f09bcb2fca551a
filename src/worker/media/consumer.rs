//! Consumers: one producer delivered to one client transport, with its rewriting, layer
//! selection, retransmission buffer and send statistics.

use super::*;

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
    pub(super) simulcast: bool,
    /// Layer selection of a simulcast consumer.
    pub(super) selector: Option<SimulcastSelector>,
    /// PictureID/TL0PICIDX continuity for a simulcast VP8 consumer.
    pub(super) vp8: Option<Vp8Rewriter>,
    pub(super) payload_type: u8,
    pub(super) ssrc: u32,
    pub(super) rewriter: StreamRewriter,
    pub(super) rtx: Option<RtxEncoder>,
    pub(super) buffer: RetransmissionBuffer,
    /// NACK was negotiated: keep sent packets for retransmission.
    pub(super) nack: bool,
    pub(super) send: SendStats,
    pub(super) twcc_ext: Option<u8>,
    /// Router header-extension id -> itself when this consumer negotiated it, else 0 (erase).
    pub(super) ext_filter: Box<[u8; 256]>,
    /// The same, also erasing MID (used when our MID does not fit the packet's MID bytes).
    pub(super) ext_filter_no_mid: Box<[u8; 256]>,
    /// MID header extension id and this consumer's MID value.
    pub(super) mid: Option<(u8, Vec<u8>)>,
    pub(super) scratch: Vec<u8>,
    pub(super) next_report: Instant,
    /// (score, producer score) last notified.
    pub(super) last_score: Option<(u8, u8)>,
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
            producer_paused: producer.effectively_paused(),
            priority: 1,
            simulcast: n > 1,
            selector: (n > 1).then(|| {
                let temporal = ScalabilityMode::parse_or_default(enc.scalability_mode.as_deref())
                    .temporal_layers;
                SimulcastSelector::new(SimulcastConfig::default(), n as u8, temporal.max(1))
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

    /// Layers forwarded now, (spatial, temporal): `None` for a consumer that is not
    /// simulcast, or before its first layer.
    pub fn current_layers(&self) -> Option<(u8, u8)> {
        self.selector.as_ref()?.current_layers()
    }

    /// Encoding currently forwarded (simulcast), or 0.
    pub(super) fn current_encoding(&self) -> Option<usize> {
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
