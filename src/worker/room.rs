//! A room on this node: mediasoup's Router plus mediasoup-demo's Room logic. It owns peers,
//! producers, consumers and the producer -> consumers fan-out, and decides who consumes what.

use std::collections::HashMap;
use std::time::Instant;

use rand::rngs::StdRng;
use serde_json::{json, Value};

use super::media::{Consumer, Producer, Source};
use super::{bad_request, not_found, Note, Output, Outputs, RequestFailure, Transport};
use crate::auth::Grants;
use crate::ids::{ConsumerId, PeerId, ProducerId, RoomId, TransportId};
use crate::pipe::wire::ControlMessage;
use crate::router::ortc;
use crate::router::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};
use crate::signaling::admission::Admission;
use crate::signaling::limits::PeerLimits;
use crate::signaling::protoo::ClientRequest;
use crate::signaling::server::{SessionId, ToPeer};

/// A peer of the room.
pub struct Peer {
    /// Id from the signaling URL.
    pub id: PeerId,
    /// Its current signaling session.
    pub session: SessionId,
    /// Whether `join` was received.
    pub joined: bool,
    /// Display name.
    pub display_name: String,
    /// Device description, passed to other peers.
    pub device: Value,
    /// RTP capabilities (needed to consume).
    pub rtp_capabilities: Option<RtpCapabilities>,
    /// Its transports.
    pub transports: Vec<TransportId>,
    /// What its token allows.
    pub grants: Grants,
    /// How much it may allocate.
    pub limits: PeerLimits,
}

impl Peer {
    fn info(&self) -> Value {
        json!({"id": self.id, "displayName": self.display_name, "device": self.device})
    }
}

/// One room (Router) on this node.
pub struct Room {
    /// Room id.
    pub id: RoomId,
    /// Peers by id.
    pub peers: HashMap<PeerId, Peer>,
    /// Producers by id.
    pub producers: HashMap<ProducerId, Producer>,
    /// Consumers by id.
    pub consumers: HashMap<ConsumerId, Consumer>,
}

type Transports = HashMap<TransportId, Transport>;

fn notify(outputs: &mut Outputs, session: SessionId, method: &'static str, data: Value) {
    outputs.push_back(Output::ToPeer {
        session,
        msg: ToPeer::Notify { method, data },
    });
}

impl Room {
    /// An empty room.
    pub fn new(id: RoomId) -> Self {
        Self {
            id,
            peers: HashMap::new(),
            producers: HashMap::new(),
            consumers: HashMap::new(),
        }
    }

    /// Registers a connected (not yet joined) peer.
    pub fn add_peer(&mut self, admission: Admission, session: SessionId) {
        let id = admission.peer;
        self.peers.insert(
            id.clone(),
            Peer {
                id,
                session,
                grants: admission.grants,
                limits: admission.limits,
                joined: false,
                display_name: String::new(),
                device: Value::Null,
                rtp_capabilities: None,
                transports: Vec::new(),
            },
        );
    }

    /// Earliest media deadline (RTCP reports, NACK retries, feedback).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self
            .producers
            .values()
            .filter_map(|p| p.poll_timeout())
            .min();
        let c = self
            .consumers
            .values()
            .filter_map(|c| c.poll_timeout())
            .min();
        match (p, c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `join`: the peer becomes visible, learns the others, and starts consuming their media.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        now: Instant,
        peer_id: &PeerId,
        display_name: String,
        device: Value,
        caps: Option<RtpCapabilities>,
        rng: &mut StdRng,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) -> Result<Value, RequestFailure> {
        let peer = self
            .peers
            .get_mut(peer_id)
            .ok_or_else(|| not_found("peer", peer_id.as_str()))?;
        if peer.joined {
            return Err((409, "peer already joined".into()));
        }
        peer.joined = true;
        peer.display_name = display_name;
        peer.device = device;
        peer.rtp_capabilities = caps;
        let me = peer.info();
        let mut others = Vec::new();
        for other in self.peers.values().filter(|p| p.joined && &p.id != peer_id) {
            others.push(other.info());
            notify(outputs, other.session, "newPeer", me.clone());
        }
        let producers: Vec<ProducerId> = self
            .producers
            .values()
            .filter(|p| &p.peer != peer_id)
            .map(|p| p.id.clone())
            .collect();
        for p in producers {
            self.create_consumer(now, peer_id, &p, rng, outputs, transports);
        }
        Ok(json!({ "peers": others }))
    }

    /// `produce`: validates, creates the producer and a consumer on every other joined peer.
    #[allow(clippy::too_many_arguments)]
    pub fn produce(
        &mut self,
        now: Instant,
        peer_id: &PeerId,
        transport_id: &TransportId,
        kind: &str,
        rtp_parameters: Value,
        app_data: Value,
        router_caps: &RtpCapabilities,
        rng: &mut StdRng,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) -> Result<Value, RequestFailure> {
        let peer = self
            .peers
            .get(peer_id)
            .ok_or_else(|| not_found("peer", peer_id.as_str()))?;
        if !peer.joined {
            return Err((403, "join before producing".into()));
        }
        if !peer.grants.can_publish {
            return Err((403, "not allowed to publish (no canPublish grant)".into()));
        }
        let max = peer.limits.max_producers;
        let open: usize = peer
            .transports
            .iter()
            .filter_map(|t| transports.get(t))
            .map(|t| t.producers.len())
            .sum();
        if open >= max {
            return Err(bad_request(format!(
                "too many producers for this peer (limit {max})"
            )));
        }
        let kind = match kind {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            other => return Err(bad_request(format!("invalid kind {other:?}"))),
        };
        let params: RtpParameters = serde_json::from_value(rtp_parameters)
            .map_err(|e| bad_request(format!("invalid rtpParameters: {e}")))?;
        let transport = transports
            .get_mut(transport_id)
            .ok_or_else(|| not_found("transport", transport_id.as_str()))?;
        let producer = Producer::new(
            now,
            ProducerId::random(),
            peer_id.clone(),
            transport,
            kind,
            params,
            app_data,
            router_caps,
            rng,
        )
        .map_err(bad_request)?;
        let id = producer.id.clone();
        transport.producers.insert(id.clone());
        self.producers.insert(id.clone(), producer);
        let others: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.joined && &p.id != peer_id)
            .map(|p| p.id.clone())
            .collect();
        for other in others {
            self.create_consumer(now, &other, &id, rng, outputs, transports);
        }
        Ok(json!({ "id": id }))
    }

    /// Creates a paused consumer of `producer_id` for `peer_id` on its consuming transport and
    /// sends the `newConsumer` request. Silently skipped when the peer cannot consume it.
    pub(crate) fn create_consumer(
        &mut self,
        now: Instant,
        peer_id: &PeerId,
        producer_id: &ProducerId,
        rng: &mut StdRng,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        let Some(peer) = self.peers.get(peer_id) else {
            return;
        };
        let Some(caps) = &peer.rtp_capabilities else {
            return;
        };
        if !peer.grants.can_subscribe {
            return;
        }
        let open: usize = peer
            .transports
            .iter()
            .filter_map(|t| transports.get(t))
            .map(|t| t.consumers.len())
            .sum();
        if open >= peer.limits.max_consumers {
            tracing::debug!(peer = %peer_id, producer = %producer_id, limit = peer.limits.max_consumers, "consumer limit reached; producer not offered");
            return;
        }
        let Some(producer) = self.producers.get_mut(producer_id) else {
            return;
        };
        let Some(transport_id) = peer
            .transports
            .iter()
            .find(|t| transports.get(*t).is_some_and(|t| t.consuming))
            .cloned()
        else {
            return;
        };
        match ortc::can_consume(&producer.consumable, caps) {
            Ok(true) => {}
            _ => return,
        }
        let params = match ortc::get_consumer_rtp_parameters(
            &producer.consumable,
            caps,
            false,
            &mut || rand::Rng::random::<u32>(rng),
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(peer = %peer_id, producer = %producer_id, error = %e, "cannot derive consumer parameters");
                return;
            }
        };
        let Some(transport) = transports.get_mut(&transport_id) else {
            return;
        };
        let consumer = Consumer::new(
            now,
            ConsumerId::random(),
            peer_id.clone(),
            transport,
            producer,
            params,
        );
        let id = consumer.id.clone();
        let data = json!({
            "peerId": producer.peer,
            "producerId": producer.id,
            "id": id,
            "kind": producer.kind.as_str(),
            "rtpParameters": consumer.rtp_parameters,
            "type": consumer.kind_label(),
            "appData": producer.app_data,
            "producerPaused": producer.effectively_paused(),
        });
        if let Some(pipe) = producer.pipe() {
            outputs.note(Note::PipeConsumerAdded {
                node: pipe.node.clone(),
                producer: producer.id.clone(),
            });
        }
        producer.consumers.push(id.clone());
        transport.consumers.insert(id.clone());
        self.consumers.insert(id.clone(), consumer);
        outputs.push_back(Output::ToPeer {
            session: peer.session,
            msg: ToPeer::NewConsumer { consumer: id, data },
        });
    }

    /// The peer accepted a consumer: it starts flowing (and asks for a keyframe).
    pub fn resume_consumer(
        &mut self,
        now: Instant,
        id: &ConsumerId,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        let Some(c) = self.consumers.get_mut(id) else {
            return;
        };
        c.paused = false;
        if let Some(p) = self.producers.get_mut(&c.producer) {
            c.on_resumed(now, p, outputs, transports);
        }
    }

    /// Closes a producer and all its consumers (telling their peers).
    pub fn close_producer(
        &mut self,
        id: &ProducerId,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        let Some(p) = self.producers.remove(id) else {
            return;
        };
        if let Some(t) = p.transport().and_then(|t| transports.get_mut(t)) {
            t.producers.remove(id);
            p.unregister(t);
        }
        match &p.source {
            Source::Transport(_) => outputs.note(Note::LocalProducerClosed {
                room: self.id.clone(),
                peer: p.peer.clone(),
                producer: id.clone(),
                piped_to: p.piped_to.clone(),
                stream_ids: p.pipe_stream_ids.clone(),
            }),
            Source::Pipe(pipe) => outputs.note(Note::PipeProducerClosed {
                node: pipe.node.clone(),
                producer: id.clone(),
                piped_to: p.piped_to.clone(),
                stream_ids: p.pipe_stream_ids.clone(),
            }),
        }
        for c in p.consumers {
            self.close_consumer(&c, true, outputs, transports);
        }
    }

    /// Closes a consumer; `notify_peer` sends `consumerClosed` (not when the peer itself asked).
    pub fn close_consumer(
        &mut self,
        id: &ConsumerId,
        notify_peer: bool,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        let Some(c) = self.consumers.remove(id) else {
            return;
        };
        if let Some(t) = transports.get_mut(&c.transport) {
            t.consumers.remove(id);
            c.unregister(t);
        }
        if let Some(p) = self.producers.get_mut(&c.producer) {
            p.consumers.retain(|x| x != id);
            if let Some(pipe) = p.pipe() {
                outputs.note(Note::PipeConsumerRemoved {
                    node: pipe.node.clone(),
                    producer: p.id.clone(),
                });
            }
        }
        if notify_peer {
            if let Some(peer) = self.peers.get(&c.peer) {
                notify(
                    outputs,
                    peer.session,
                    "consumerClosed",
                    json!({ "consumerId": id }),
                );
            }
        }
    }

    /// A transport finished DTLS: consumers on it may start sending.
    pub fn on_transport_connected(
        &mut self,
        now: Instant,
        id: &TransportId,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        let ids: Vec<ConsumerId> = self
            .consumers
            .values()
            .filter(|c| &c.transport == id)
            .map(|c| c.id.clone())
            .collect();
        for cid in ids {
            if let Some(c) = self.consumers.get_mut(&cid) {
                if c.is_active() {
                    if let Some(p) = self.producers.get_mut(&c.producer) {
                        c.on_resumed(now, p, outputs, transports);
                    }
                }
            }
        }
    }

    /// Requests that only need the room.
    pub fn handle_peer_request(
        &mut self,
        now: Instant,
        peer_id: &PeerId,
        req: ClientRequest,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) -> Result<Value, RequestFailure> {
        use ClientRequest as R;
        let ok = || Ok(json!({}));
        match req {
            R::CloseProducer { producer_id } => {
                let id = self.own_producer(peer_id, &producer_id)?;
                self.close_producer(&id, outputs, transports);
                ok()
            }
            R::PauseProducer { producer_id } => {
                let id = self.own_producer(peer_id, &producer_id)?;
                self.set_producer_pause(now, &id, Some(true), None, outputs, transports);
                ok()
            }
            R::ResumeProducer { producer_id } => {
                let id = self.own_producer(peer_id, &producer_id)?;
                self.set_producer_pause(now, &id, Some(false), None, outputs, transports);
                ok()
            }
            R::PauseConsumer { consumer_id } => {
                let c = self.own_consumer(peer_id, &consumer_id)?;
                c.paused = true;
                ok()
            }
            R::ResumeConsumer { consumer_id } => {
                let id = self.own_consumer(peer_id, &consumer_id)?.id.clone();
                self.resume_consumer(now, &id, outputs, transports);
                ok()
            }
            R::SetConsumerPreferredLayers {
                consumer_id,
                spatial_layer,
                temporal_layer,
            } => {
                let c = self.own_consumer(peer_id, &consumer_id)?;
                c.set_preferred_layers(now, spatial_layer, temporal_layer);
                ok()
            }
            R::SetConsumerPriority {
                consumer_id,
                priority,
            } => {
                if priority == 0 {
                    return Err(bad_request("priority must be 1..=255"));
                }
                let c = self.own_consumer(peer_id, &consumer_id)?;
                c.priority = priority;
                ok()
            }
            R::RequestConsumerKeyFrame { consumer_id } => {
                let c = self.own_consumer(peer_id, &consumer_id)?;
                let pid = c.producer.clone();
                let encoding = c.forwarded_encoding();
                if let Some(p) = self.producers.get_mut(&pid) {
                    let reqs = p.request_keyframe(now, encoding);
                    super::media::send_keyframe_requests(p, reqs, outputs, transports);
                }
                ok()
            }
            R::ChangeDisplayName { display_name } => {
                let peer = self
                    .peers
                    .get_mut(peer_id)
                    .ok_or_else(|| not_found("peer", peer_id.as_str()))?;
                let old = std::mem::replace(&mut peer.display_name, display_name.clone());
                let session = peer.session;
                if old != display_name {
                    outputs.note(Note::LocalPeerRenamed {
                        room: self.id.clone(),
                        peer: peer_id.clone(),
                        display_name: display_name.clone(),
                    });
                }
                for other in self
                    .peers
                    .values()
                    .filter(|p| p.joined && p.session != session)
                {
                    notify(
                        outputs,
                        other.session,
                        "peerDisplayNameChanged",
                        json!({"peerId": peer_id, "displayName": display_name, "oldDisplayName": old}),
                    );
                }
                ok()
            }
            R::GetTransportStats { transport_id } => {
                let t = transports
                    .get(transport_id.as_str())
                    .filter(|t| &t.peer == peer_id)
                    .ok_or_else(|| not_found("transport", &transport_id))?;
                Ok(super::media::transport_stats(t))
            }
            R::GetProducerStats { producer_id } => {
                let id = self.own_producer(peer_id, &producer_id)?;
                Ok(self
                    .producers
                    .get(&id)
                    .map(|p| p.stats())
                    .unwrap_or(Value::Null))
            }
            R::GetConsumerStats { consumer_id } => {
                let c = self.own_consumer(peer_id, &consumer_id)?;
                Ok(c.stats())
            }
            other => Err((500, format!("request {other:?} not routed to the room"))),
        }
    }

    /// Sets a producer's own pause (`paused`, its owner's or its origin's) and/or, for a piped
    /// producer, its link pause. Consumers hear `consumerPaused` / `consumerResumed` when the
    /// combination changes; a local producer's own pause is also sent to the nodes it is piped
    /// to.
    pub(crate) fn set_producer_pause(
        &mut self,
        now: Instant,
        id: &ProducerId,
        paused: Option<bool>,
        link_paused: Option<bool>,
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        let Some(p) = self.producers.get_mut(id) else {
            return;
        };
        let before = p.effectively_paused();
        if let Some(v) = paused {
            if p.paused != v && p.pipe().is_none() {
                outputs.note(Note::LocalProducerPaused {
                    room: self.id.clone(),
                    peer: p.peer.clone(),
                    producer: p.id.clone(),
                    paused: v,
                });
                for node in &p.piped_to {
                    let producer_id = p.id.clone();
                    let msg = if v {
                        ControlMessage::ProducerPaused { producer_id }
                    } else {
                        ControlMessage::ProducerResumed { producer_id }
                    };
                    outputs.push_back(Output::PipeControl {
                        node: node.clone(),
                        msg,
                    });
                }
            }
            p.paused = v;
        }
        if let Some(v) = link_paused {
            p.link_paused = v;
        }
        let paused = p.effectively_paused();
        if paused == before {
            return;
        }
        let method = if paused {
            "consumerPaused"
        } else {
            "consumerResumed"
        };
        for cid in p.consumers.clone() {
            let Some(c) = self.consumers.get_mut(&cid) else {
                continue;
            };
            c.producer_paused = paused;
            if let Some(peer) = self.peers.get(&c.peer) {
                notify(outputs, peer.session, method, json!({ "consumerId": cid }));
            }
            if !paused && c.is_active() {
                c.on_resumed(now, p, outputs, transports);
            }
        }
    }

    fn own_producer(&self, peer_id: &PeerId, id: &str) -> Result<ProducerId, RequestFailure> {
        let id = ProducerId::from(id);
        match self.producers.get(&id) {
            Some(p) if &p.peer == peer_id => Ok(id),
            _ => Err(not_found("producer", id.as_str())),
        }
    }

    fn own_consumer(
        &mut self,
        peer_id: &PeerId,
        id: &str,
    ) -> Result<&mut Consumer, RequestFailure> {
        match self.consumers.get_mut(id) {
            Some(c) if &c.peer == peer_id => Ok(c),
            _ => Err(not_found("consumer", id)),
        }
    }

    /// Runs media timers of producers and consumers.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        ntp_origin: (Instant, u64),
        outputs: &mut Outputs,
        transports: &mut Transports,
    ) {
        super::media::room_timeout(self, now, ntp_origin, outputs, transports);
    }
}
