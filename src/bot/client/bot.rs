//! [`Bot`]: one mediasoup-demo peer. It joins as mediasoup-client does (capabilities,
//! transports, `join`, `produce`), answers `newConsumer` requests by routing the offered SSRCs
//! to its receiving transport's statistics, and reports notifications to its owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ice::IceParameters;
use super::params::{
    bot_rtp_capabilities, producer_rtp_parameters, simulcast_rtp_parameters, ConsumerStream,
    TransportInfo, MAX_SIMULCAST_LAYERS,
};
use super::protoo::{ServerMessage, SignalingClient};
use super::transport::{BotTransport, SourceConfig, StreamStats};
use super::BotError;
use crate::bot::media::{AudioConfig, VideoConfig};
use crate::edge::dtls::DtlsIdentity;
use crate::router::rtp_parameters::{MediaKind, RtpCapabilities};

/// Events queued towards a [`Bot`]'s owner before further ones are dropped.
const BOT_EVENT_QUEUE: usize = 1024;

/// How a [`Bot`] joins.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// `ws://host:port` of the node's signaling.
    pub server: String,
    /// Room id.
    pub room: String,
    /// Peer id.
    pub peer_id: String,
    /// Display name sent in `join`.
    pub display_name: String,
    /// Produce Opus audio.
    pub audio: bool,
    /// Produce VP8 video.
    pub video: bool,
    /// Create a receiving transport and consume the room.
    pub consume: bool,
    /// Use the TCP candidates.
    pub tcp: bool,
    /// Seed of ICE ufrags and media randomness.
    pub seed: u64,
    /// Room token (`pipemesh token`), sent as the `token` query parameter.
    pub token: Option<String>,
    /// Send the video as this many VP8 simulcast encodings (1..=3, lowest first, rids `r0`..;
    /// see [`super::SIMULCAST_LAYERS`]) instead of one plain stream.
    pub simulcast: Option<u8>,
    /// Overrides the plain (non-simulcast) VP8 source's rate; `None` keeps [`VideoConfig`]'s
    /// defaults.
    pub video_rate: Option<VideoRate>,
    /// Offer only this SRTP profile in DTLS (`None`: GCM first, then AES-CM, as the node).
    pub srtp_profile: Option<crate::srtp::Profile>,
}

/// Rate settings of a bot's VP8 source (see [`VideoConfig`]): `fps` frames of
/// `bitrate_bps / 8 / fps` bytes, cut into RTP payloads of at most `max_payload` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoRate {
    /// Frames per second, 1..=240.
    pub fps: u32,
    /// Bitrate of interframes, bit/s.
    pub bitrate_bps: u32,
    /// Largest RTP payload, VP8 descriptor included.
    pub max_payload: usize,
    /// Periodic keyframe interval; zero sends keyframes only first and on request.
    pub keyframe_interval: Duration,
}

impl BotOptions {
    /// Audio+video producer and consumer over UDP.
    pub fn new(server: &str, room: &str, peer_id: &str) -> Self {
        Self {
            server: server.to_owned(),
            room: room.to_owned(),
            peer_id: peer_id.to_owned(),
            display_name: format!("bot {peer_id}"),
            audio: true,
            video: true,
            consume: true,
            tcp: false,
            seed: rand::rng().random(),
            token: None,
            simulcast: None,
            video_rate: None,
            srtp_profile: None,
        }
    }
}

/// What a [`Bot`] reports to its owner.
#[derive(Debug, Clone)]
pub enum BotEvent {
    /// A consumer was accepted and its SSRC routed to statistics.
    NewConsumer(ConsumerStream),
    /// A notification from the node (`newPeer`, `peerClosed`, `consumerClosed`, ...).
    Notification {
        /// Method.
        method: String,
        /// Data.
        data: Value,
    },
    /// The signaling connection closed.
    Closed,
}

/// A producer the bot created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Producer id from the node.
    pub id: String,
    /// Kind.
    pub kind: MediaKind,
    /// SSRC sent (of the lowest encoding when simulcast).
    pub ssrc: u32,
    /// SSRCs of every encoding, lowest first (one unless simulcast).
    pub ssrcs: Vec<u32>,
}

/// One peer: signaling, a sending and/or a receiving transport, its producers and consumers.
/// `newConsumer` requests are answered automatically.
pub struct Bot {
    peer_id: String,
    peers_at_join: Vec<String>,
    signaling: SignalingClient,
    send: Option<Arc<BotTransport>>,
    recv: Option<Arc<BotTransport>>,
    router_caps: RtpCapabilities,
    producers: Vec<ProducerInfo>,
    consumers: Arc<Mutex<HashMap<String, ConsumerStream>>>,
    events: mpsc::Receiver<BotEvent>,
    handler: JoinHandle<()>,
    tcp: bool,
    video_rate: Option<VideoRate>,
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

fn transport_request(tcp: bool, producing: bool) -> Value {
    json!({"forceTcp": tcp, "producing": producing, "consuming": !producing, "sctpCapabilities": null})
}

impl Bot {
    /// Joins a room as mediasoup-demo does: capabilities, transports, `join`, then `produce`.
    /// Returns once the producers exist; media starts when each transport's DTLS completes.
    pub async fn join(opts: BotOptions) -> Result<Bot, BotError> {
        if let Some(n) = opts.simulcast {
            if !(1..=MAX_SIMULCAST_LAYERS).contains(&n) {
                return Err(BotError::InvalidArgument(format!(
                    "simulcast {n}: 1..={MAX_SIMULCAST_LAYERS} encodings"
                )));
            }
        }
        let (signaling, mut server_rx) = SignalingClient::connect_with_token(
            &opts.server,
            &opts.room,
            &opts.peer_id,
            opts.token.as_deref(),
        )
        .await?;
        let caps = signaling
            .request("getRouterRtpCapabilities", json!({}))
            .await?;
        let router_caps: RtpCapabilities =
            serde_json::from_value(caps).map_err(|e| BotError::Protocol {
                what: "getRouterRtpCapabilities response",
                reason: e.to_string(),
            })?;
        let identity = DtlsIdentity::generate()?;
        let mut seed = opts.seed;
        let mut open = |producing: bool| {
            seed = seed.wrapping_add(1);
            let s = seed;
            let signaling = signaling.clone();
            let identity = identity.clone();
            async move {
                let v = signaling
                    .request(
                        "createWebRtcTransport",
                        transport_request(opts.tcp, producing),
                    )
                    .await?;
                let info = TransportInfo::from_json(&v)?;
                signaling
                    .request(
                        "connectWebRtcTransport",
                        json!({"transportId": info.id, "dtlsParameters": {
                            "role": "client", "fingerprints": identity.fingerprints()}}),
                    )
                    .await?;
                BotTransport::open(&info, opts.tcp, &identity, s, opts.srtp_profile).await
            }
        };
        let produce = opts.audio || opts.video;
        let send = if produce {
            Some(Arc::new(open(true).await?))
        } else {
            None
        };
        let recv = if opts.consume {
            Some(Arc::new(open(false).await?))
        } else {
            None
        };

        let consumers = Arc::new(Mutex::new(HashMap::new()));
        let (ev_tx, events) = mpsc::channel(BOT_EVENT_QUEUE);
        let handler = {
            let signaling = signaling.clone();
            let recv = recv.clone();
            let consumers = consumers.clone();
            tokio::spawn(async move {
                while let Some(m) = server_rx.recv().await {
                    let ev = match m {
                        ServerMessage::Request { id, method, data } => {
                            let (result, ev) =
                                answer_request(&method, &data, recv.as_deref(), &consumers).await;
                            let _ = signaling.respond(id, result).await;
                            match ev {
                                Some(ev) => ev,
                                None => continue,
                            }
                        }
                        ServerMessage::Notification { method, data } => {
                            if method == "consumerClosed" {
                                forget_consumer(&data, &consumers);
                            }
                            BotEvent::Notification { method, data }
                        }
                        ServerMessage::Closed => BotEvent::Closed,
                    };
                    // The owner may not read events (load runs): drop rather than block.
                    let _ = ev_tx.try_send(ev);
                }
            })
        };

        let joined = signaling
            .request(
                "join",
                json!({
                    "displayName": opts.display_name,
                    "device": {"flag": "pipemesh-bot", "name": "pipemesh-bot",
                               "version": env!("CARGO_PKG_VERSION")},
                    "rtpCapabilities": bot_rtp_capabilities(&router_caps),
                    "sctpCapabilities": null,
                }),
            )
            .await?;

        let peers_at_join = joined
            .get("peers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut bot = Bot {
            peer_id: opts.peer_id.clone(),
            peers_at_join,
            signaling,
            send,
            recv,
            router_caps,
            producers: Vec::new(),
            consumers,
            events,
            handler,
            tcp: opts.tcp,
            video_rate: opts.video_rate,
        };
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0xc0ffee);
        let cname: String = format!("bot-{}", rng.random::<u32>());
        if opts.audio {
            bot.produce(MediaKind::Audio, rng.random(), &cname).await?;
        }
        if opts.video {
            match opts.simulcast {
                Some(n) => {
                    let mut ssrcs: Vec<u32> = Vec::with_capacity(n.into());
                    while ssrcs.len() < usize::from(n) {
                        let s = rng.random();
                        if !ssrcs.contains(&s) {
                            ssrcs.push(s);
                        }
                    }
                    bot.produce_simulcast(&ssrcs, &cname).await?;
                }
                None => bot.produce(MediaKind::Video, rng.random(), &cname).await?,
            }
        }
        Ok(bot)
    }

    /// Sends `produce` and returns the producer id.
    async fn request_produce(
        &self,
        send: &BotTransport,
        kind: MediaKind,
        rtp_parameters: &crate::router::rtp_parameters::RtpParameters,
    ) -> Result<String, BotError> {
        let v = self
            .signaling
            .request(
                "produce",
                json!({"transportId": send.id(), "kind": kind.as_str(),
                       "rtpParameters": rtp_parameters, "appData": {}}),
            )
            .await?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| BotError::Protocol {
                what: "produce response",
                reason: "no id".into(),
            })
    }

    /// Produces VP8 with one encoding per SSRC, lowest first, each from its own source.
    async fn produce_simulcast(&mut self, ssrcs: &[u32], cname: &str) -> Result<(), BotError> {
        let send = self
            .send
            .clone()
            .ok_or_else(|| BotError::InvalidArgument("no sending transport".into()))?;
        let mid = self.producers.len().to_string();
        let p = simulcast_rtp_parameters(&self.router_caps, &mid, ssrcs, cname)?;
        let id = self
            .request_produce(&send, MediaKind::Video, &p.rtp_parameters)
            .await?;
        let pt = p.rtp_parameters.codecs[0].payload_type; // built with exactly one codec
        for e in p.encodings {
            let mut c = VideoConfig::new(e.ssrc);
            c.payload_type = pt;
            c.extensions = e.extensions;
            c.width = e.layer.width;
            c.height = e.layer.height;
            c.fps = e.layer.fps;
            c.bitrate_bps = e.layer.bitrate_bps;
            send.add_source(SourceConfig::Video(c)).await?;
        }
        self.producers.push(ProducerInfo {
            id,
            kind: MediaKind::Video,
            ssrc: ssrcs[0],
            ssrcs: ssrcs.to_vec(),
        });
        Ok(())
    }

    async fn produce(&mut self, kind: MediaKind, ssrc: u32, cname: &str) -> Result<(), BotError> {
        let send = self
            .send
            .as_ref()
            .ok_or_else(|| BotError::InvalidArgument("no sending transport".into()))?;
        let mid = self.producers.len().to_string();
        let p = producer_rtp_parameters(&self.router_caps, kind, &mid, ssrc, cname)?;
        let id = self.request_produce(send, kind, &p.rtp_parameters).await?;
        let pt = p.rtp_parameters.codecs[0].payload_type; // built with exactly one codec
        let cfg = match kind {
            MediaKind::Audio => {
                let mut c = AudioConfig::new(ssrc);
                c.payload_type = pt;
                c.extensions = p.extensions;
                SourceConfig::Audio(c)
            }
            MediaKind::Video => {
                let mut c = VideoConfig::new(ssrc);
                c.payload_type = pt;
                c.extensions = p.extensions;
                if let Some(r) = self.video_rate {
                    c.fps = r.fps;
                    c.bitrate_bps = r.bitrate_bps;
                    c.max_payload = r.max_payload;
                    c.keyframe_interval = r.keyframe_interval;
                }
                SourceConfig::Video(c)
            }
        };
        send.add_source(cfg).await?;
        self.producers.push(ProducerInfo {
            id,
            kind,
            ssrc,
            ssrcs: vec![ssrc],
        });
        Ok(())
    }

    /// This bot's peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Ids of the peers the `join` response listed.
    pub fn peers_at_join(&self) -> &[String] {
        &self.peers_at_join
    }

    /// Whether the bot uses TCP.
    pub fn is_tcp(&self) -> bool {
        self.tcp
    }

    /// The signaling client (for raw requests).
    pub fn signaling(&self) -> &SignalingClient {
        &self.signaling
    }

    /// The router's capabilities.
    pub fn router_capabilities(&self) -> &RtpCapabilities {
        &self.router_caps
    }

    /// The sending transport, if producing.
    pub fn send_transport(&self) -> Option<Arc<BotTransport>> {
        self.send.clone()
    }

    /// The receiving transport, if consuming.
    pub fn recv_transport(&self) -> Option<Arc<BotTransport>> {
        self.recv.clone()
    }

    /// The producer of `kind`, if any.
    pub fn producer(&self, kind: MediaKind) -> Option<&ProducerInfo> {
        self.producers.iter().find(|p| p.kind == kind)
    }

    /// Current consumers by id.
    pub fn consumers(&self) -> Vec<ConsumerStream> {
        self.consumers
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The next event, `None` once the handler stopped.
    pub async fn next_event(&mut self) -> Option<BotEvent> {
        self.events.recv().await
    }

    /// Waits for the first event matching `pred` (earlier ones are discarded).
    pub async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&BotEvent) -> bool,
    ) -> Result<BotEvent, BotError> {
        let fut = async {
            while let Some(ev) = self.events.recv().await {
                if pred(&ev) {
                    return Some(ev);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err(BotError::SignalingClosed),
            Err(_) => Err(BotError::WaitTimeout(what.to_owned())),
        }
    }

    /// Waits for a notification `method` whose data satisfies `pred`.
    pub async fn wait_notification(
        &mut self,
        method: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, BotError> {
        let ev = self
            .wait_event(method, timeout, |e| {
                matches!(e, BotEvent::Notification { method: m, data } if m == method && pred(data))
            })
            .await?;
        match ev {
            BotEvent::Notification { data, .. } => Ok(data),
            _ => Err(BotError::WaitTimeout(method.to_owned())),
        }
    }

    /// Waits until `n` consumers exist (answered `newConsumer` requests).
    pub async fn wait_consumers(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumerStream>, BotError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let c = self.consumers();
            if c.len() >= n {
                return Ok(c);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.wait_event("newConsumer", left, |e| {
                matches!(e, BotEvent::NewConsumer(_))
            })
            .await?;
        }
    }

    async fn producer_request(&self, method: &str, kind: MediaKind) -> Result<Value, BotError> {
        let p = self
            .producer(kind)
            .ok_or_else(|| BotError::InvalidArgument(format!("no {kind} producer")))?;
        self.signaling
            .request(method, json!({"producerId": p.id}))
            .await
    }

    /// `pauseProducer` (the source keeps sending; the node stops forwarding, as with a muted
    /// browser track).
    pub async fn pause_producer(&self, kind: MediaKind) -> Result<(), BotError> {
        self.producer_request("pauseProducer", kind)
            .await
            .map(|_| ())
    }

    /// `resumeProducer`.
    pub async fn resume_producer(&self, kind: MediaKind) -> Result<(), BotError> {
        self.producer_request("resumeProducer", kind)
            .await
            .map(|_| ())
    }

    /// `getProducerStats`: per encoding (`ssrc`, `rid`, `packetCount`, `score`, ...).
    pub async fn producer_stats(&self, kind: MediaKind) -> Result<Value, BotError> {
        self.producer_request("getProducerStats", kind).await
    }

    /// `setConsumerPreferredLayers` of a consumer (simulcast: the spatial layer is the
    /// encoding index, lowest 0; `temporal` `None` for all).
    pub async fn set_consumer_preferred_layers(
        &self,
        consumer_id: &str,
        spatial: u8,
        temporal: Option<u8>,
    ) -> Result<(), BotError> {
        let mut data = json!({"consumerId": consumer_id, "spatialLayer": spatial});
        if let Some(t) = temporal {
            data["temporalLayer"] = t.into();
        }
        self.signaling
            .request("setConsumerPreferredLayers", data)
            .await
            .map(|_| ())
    }

    /// `closeProducer`.
    pub async fn close_producer(&mut self, kind: MediaKind) -> Result<(), BotError> {
        self.producer_request("closeProducer", kind).await?;
        self.producers.retain(|p| p.kind != kind);
        Ok(())
    }

    /// `restartIce` on the sending (or receiving) transport and switches checks to the new
    /// credentials. Returns them.
    pub async fn restart_ice(&self, sending: bool) -> Result<IceParameters, BotError> {
        let t = if sending {
            self.send.as_deref()
        } else {
            self.recv.as_deref()
        }
        .ok_or_else(|| BotError::InvalidArgument("no such transport".into()))?;
        let v = self
            .signaling
            .request("restartIce", json!({"transportId": t.id()}))
            .await?;
        // mediasoup-demo returns the iceParameters object itself.
        let p = v.get("iceParameters").unwrap_or(&v);
        let params: IceParameters =
            serde_json::from_value(p.clone()).map_err(|e| BotError::Protocol {
                what: "restartIce response",
                reason: e.to_string(),
            })?;
        t.restart_ice(params.clone()).await?;
        Ok(params)
    }

    /// Receive statistics of every consumer.
    pub async fn stats(&self) -> Result<Vec<StreamStats>, BotError> {
        match &self.recv {
            Some(r) => r.stats().await,
            None => Ok(Vec::new()),
        }
    }

    /// Closes the signaling connection (the node then closes the peer) and stops the
    /// transports.
    pub async fn close(self) {
        self.signaling.close().await;
    }
}

async fn answer_request(
    method: &str,
    data: &Value,
    recv: Option<&BotTransport>,
    consumers: &Mutex<HashMap<String, ConsumerStream>>,
) -> (Result<Value, (u16, String)>, Option<BotEvent>) {
    if method != "newConsumer" {
        return (Err((405, format!("bot does not handle {method}"))), None);
    }
    let Some(recv) = recv else {
        return (Err((400, "bot does not consume".into())), None);
    };
    let stream = match ConsumerStream::from_request(data) {
        Ok(s) => s,
        Err(e) => return (Err((400, e.to_string())), None),
    };
    if recv.add_receiver(stream.clone()).await.is_err() {
        return (Err((500, "receiving transport closed".into())), None);
    }
    if let Ok(mut c) = consumers.lock() {
        c.insert(stream.id.clone(), stream.clone());
    }
    (Ok(json!({})), Some(BotEvent::NewConsumer(stream)))
}

/// Forgets a closed consumer; its statistics stay with the transport for the final summary.
fn forget_consumer(data: &Value, consumers: &Mutex<HashMap<String, ConsumerStream>>) {
    if let (Some(id), Ok(mut c)) = (
        data.get("consumerId").and_then(Value::as_str),
        consumers.lock(),
    ) {
        c.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str) -> ConsumerStream {
        ConsumerStream {
            id: id.into(),
            producer_id: "p".into(),
            peer_id: "alice".into(),
            kind: MediaKind::Audio,
            ssrc: 1,
            rtx_ssrc: None,
            codec: crate::bot::stats::Codec::Opus,
            clock_rate: 48_000,
            producer_paused: false,
        }
    }

    #[test]
    fn transport_request_is_what_mediasoup_demo_sends() {
        assert_eq!(
            transport_request(true, true),
            json!({"forceTcp": true, "producing": true, "consuming": false,
                   "sctpCapabilities": null})
        );
        assert_eq!(transport_request(false, false)["consuming"], true);
    }

    #[tokio::test]
    async fn only_new_consumer_is_answered_and_only_when_consuming() {
        let consumers = Mutex::new(HashMap::new());
        let (r, ev) = answer_request("mystery", &json!({}), None, &consumers).await;
        assert_eq!(r.unwrap_err().0, 405);
        assert!(ev.is_none());
        let (r, ev) = answer_request("newConsumer", &json!({}), None, &consumers).await;
        assert_eq!(r.unwrap_err().0, 400);
        assert!(ev.is_none());
        assert!(consumers.lock().unwrap().is_empty());
    }

    #[test]
    fn consumer_closed_forgets_only_that_consumer() {
        let consumers = Mutex::new(HashMap::from([
            ("c1".to_owned(), stream("c1")),
            ("c2".to_owned(), stream("c2")),
        ]));
        forget_consumer(&json!({"consumerId": "c1"}), &consumers);
        forget_consumer(&json!({"consumerId": "nope"}), &consumers);
        forget_consumer(&json!({}), &consumers);
        let left: Vec<String> = consumers.lock().unwrap().keys().cloned().collect();
        assert_eq!(left, vec!["c2".to_owned()]);
    }
}
