//! Pipes in the worker: the origin side (a remote node subscribes to a local producer: its
//! packets go into the pipe, once per node, and far NACKs and keyframe requests come back) and
//! the far side (a remote producer appears in the room directory: a pipe producer with the same
//! id stands for it, local peers consume it, and [`Subscriptions`] decide when its media is
//! piped here). A node also *relays*: a Subscribe for a pipe producer here is served like one
//! for a local producer (each packet piped on once, NACKs answered from this node's copy,
//! keyframe requests and the subscription itself passed upstream), and every answer carries
//! the path the stream took, so a subscription that would close a loop is refused.
//!
//! Everything here is still sans-IO: pipe events are inputs (`handle_pipe_*`), what goes on
//! the links is [`Output::PipeControl`] and [`Output::PipeDatagram`].
//!
//! Failure handling: when a link drops, the far side's consumers are paused (their peers hear
//! `consumerPaused`), subscriptions are re-established when it returns (consumers resume, a
//! keyframe is requested); consumers waiting longer than the grace period are closed
//! (`consumerClosed`), and a node down for the grace period is dropped from the directory (its
//! peers leave: `peerClosed`). When it comes back, its peers and producers are announced again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::media::{forward, send_keyframe_requests, StreamRef};
use super::media::{Producer, Source};
use super::{Note, Output, Worker};
use crate::discovery::directory::DirectoryEvent;
use crate::discovery::routing::{parent_in_view, RoutingMode};
use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::metrics::{Direction, Kind, PipeFeedback};
use crate::pipe::link::{
    CloseReason, RequestId, SubAction, SubError, SubState, SubscriptionConfig, Subscriptions,
};
use crate::pipe::wire::{
    parse_datagram, write_datagram, ControlMessage, DatagramKind, PeerInfo, ProducerInfo,
};
use crate::router::rtcp_core::{parse_compound, RtcpItem};
use crate::router::rtp_parameters::MediaKind;
use crate::router::rtx::{RetransmissionBuffer, RetransmissionConfig};
use crate::router::seq::RtpView;

/// Pipe state of a worker. Empty (and never consulted) on a single node.
#[derive(Default)]
pub(super) struct Pipes {
    /// Subscription settings (grace period from the node configuration).
    sub_config: SubscriptionConfig,
    /// Far side: subscriptions to each remote node's producers.
    links: HashMap<NodeId, Subscriptions>,
    /// Nodes whose link is up.
    up: HashSet<NodeId>,
    /// Nodes whose link is down, and since when (dropped from the directory after grace).
    down_since: HashMap<NodeId, Instant>,
    /// Far side: (origin, stream id) -> the pipe producer encoding its packets feed.
    inbound: HashMap<(NodeId, u64), (RoomId, ProducerId, usize)>,
    /// Far side: pipe producer -> its room and origin node.
    remote: HashMap<ProducerId, (RoomId, NodeId)>,
    /// Origin side: stream id -> the producer encoding it carries (a local producer, or a
    /// pipe producer this node relays).
    outbound: HashMap<u64, (RoomId, ProducerId, usize)>,
    /// Relay: pipe producer -> the downstream nodes subscribed to it here; each holds the
    /// upstream subscription as a consumer would.
    relayed: HashMap<ProducerId, HashSet<NodeId>>,
    /// Relay: Subscribes waiting for the upstream subscription's answer (node, request id).
    pending: HashMap<ProducerId, Vec<(NodeId, u64)>>,
    /// Far side: the origin of each pipe producer (the directory's node), which may differ
    /// from the node it is piped from.
    origins: HashMap<ProducerId, NodeId>,
    /// The path each node's last answer gave for a producer (before that node).
    paths: HashMap<(NodeId, ProducerId), Vec<NodeId>>,
    /// How pipe producers choose the node they are piped from.
    routing: RoutingMode,
    next_stream_id: u64,
    /// Earliest pipe timer, as of the last change.
    deadline: Option<Instant>,
    /// Upper simulcast layers withheld from congested links (origin and relay side), and
    /// those other nodes withhold from this one (far side).
    pub(super) shed: super::shed::ShedState,
}

impl Pipes {
    /// Pipe state with this grace period for consumers without media.
    pub(super) fn new(grace: Duration) -> Self {
        let sub_config = SubscriptionConfig {
            // Zero is the only invalid grace; the defaults of the rest are valid.
            grace_period: grace.max(Duration::from_millis(1)),
            ..SubscriptionConfig::default()
        };
        debug_assert!(sub_config.validate().is_ok());
        Self {
            sub_config,
            ..Self::default()
        }
    }

    /// Earliest pipe timer (cached; refreshed after every change).
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn compute_deadline(&self) -> Option<Instant> {
        let subs = self.links.values().filter_map(|s| s.poll_timeout()).min();
        let gone = self
            .down_since
            .values()
            .map(|t| *t + self.sub_config.grace_period)
            .min();
        match (subs, gone) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the link to `node` is up.
    pub(super) fn is_up(&self, node: &NodeId) -> bool {
        self.up.contains(node)
    }

    /// Pipe links up.
    pub(super) fn links_up(&self) -> usize {
        self.up.len()
    }

    /// The node a pipe producer's subscription goes to (its origin today).
    pub(super) fn subscribed_via(&self, producer: &ProducerId) -> Option<&NodeId> {
        self.remote.get(producer).map(|(_, node)| node)
    }

    fn link(&mut self, now: Instant, node: &NodeId) -> &mut Subscriptions {
        let up = self.up.contains(node);
        let config = self.sub_config.clone();
        self.links.entry(node.clone()).or_insert_with(|| {
            let mut s = Subscriptions::new(config).expect("validated by Pipes::new");
            if up {
                s.on_link_up(now);
            }
            s
        })
    }
}

/// The way `p`'s stream came to this node, ending with the node it is piped from: empty for a
/// local producer, and for a pipe producer not subscribed yet.
pub(super) fn upstream_path(p: &Producer) -> Vec<NodeId> {
    match &p.source {
        Source::Pipe(pipe) => pipe.path.clone(),
        Source::Transport(_) => Vec::new(),
    }
}

/// A local peer as the directory announces it.
pub(super) fn peer_info(id: &PeerId, display_name: &str, device: &Value) -> PeerInfo {
    PeerInfo {
        peer_id: id.clone(),
        display_name: display_name.to_owned(),
        device: device.to_string(),
        producers: Vec::new(),
    }
}

/// A local producer as the directory announces it.
pub(super) fn producer_info(p: &Producer) -> ProducerInfo {
    ProducerInfo {
        producer_id: p.id.clone(),
        kind: p.kind,
        paused: p.paused,
        rtp_parameters: p.consumable.clone(),
        app_data: p.app_data.to_string(),
    }
}

/// The `join` / `newPeer` description of a remote peer.
pub(super) fn remote_peer_json(p: &PeerInfo) -> Value {
    let device: Value = serde_json::from_str(&p.device).unwrap_or(Value::Null);
    json!({"id": p.peer_id, "displayName": p.display_name, "device": device})
}

impl Worker {
    /// How remote producers are piped here: from their origin ([`RoutingMode::Mesh`]) or from
    /// their parent in the per-region tree ([`RoutingMode::Tree`], which needs a cluster
    /// directory; without one, or without a route, a producer is piped from its origin).
    pub fn set_routing(&mut self, now: Instant, mode: RoutingMode) {
        self.pipes.routing = mode;
        self.reroute(now);
    }

    /// Turns this worker into a cluster member: `directory` tells it about remote peers and
    /// producers, consumers of remote producers wait at most `grace` for a broken link.
    pub fn enable_pipes(
        &mut self,
        directory: Box<dyn crate::discovery::directory::RoomDirectory + Send>,
        grace: Duration,
    ) {
        self.directory = directory;
        self.pipes = Pipes::new(grace);
    }

    /// The pipe link to `node` is up (handshake done).
    pub fn handle_pipe_link_up(&mut self, now: Instant, node: &NodeId) {
        tracing::info!(%node, "pipe link up");
        self.pipes.up.insert(node.clone());
        self.pipes.down_since.remove(node);
        self.directory.link_up(node);
        if let Some(s) = self.pipes.links.get_mut(node) {
            s.on_link_up(now);
        }
        self.reoffer_remote_producers(now, node);
        self.settle(now);
        self.reroute_if_tree(now);
    }

    /// The pipe link to `node` went down.
    pub fn handle_pipe_link_down(&mut self, now: Instant, node: &NodeId) {
        tracing::info!(%node, "pipe link down");
        if self.pipes.up.remove(node) {
            self.pipes.down_since.insert(node.clone(), now);
        }
        self.directory.link_down(node);
        self.pipes.shed.forget(node);
        if self.pipes.shed.limited_by(node) > 0 {
            self.far_shed(now, node, 0);
        }
        if let Some(s) = self.pipes.links.get_mut(node) {
            s.on_link_down(now);
        }
        // Relay: the far node's subscriptions no longer hold the upstream ones.
        self.release_relayed(now, node, None);
        // Origin side: the far node's subscriptions died with the connection.
        for room in self.rooms.values_mut() {
            for p in room.producers.values_mut() {
                if p.piped_to.iter().any(|n| n == node) {
                    p.piped_to.retain(|n| n != node);
                    if p.piped_to.is_empty() {
                        p.pipe_buffers.clear();
                    }
                }
            }
        }
        // Far side: nothing arrives on the old streams any more.
        self.pipes.inbound.retain(|(n, _), _| n != node);
        for (pid, (room, origin)) in &self.pipes.remote {
            if origin != node {
                continue;
            }
            if let Some(Source::Pipe(pipe)) = self
                .rooms
                .get_mut(room)
                .and_then(|r| r.producers.get_mut(pid))
                .map(|p| &mut p.source)
            {
                pipe.stream_ids.clear();
                pipe.path.clear();
            }
        }
        self.settle(now);
        self.reroute_if_tree(now);
    }

    /// The directory's view of the cluster as JSON (`null` when the directory has none, as
    /// with static peers).
    pub fn cluster_view_json(&self) -> Value {
        self.directory
            .cluster_view()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(Value::Null)
    }

    /// Refreshes this node's load figures in its registry record (written only when changed)
    /// and the wall clock (`unix_ms`) the directory stamps on new entries.
    pub fn publish_load(&mut self, now: Instant, unix_ms: u64) {
        self.directory.set_wall_clock(unix_ms);
        let mut load = crate::discovery::keys::NodeLoad {
            rooms: self.rooms.len() as u64,
            pipe_links: self.pipes.up.len() as u64,
            ..Default::default()
        };
        for room in self.rooms.values() {
            load.peers += room.peers.len() as u64;
            load.producers += room
                .producers
                .values()
                .filter(|p| matches!(p.source, Source::Transport(_)))
                .count() as u64;
            load.consumers += room.consumers.len() as u64;
        }
        self.directory.set_local_load(load);
        self.settle(now);
    }

    /// Drains this node (an operator's request, or SIGTERM): its registry record says
    /// `draining`, so placement sends new clients elsewhere; sessions go on. `false` serves
    /// again.
    pub fn set_draining(&mut self, now: Instant, draining: bool, deadline_ms: Option<u64>) {
        self.drain(draining, deadline_ms);
        self.settle(now);
    }

    fn drain(&mut self, draining: bool, deadline_ms: Option<u64>) {
        use crate::discovery::keys::NodeState;
        tracing::info!(draining, ?deadline_ms, "node state changed");
        self.directory.set_local_state(if draining {
            NodeState::Draining
        } else {
            NodeState::Serving
        });
        self.outputs.push_back(Output::Drain {
            draining,
            deadline_ms,
        });
    }

    /// Signaling sessions open on this node.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Piped producers per remote node, for operators: (node, producers piped to it (local or
    /// relayed), producers piped here from it). Producers, not encodings: a simulcast producer counts once.
    /// "Here" means subscribed and answered (its streams feed a pipe producer); requested or
    /// lingering subscriptions do not count. Sorted by node.
    pub fn pipe_stream_counts(&self) -> Vec<(NodeId, usize, usize)> {
        let mut counts: std::collections::BTreeMap<NodeId, (usize, usize)> = Default::default();
        for p in self.rooms.values().flat_map(|r| r.producers.values()) {
            for node in &p.piped_to {
                counts.entry(node.clone()).or_default().0 += 1;
            }
        }
        let inbound: HashSet<(&NodeId, &ProducerId)> = self
            .pipes
            .inbound
            .iter()
            .map(|((node, _), (_, pid, _))| (node, pid))
            .collect();
        for (node, _) in inbound {
            counts.entry(node.clone()).or_default().1 += 1;
        }
        counts
            .into_iter()
            .map(|(node, (out, inn))| (node, out, inn))
            .collect()
    }

    /// What the cluster registry reports (a listing or changes under the cluster prefix).
    pub fn handle_registry_update(
        &mut self,
        now: Instant,
        update: crate::discovery::registry::RegistryUpdate,
    ) {
        self.directory.apply_registry(update);
        self.settle(now);
        self.reroute_if_tree(now);
    }

    /// A control message from `node`.
    pub fn handle_pipe_control(&mut self, now: Instant, node: &NodeId, msg: ControlMessage) {
        use ControlMessage as M;
        if !self.pipes.up.contains(node) {
            // The glue forwards only messages of links it reported up; anything else is stale.
            self.refused("control message from a node whose link is not up");
            return;
        }
        self.relay_downstream(node, &msg);
        match msg {
            M::RoomWatch { .. }
            | M::RoomUnwatch { .. }
            | M::RoomPeers { .. }
            | M::PeerJoined { .. }
            | M::PeerLeft { .. }
            | M::ProducerAdded { .. }
            | M::ProducerRemoved { .. } => self.directory.apply_remote(node, &msg),
            M::Subscribe {
                request_id,
                room_id,
                producer_id,
            } => self.origin_subscribe(now, node, request_id, &room_id, &producer_id),
            M::Unsubscribe { producer_id } => {
                if let Some(p) = self.served_producer_mut(&producer_id) {
                    p.piped_to.retain(|n| n != node);
                    if p.piped_to.is_empty() {
                        p.pipe_buffers.clear();
                    }
                }
                self.release_relayed(now, node, Some(&producer_id));
                // A parent change held back by this node's subscription may go ahead now.
                self.settle(now);
                self.reroute_if_tree(now);
            }
            M::KeyFrameRequest {
                producer_id,
                encoding,
            } => {
                self.counters
                    .media
                    .pipe_feedback(PipeFeedback::KeyFrameRequest, Direction::In, 1);
                let Some(room) = self.rooms.values_mut().find(|r| {
                    r.producers
                        .get(&producer_id)
                        .is_some_and(|p| p.piped_to.contains(node))
                }) else {
                    self.refused("KeyFrameRequest for a producer not piped there");
                    return;
                };
                if let Some(p) = room.producers.get_mut(&producer_id) {
                    let reqs = p.request_keyframe(now, encoding.map(usize::from));
                    send_keyframe_requests(p, reqs, &mut self.outputs, &mut self.transports);
                }
            }
            M::Subscribed {
                request_id,
                producer_id,
                stream_ids,
                paused,
                scores,
                path,
                ..
            } => self.far_subscribed(
                now,
                node,
                request_id,
                &producer_id,
                stream_ids,
                paused,
                scores,
                path,
            ),
            M::SubscribeFailed {
                request_id,
                producer_id,
                reason,
            } => {
                tracing::info!(%node, producer = %producer_id, %reason, "subscription refused by origin");
                if let Some(s) = self.pipes.links.get_mut(node) {
                    let _ = s.on_subscribe_failed(now, RequestId(request_id), reason);
                }
            }
            M::ProducerPaused { producer_id } => {
                self.remote_pause(now, node, &producer_id, Some(true), None)
            }
            M::ProducerResumed { producer_id } => {
                self.remote_pause(now, node, &producer_id, Some(false), None)
            }
            M::ProducerClosed { producer_id } => {
                if let Some(room) = self.remote_room(&producer_id, node) {
                    self.close_pipe_producer(&room, &producer_id);
                }
            }
            M::ProducerScore {
                producer_id,
                scores,
            } => {
                if let Some(p) = self.remote_producer_mut(&producer_id, node) {
                    let n = p.streams_len();
                    if let Source::Pipe(pipe) = &mut p.source {
                        pipe.scores = scores.into_iter().take(n).map(|s| s.min(10)).collect();
                    }
                }
            }
            M::ShedLayers { layers } => self.far_shed(now, node, layers),
            M::PathChanged { producer_id, path } => self.far_path_changed(node, &producer_id, path),
            M::Ping { nonce } => self.outputs.push_back(Output::PipeControl {
                node: node.clone(),
                msg: M::Pong { nonce },
            }),
            M::Pong { .. }
            | M::Hello(_)
            | M::HelloAck { .. }
            | M::Refuse { .. }
            | M::Goodbye { .. } => {}
        }
        self.settle(now);
    }

    /// A datagram from `node` (pipe header included).
    pub fn handle_pipe_datagram(&mut self, now: Instant, node: &NodeId, data: &[u8]) {
        self.counters
            .media
            .traffic
            .observe(Kind::Pipe, Direction::In, data.len());
        let dg = match parse_datagram(data) {
            Ok(d) => d,
            Err(_) => {
                self.counters.pipe_malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match dg.kind {
            DatagramKind::Rtp => {
                let Worker {
                    rooms,
                    transports,
                    outputs,
                    counters,
                    scratch,
                    pipes,
                    ..
                } = self;
                let pipes: &Pipes = pipes;
                let key = (node.clone(), dg.stream_id);
                let Some((room_id, producer, encoding)) = pipes.inbound.get(&key) else {
                    counters.pipe_unknown_stream.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if RtpView::parse(dg.packet).is_err() {
                    counters.pipe_malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                counters.pipe_rtp_received.fetch_add(1, Ordering::Relaxed);
                let sref = StreamRef {
                    producer: producer.clone(),
                    encoding: *encoding,
                    rtx: false,
                };
                let Some(room) = rooms.get_mut(room_id) else {
                    return;
                };
                // Relay: `forward` pipes it on once to every node subscribed here (but the
                // layers shed toward it).
                scratch.clear();
                scratch.extend_from_slice(dg.packet);
                let shed = pipes.shed.levels();
                forward(
                    room, transports, outputs, counters, shed, now, &sref, scratch,
                );
            }
            DatagramKind::RtcpFromFar => self.origin_rtcp(now, node, dg.stream_id, dg.packet),
            // Sender reports are not piped (consumers report from their own send statistics);
            // probes only count.
            DatagramKind::RtcpFromOrigin | DatagramKind::Probe => {}
        }
    }

    /// Far feedback about a piped stream: NACKs are answered from the origin's copy of what it
    /// piped; other RTCP is ignored (the far node reports to its own consumers' clients).
    fn origin_rtcp(&mut self, now: Instant, node: &NodeId, stream_id: u64, packet: &[u8]) {
        let Some((room_id, pid, encoding)) = self.pipes.outbound.get(&stream_id).cloned() else {
            self.counters
                .pipe_unknown_stream
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(items) = parse_compound(packet) else {
            self.counters.pipe_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(p) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.producers.get_mut(&pid))
            .filter(|p| p.piped_to.contains(node))
        else {
            return;
        };
        // Packets of a layer shed toward the node never crossed: not resent (see `shed`).
        let shed = self
            .pipes
            .shed
            .nack_withheld(now, node, encoding, p.pipe_stream_ids.len());
        let Some(buf) = p.pipe_buffers.get_mut(encoding) else {
            return;
        };
        let mut resend = Vec::new();
        let mut out = Vec::with_capacity(1500);
        for item in items {
            let RtcpItem::Nack { items, .. } = item else {
                continue;
            };
            self.counters
                .media
                .pipe_feedback(PipeFeedback::Nack, Direction::In, 1);
            if shed {
                continue;
            }
            buf.handle_nack(now, items.pairs(), &mut resend);
            for seq in resend.iter().copied() {
                let Some(pkt) = buf.get(now, seq) else {
                    continue;
                };
                out.clear();
                if write_datagram(DatagramKind::Rtp, stream_id, pkt, &mut out).is_ok() {
                    self.counters
                        .pipe_rtp_retransmitted
                        .fetch_add(1, Ordering::Relaxed);
                    self.outputs.push_back(Output::PipeDatagram {
                        node: node.clone(),
                        data: bytes::Bytes::copy_from_slice(&out),
                    });
                }
            }
        }
    }

    /// A node subscribes to a producer here: it is piped there from now on (every encoding,
    /// one copy), and told the stream ids, parameters, pause state, scores and the path the
    /// stream took here. A local producer is answered at once; a pipe producer is relayed: the
    /// requester holds this node's own subscription to it (as a local consumer would), and is
    /// answered once that subscription is (its path known). A requester already on the path
    /// is refused: piping to it would close a loop.
    fn origin_subscribe(
        &mut self,
        now: Instant,
        node: &NodeId,
        request_id: u64,
        room_id: &RoomId,
        producer_id: &ProducerId,
    ) {
        let producer = self
            .rooms
            .get_mut(room_id)
            .and_then(|r| r.producers.get_mut(producer_id));
        // Relay: a pipe producer is served from its own subscription, held for the requester;
        // until that one is answered (its path known), the request waits.
        let relayed_from = producer
            .as_ref()
            .and_then(|p| p.pipe())
            .map(|s| s.node.clone());
        let path = producer
            .as_ref()
            .map(|p| upstream_path(p))
            .unwrap_or_default();
        if let Some(upstream) = relayed_from.filter(|_| !path.contains(node)) {
            let subscribed = !path.is_empty();
            if &upstream != node
                && self
                    .pipes
                    .relayed
                    .entry(producer_id.clone())
                    .or_default()
                    .insert(node.clone())
            {
                let link = self.pipes.link(now, &upstream);
                if let Err(e) = link.add_consumer(now, producer_id) {
                    tracing::warn!(%node, producer = %producer_id, error = %e, "cannot relay");
                }
            }
            if !subscribed {
                let waiting = self.pipes.pending.entry(producer_id.clone()).or_default();
                waiting.retain(|(n, _)| n != node);
                waiting.push((node.clone(), request_id));
                return;
            }
        }
        let producer = self
            .rooms
            .get_mut(room_id)
            .and_then(|r| r.producers.get_mut(producer_id));
        let upstream = producer
            .as_ref()
            .map(|p| upstream_path(p))
            .unwrap_or_default();
        if upstream.contains(node) {
            // The requester is already on the stream's way here: serving it would close a
            // loop.
            self.refused("Subscribe that would close a loop");
            self.outputs.push_back(Output::PipeControl {
                node: node.clone(),
                msg: ControlMessage::SubscribeFailed {
                    request_id,
                    producer_id: producer_id.clone(),
                    reason: format!("{node} is already on the path of {producer_id}"),
                },
            });
            return;
        }
        let Some(p) = producer else {
            self.refused("Subscribe to an unknown producer");
            self.outputs.push_back(Output::PipeControl {
                node: node.clone(),
                msg: ControlMessage::SubscribeFailed {
                    request_id,
                    producer_id: producer_id.clone(),
                    reason: format!("no producer {producer_id} in room {room_id} on this node"),
                },
            });
            return;
        };
        if p.pipe_stream_ids.is_empty() {
            for i in 0..p.streams_len() {
                self.pipes.next_stream_id += 1;
                let sid = self.pipes.next_stream_id;
                p.pipe_stream_ids.push(sid);
                self.pipes
                    .outbound
                    .insert(sid, (room_id.clone(), producer_id.clone(), i));
            }
        }
        if p.pipe_buffers.is_empty() {
            let capacity = if p.kind == MediaKind::Video { 512 } else { 64 };
            p.pipe_buffers = (0..p.streams_len())
                .map(|_| {
                    RetransmissionBuffer::new(RetransmissionConfig {
                        capacity,
                        ..RetransmissionConfig::default()
                    })
                })
                .collect();
        }
        if !p.piped_to.contains(node) {
            p.piped_to.push(node.clone());
        }
        tracing::debug!(%node, producer = %producer_id, "producer piped");
        self.outputs.push_back(Output::PipeControl {
            node: node.clone(),
            msg: ControlMessage::Subscribed {
                request_id,
                producer_id: producer_id.clone(),
                stream_ids: p.pipe_stream_ids.clone(),
                kind: p.kind,
                rtp_parameters: p.consumable.clone(),
                paused: p.paused,
                scores: p.scores(now),
                path: upstream,
            },
        });
    }

    /// The origin answered our Subscribe: the pipe producer's streams are now fed.
    #[allow(clippy::too_many_arguments)]
    fn far_subscribed(
        &mut self,
        now: Instant,
        node: &NodeId,
        request_id: u64,
        producer_id: &ProducerId,
        stream_ids: Vec<u64>,
        paused: bool,
        scores: Vec<u8>,
        path: Vec<NodeId>,
    ) {
        let request = RequestId(request_id);
        let room_id = self.remote_room(producer_id, node);
        let encodings = room_id
            .as_ref()
            .and_then(|r| self.rooms.get(r))
            .and_then(|r| r.producers.get(producer_id))
            .map(|p| p.streams_len());
        let ids32: Option<Vec<u32>> = stream_ids.iter().map(|&s| u32::try_from(s).ok()).collect();
        let mut distinct = stream_ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let Some(subs) = self.pipes.links.get_mut(node) else {
            return;
        };
        let (Some(room_id), Some(n)) = (room_id, encodings) else {
            // Unknown here (closed meanwhile): the answer is stale; Unsubscribe follows.
            let _ = subs.on_subscribed(now, request, producer_id, Vec::new());
            return;
        };
        // The stream's way here: the sender's path, then the sender. A sender already on its
        // own path announces a loop.
        let looped = path.contains(node);
        let mut path = path;
        path.push(node.clone());
        let ids32 = match ids32 {
            Some(ids) if !looped && ids.len() == n && distinct.len() == n => ids,
            ids32 => {
                // A looped or broken answer: the subscription fails (its consumers close) and
                // the sender is told to stop sending what nobody here can use.
                self.counters
                    .pipe_control_refused
                    .fetch_add(1, Ordering::Relaxed);
                let reason = if looped && ids32.is_some() {
                    format!("path {path:?} repeats {node}")
                } else {
                    format!(
                        "origin sent stream ids {stream_ids:?} for {n} encodings (distinct, below 2^32 expected)"
                    )
                };
                tracing::warn!(%node, producer = %producer_id, %reason, "Subscribed refused");
                if subs.on_subscribe_failed(now, request, reason).is_ok() {
                    self.outputs.push_back(Output::PipeControl {
                        node: node.clone(),
                        msg: ControlMessage::Unsubscribe {
                            producer_id: producer_id.clone(),
                        },
                    });
                }
                return;
            }
        };
        if let Err(e) = subs.on_subscribed(now, request, producer_id, ids32) {
            tracing::debug!(%node, producer = %producer_id, error = %e, "Subscribed ignored");
            return;
        }
        for (i, sid) in stream_ids.iter().enumerate() {
            self.pipes.inbound.insert(
                (node.clone(), *sid),
                (room_id.clone(), producer_id.clone(), i),
            );
        }
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if let Some(p) = room.producers.get_mut(producer_id) {
            if let Source::Pipe(pipe) = &mut p.source {
                pipe.stream_ids = stream_ids;
                pipe.scores = scores.into_iter().take(n).map(|s| s.min(10)).collect();
                self.pipes
                    .paths
                    .insert((node.clone(), producer_id.clone()), path.clone());
                // A relay whose stream now comes another way tells the nodes it pipes to.
                if !pipe.path.is_empty() && pipe.path != path {
                    for to in &p.piped_to {
                        self.outputs.push_back(Output::PipeControl {
                            node: to.clone(),
                            msg: ControlMessage::PathChanged {
                                producer_id: producer_id.clone(),
                                path: path.clone(),
                            },
                        });
                    }
                }
                pipe.path = path;
            }
            // Consumers resumed before the streams were set up could not ask for a keyframe
            // (nothing is sent, nothing throttled, while unsubscribed): ask now, so video
            // starts at once.
            if p.kind == MediaKind::Video && !p.consumers.is_empty() {
                let reqs = p.request_keyframe(now, None);
                send_keyframe_requests(p, reqs, &mut self.outputs, &mut self.transports);
            }
        }
        room.set_producer_pause(
            now,
            producer_id,
            Some(paused),
            None,
            &mut self.outputs,
            &mut self.transports,
        );
        // Relay: the path is known now; answer the nodes that asked meanwhile.
        for (to, req) in self.pipes.pending.remove(producer_id).unwrap_or_default() {
            self.origin_subscribe(now, &to, req, &room_id, producer_id);
        }
    }

    /// Sets a pipe producer's origin pause and/or link pause (see
    /// [`super::room::Room::set_producer_pause`]).
    fn remote_pause(
        &mut self,
        now: Instant,
        node: &NodeId,
        producer_id: &ProducerId,
        paused: Option<bool>,
        link_paused: Option<bool>,
    ) {
        let Some(room_id) = self.remote_room(producer_id, node) else {
            return;
        };
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.set_producer_pause(
                now,
                producer_id,
                paused,
                link_paused,
                &mut self.outputs,
                &mut self.transports,
            );
        }
    }

    /// The room of a pipe producer whose origin is `node`.
    fn remote_room(&self, producer_id: &ProducerId, node: &NodeId) -> Option<RoomId> {
        match self.pipes.remote.get(producer_id) {
            Some((room, origin)) if origin == node => Some(room.clone()),
            _ => None,
        }
    }

    /// The pipe producer of `producer_id` whose origin is `node`.
    fn remote_producer_mut(
        &mut self,
        producer_id: &ProducerId,
        node: &NodeId,
    ) -> Option<&mut Producer> {
        let room = self.remote_room(producer_id, node)?;
        self.rooms.get_mut(&room)?.producers.get_mut(producer_id)
    }

    /// The node to pipe `producer` (of `origin`, in `room`) from: its parent in the routing
    /// plan of the directory's view, else the origin.
    fn upstream_for(&self, room: &RoomId, producer: &ProducerId, origin: &NodeId) -> NodeId {
        self.directory
            .cluster_view()
            .and_then(|v| parent_in_view(&v, self.pipes.routing, room, producer, origin))
            .unwrap_or_else(|| origin.clone())
    }

    /// Moves every pipe producer whose parent changed (a relay left, drained or died, a
    /// better one came, the mode changed) to its new parent: the old subscription is
    /// released (it lingers, then ends) and the same consumers hold a new one. A parent that
    /// pipes the producer from here is not taken (views disagree for a moment; the loop is
    /// avoided until they agree).
    pub(super) fn reroute(&mut self, now: Instant) {
        let view = self.directory.cluster_view();
        let mut moves = Vec::new();
        for (pid, (room, via)) in &self.pipes.remote {
            let origin = self.pipes.origins.get(pid).unwrap_or(via);
            let new = view
                .as_ref()
                .and_then(|v| parent_in_view(v, self.pipes.routing, room, pid, origin))
                .unwrap_or_else(|| origin.clone());
            let downstream = self
                .pipes
                .relayed
                .get(pid)
                .is_some_and(|s| s.contains(&new));
            if &new != via && !downstream {
                moves.push((pid.clone(), room.clone(), via.clone(), new));
            }
        }
        for (pid, room_id, old, new) in moves {
            tracing::info!(producer = %pid, from = %old, to = %new, "re-routing a piped producer");
            let Some(p) = self
                .rooms
                .get_mut(&room_id)
                .and_then(|r| r.producers.get_mut(&pid))
            else {
                continue;
            };
            let held = p.consumers.len() + self.pipes.relayed.get(&pid).map_or(0, |s| s.len());
            if let Source::Pipe(pipe) = &mut p.source {
                pipe.node = new.clone();
                pipe.stream_ids.clear();
                pipe.path.clear();
            }
            self.pipes
                .inbound
                .retain(|(n, _), (_, q, _)| !(n == &old && *q == pid));
            self.pipes
                .remote
                .insert(pid.clone(), (room_id.clone(), new.clone()));
            // The old subscription ends now (no linger: the new parent takes over), so a node
            // waiting to take this one's place upstream is not held back.
            if let Some(s) = self.pipes.links.get_mut(&old) {
                let subscribed = s.state(pid.as_str()).is_some();
                for _ in 0..held {
                    let _ = s.remove_consumer(now, &pid);
                }
                s.on_producer_closed(now, &pid);
                if subscribed {
                    self.outputs.push_back(Output::PipeControl {
                        node: old.clone(),
                        msg: ControlMessage::Unsubscribe {
                            producer_id: pid.clone(),
                        },
                    });
                }
            }
            let link = self.pipes.link(now, &new);
            for _ in 0..held {
                if let Err(e) = link.add_consumer(now, &pid) {
                    tracing::warn!(node = %new, producer = %pid, error = %e, "cannot re-route");
                }
            }
            if let Some(SubState::Active { stream_ids }) = link.state(pid.as_str()).cloned() {
                self.restore_streams(&new, &pid, &stream_ids);
            }
            // Consumers paused for the old parent's broken link are the new subscription's
            // now, which starts unpaused (it pauses them again if its link breaks).
            if held > 0 {
                self.remote_pause(now, &new, &pid, None, Some(false));
            }
        }
        self.settle(now);
    }

    /// [`Self::reroute`] after what can change a parent: the registry (nodes, their state,
    /// room hosts), a link going up or down, a node given up on. Not on every settle: the
    /// directory's view is built for it.
    fn reroute_if_tree(&mut self, now: Instant) {
        if self.pipes.routing == RoutingMode::Tree && !self.pipes.remote.is_empty() {
            self.reroute(now);
        }
    }

    /// Any producer this node can pipe on: a local one, or a pipe producer it relays.
    fn served_producer_mut(&mut self, producer_id: &ProducerId) -> Option<&mut Producer> {
        self.rooms
            .values_mut()
            .find_map(|r| r.producers.get_mut(producer_id))
    }

    /// Relay: `node` no longer takes `producer` (every producer with `None`): it stops holding
    /// the upstream subscription, and its waiting Subscribes are dropped.
    fn release_relayed(&mut self, now: Instant, node: &NodeId, producer: Option<&ProducerId>) {
        let ids: Vec<ProducerId> = match producer {
            Some(p) => vec![p.clone()],
            None => self.pipes.relayed.keys().cloned().collect(),
        };
        for id in ids {
            if let Some(w) = self.pipes.pending.get_mut(&id) {
                w.retain(|(n, _)| n != node);
                if w.is_empty() {
                    self.pipes.pending.remove(&id);
                }
            }
            let Some(set) = self.pipes.relayed.get_mut(&id) else {
                continue;
            };
            if !set.remove(node) {
                continue;
            }
            if set.is_empty() {
                self.pipes.relayed.remove(&id);
            }
            let upstream = self.pipes.remote.get(&id).map(|(_, n)| n.clone());
            if let Some(s) = upstream.and_then(|n| self.pipes.links.get_mut(&n)) {
                match s.remove_consumer(now, &id) {
                    Ok(()) | Err(SubError::NoConsumer(_)) => {}
                    Err(e) => tracing::debug!(%node, producer = %id, error = %e, "relay release"),
                }
            }
        }
    }

    /// `node`, our upstream for `producer_id`, now gets it along `path`: record the new way
    /// here and tell the nodes we pipe it to. A path through one of those (or through the
    /// sender itself) would be a loop: refused, the old path stays, and the routing views,
    /// which are loop-free once they agree, move the subscriptions.
    fn far_path_changed(&mut self, node: &NodeId, producer_id: &ProducerId, path: Vec<NodeId>) {
        let Some(p) = self.remote_producer_mut(producer_id, node) else {
            return;
        };
        if path.contains(node) || path.iter().any(|n| p.piped_to.contains(n)) {
            tracing::warn!(%node, producer = %producer_id, ?path, "PathChanged would close a loop; ignored");
            self.refused("PathChanged that would close a loop");
            return;
        }
        let mut full = path;
        full.push(node.clone());
        let Source::Pipe(pipe) = &mut p.source else {
            return;
        };
        if pipe.path == full || pipe.stream_ids.is_empty() {
            // Unchanged, or not subscribed (yet): the Subscribed answer carries the path.
            return;
        }
        pipe.path = full.clone();
        let downstream = p.piped_to.clone();
        for to in downstream {
            self.outputs.push_back(Output::PipeControl {
                node: to,
                msg: ControlMessage::PathChanged {
                    producer_id: producer_id.clone(),
                    path: full.clone(),
                },
            });
        }
        self.pipes
            .paths
            .insert((node.clone(), producer_id.clone()), full);
    }

    /// Relay: what the upstream `node` says about a producer this node relays goes on to the
    /// nodes it is piped to (pause state, scores, its end).
    fn relay_downstream(&mut self, node: &NodeId, msg: &ControlMessage) {
        use ControlMessage as M;
        let producer_id = match msg {
            M::ProducerPaused { producer_id }
            | M::ProducerResumed { producer_id }
            | M::ProducerScore { producer_id, .. } => producer_id,
            _ => return,
        };
        let Some(room) = self.remote_room(producer_id, node) else {
            return;
        };
        let Some(p) = self
            .rooms
            .get(&room)
            .and_then(|r| r.producers.get(producer_id))
        else {
            return;
        };
        for to in &p.piped_to {
            self.outputs.push_back(Output::PipeControl {
                node: to.clone(),
                msg: msg.clone(),
            });
        }
    }

    fn refused(&self, what: &str) {
        tracing::debug!(what, "pipe control refused");
        self.counters
            .pipe_control_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Closes a pipe producer and its consumers (their peers hear `consumerClosed`).
    fn close_pipe_producer(&mut self, room_id: &RoomId, producer_id: &ProducerId) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.close_producer(producer_id, &mut self.outputs, &mut self.transports);
        }
    }

    /// Offers every pipe producer of `node` to the joined local peers that do not consume it
    /// (their consumers were closed after the grace period, and the node is back).
    fn reoffer_remote_producers(&mut self, now: Instant, node: &NodeId) {
        let Worker {
            rooms,
            pipes,
            rng,
            outputs,
            transports,
            ..
        } = self;
        for (pid, (room_id, origin)) in &pipes.remote {
            if origin != node {
                continue;
            }
            let Some(room) = rooms.get_mut(room_id) else {
                continue;
            };
            let Some(p) = room.producers.get(pid) else {
                continue;
            };
            let consuming: HashSet<&PeerId> = p
                .consumers
                .iter()
                .filter_map(|c| room.consumers.get(c).map(|c| &c.peer))
                .collect();
            let missing: Vec<PeerId> = room
                .peers
                .values()
                .filter(|peer| peer.joined && !consuming.contains(&peer.id))
                .map(|peer| peer.id.clone())
                .collect();
            for peer in missing {
                room.create_consumer(now, &peer, pid, rng, outputs, transports);
            }
        }
    }

    /// Applies everything the last input set in motion: room notes, directory events and
    /// messages, subscription actions, until none is left.
    pub(super) fn settle(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(n) = self.outputs.notes.pop_front() {
                self.apply_note(now, n);
                progressed = true;
            }
            while let Some(ev) = self.directory.poll_event() {
                self.on_directory_event(now, ev);
                progressed = true;
            }
            while let Some((node, msg)) = self.directory.poll_send() {
                self.outputs.push_back(Output::PipeControl { node, msg });
            }
            while let Some(op) = self.directory.poll_registry_op() {
                self.outputs.push_back(Output::Registry(op));
            }
            let nodes: Vec<NodeId> = self.pipes.links.keys().cloned().collect();
            for node in nodes {
                while let Some(a) = self
                    .pipes
                    .links
                    .get_mut(&node)
                    .and_then(|s| s.poll_action())
                {
                    self.on_sub_action(now, &node, a);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        self.pipes.deadline = self.pipes.compute_deadline();
        self.publish_gauges();
    }

    /// Pipe timers: subscription retries, lingers and grace; nodes down past the grace.
    pub(super) fn pipe_timeout(&mut self, now: Instant) {
        if self.pipes.deadline.is_none_or(|d| d > now) {
            return;
        }
        let grace = self.pipes.sub_config.grace_period;
        let gone: Vec<NodeId> = self
            .pipes
            .down_since
            .iter()
            .filter(|(_, since)| **since + grace <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for node in gone {
            tracing::warn!(%node, "pipe link down past the grace period; dropping the node's peers");
            self.pipes.down_since.remove(&node);
            self.directory.node_gone(&node);
        }
        // Producers of gone nodes close first, so their subscriptions end quietly.
        self.settle(now);
        self.reroute_if_tree(now);
        for s in self.pipes.links.values_mut() {
            s.handle_timeout(now);
        }
        self.settle(now);
    }

    fn apply_note(&mut self, now: Instant, note: Note) {
        match note {
            Note::LocalProducerClosed {
                room,
                peer,
                producer,
                piped_to,
                stream_ids,
            } => {
                self.directory
                    .local_producer_removed(&room, &peer, &producer);
                for node in piped_to {
                    self.outputs.push_back(Output::PipeControl {
                        node,
                        msg: ControlMessage::ProducerClosed {
                            producer_id: producer.clone(),
                        },
                    });
                }
                for sid in stream_ids {
                    self.pipes.outbound.remove(&sid);
                }
            }
            Note::LocalPeerRenamed {
                room,
                peer,
                display_name,
            } => self
                .directory
                .local_peer_renamed(&room, &peer, &display_name),
            Note::LocalProducerPaused {
                room,
                peer,
                producer,
                paused,
            } => self
                .directory
                .local_producer_paused(&room, &peer, &producer, paused),
            Note::PipeProducerClosed {
                node,
                producer,
                piped_to,
                stream_ids,
            } => {
                // Relay: the nodes it went on to hear of its end; waiting Subscribes fail.
                for to in piped_to {
                    self.outputs.push_back(Output::PipeControl {
                        node: to,
                        msg: ControlMessage::ProducerClosed {
                            producer_id: producer.clone(),
                        },
                    });
                }
                for (to, request_id) in self.pipes.pending.remove(&producer).unwrap_or_default() {
                    self.outputs.push_back(Output::PipeControl {
                        node: to,
                        msg: ControlMessage::SubscribeFailed {
                            request_id,
                            producer_id: producer.clone(),
                            reason: format!("{producer} closed upstream"),
                        },
                    });
                }
                self.pipes.relayed.remove(&producer);
                self.pipes.origins.remove(&producer);
                self.pipes.paths.retain(|(_, p), _| *p != producer);
                for sid in stream_ids {
                    self.pipes.outbound.remove(&sid);
                }
                self.pipes.remote.remove(&producer);
                self.pipes.inbound.retain(|_, (_, p, _)| *p != producer);
                if let Some(s) = self.pipes.links.get_mut(&node) {
                    s.on_producer_closed(now, &producer);
                }
            }
            Note::PipeConsumerAdded { node, producer } => {
                let link = self.pipes.link(now, &node);
                if let Err(e) = link.add_consumer(now, &producer) {
                    tracing::warn!(%node, %producer, error = %e, "cannot subscribe to remote producer");
                }
                // A lingering subscription was taken up again (a peer rejoined): its streams
                // feed the (possibly new) pipe producer again.
                if let Some(SubState::Active { stream_ids }) =
                    link.state(producer.as_str()).cloned()
                {
                    self.restore_streams(&node, &producer, &stream_ids);
                }
            }
            Note::PipeConsumerRemoved { node, producer } => {
                if let Some(s) = self.pipes.links.get_mut(&node) {
                    match s.remove_consumer(now, &producer) {
                        Ok(()) | Err(SubError::NoConsumer(_)) => {}
                        Err(e) => tracing::debug!(%node, %producer, error = %e, "remove_consumer"),
                    }
                }
            }
        }
    }

    fn on_sub_action(&mut self, now: Instant, node: &NodeId, action: SubAction) {
        match action {
            SubAction::Subscribe {
                request_id,
                producer_id,
            } => {
                let Some(room_id) = self.remote_room(&producer_id, node) else {
                    return;
                };
                self.outputs.push_back(Output::PipeControl {
                    node: node.clone(),
                    msg: ControlMessage::Subscribe {
                        request_id: request_id.0,
                        room_id,
                        producer_id,
                    },
                });
            }
            SubAction::Unsubscribe { producer_id } => {
                self.pipes
                    .inbound
                    .retain(|(n, _), (_, p, _)| !(n == node && *p == producer_id));
                if let Some(Source::Pipe(pipe)) = self
                    .remote_producer_mut(&producer_id, node)
                    .map(|p| &mut p.source)
                {
                    pipe.stream_ids.clear();
                    pipe.path.clear();
                }
                self.outputs.push_back(Output::PipeControl {
                    node: node.clone(),
                    msg: ControlMessage::Unsubscribe { producer_id },
                });
            }
            SubAction::PauseConsumers { producer_id } => {
                self.remote_pause(now, node, &producer_id, None, Some(true))
            }
            SubAction::ResumeConsumers { producer_id } => {
                self.remote_pause(now, node, &producer_id, None, Some(false))
            }
            SubAction::RequestKeyFrame { producer_id } => {
                let Some(room_id) = self.remote_room(&producer_id, node) else {
                    return;
                };
                // Through the throttle: the resumed consumers asked at the same moment.
                let Worker {
                    rooms,
                    outputs,
                    transports,
                    ..
                } = self;
                if let Some(p) = rooms
                    .get_mut(&room_id)
                    .and_then(|r| r.producers.get_mut(&producer_id))
                {
                    let reqs = p.request_keyframe(now, None);
                    send_keyframe_requests(p, reqs, outputs, transports);
                }
            }
            SubAction::CloseConsumers {
                producer_id,
                reason,
            } => {
                tracing::info!(%node, producer = %producer_id, ?reason, "closing consumers of a remote producer");
                let Some(room_id) = self.remote_room(&producer_id, node) else {
                    return;
                };
                match reason {
                    CloseReason::SubscribeFailed(_) | CloseReason::ProducerClosed => {
                        self.close_pipe_producer(&room_id, &producer_id);
                    }
                    // The producer may still exist: keep it, so peers get a consumer again
                    // when the link is back.
                    CloseReason::GraceExpired | CloseReason::SubscribeTimedOut => {
                        let Some(room) = self.rooms.get_mut(&room_id) else {
                            return;
                        };
                        let consumers = room
                            .producers
                            .get(&producer_id)
                            .map(|p| p.consumers.clone())
                            .unwrap_or_default();
                        for c in consumers {
                            room.close_consumer(&c, true, &mut self.outputs, &mut self.transports);
                        }
                    }
                }
            }
        }
    }

    fn on_directory_event(&mut self, now: Instant, ev: DirectoryEvent) {
        match ev {
            DirectoryEvent::RemotePeerJoined { room, peer, .. } => {
                let Some(r) = self.rooms.get(&room) else {
                    return;
                };
                let data = remote_peer_json(&peer);
                for p in r.peers.values().filter(|p| p.joined) {
                    self.outputs.push_back(Output::ToPeer {
                        session: p.session,
                        msg: crate::signaling::server::ToPeer::Notify {
                            method: "newPeer",
                            data: data.clone(),
                        },
                    });
                }
            }
            DirectoryEvent::RemotePeerLeft { room, peer_id, .. } => {
                let Some(r) = self.rooms.get(&room) else {
                    return;
                };
                for p in r.peers.values().filter(|p| p.joined) {
                    self.outputs.push_back(Output::ToPeer {
                        session: p.session,
                        msg: crate::signaling::server::ToPeer::Notify {
                            method: "peerClosed",
                            data: json!({ "peerId": peer_id }),
                        },
                    });
                }
            }
            DirectoryEvent::RemotePeerRenamed {
                room,
                peer_id,
                display_name,
                old_display_name,
                ..
            } => {
                let Some(r) = self.rooms.get(&room) else {
                    return;
                };
                let data = json!({
                    "peerId": peer_id,
                    "displayName": display_name,
                    "oldDisplayName": old_display_name,
                });
                for p in r.peers.values().filter(|p| p.joined) {
                    self.outputs.push_back(Output::ToPeer {
                        session: p.session,
                        msg: crate::signaling::server::ToPeer::Notify {
                            method: "peerDisplayNameChanged",
                            data: data.clone(),
                        },
                    });
                }
            }
            DirectoryEvent::RemoteProducerAdded {
                room,
                node,
                peer_id,
                producer,
            } => self.add_pipe_producer(now, &room, &node, &peer_id, producer),
            DirectoryEvent::RemoteProducerRemoved {
                room, producer_id, ..
            } => self.close_pipe_producer(&room, &producer_id),
            DirectoryEvent::NodeGone { .. } => {}
            DirectoryEvent::LinkWanted { node, pipe_addr } => {
                self.outputs.push_back(Output::PipeWanted {
                    node,
                    addr: pipe_addr,
                });
            }
            DirectoryEvent::LinkUnwanted { node } => {
                self.outputs.push_back(Output::PipeUnwanted { node });
            }
            DirectoryEvent::LocalDrain {
                draining,
                deadline_ms,
            } => self.drain(draining, deadline_ms),
        }
    }

    /// A remote producer appeared: a pipe producer stands for it, and every joined local peer
    /// gets a consumer (`newConsumer`), as for a local producer.
    fn add_pipe_producer(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        node: &NodeId,
        peer_id: &PeerId,
        info: ProducerInfo,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.producers.contains_key(&info.producer_id) {
            self.refused("remote producer id already in use");
            return;
        }
        let app_data: Value = serde_json::from_str(&info.app_data).unwrap_or(json!({}));
        let origin = node;
        let via = self.upstream_for(room_id, &info.producer_id, origin);
        let node = &via;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let p = match Producer::new_pipe(
            now,
            info.producer_id.clone(),
            peer_id.clone(),
            node.clone(),
            info.kind,
            info.rtp_parameters,
            app_data,
            info.paused,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%node, producer = %info.producer_id, error = %e, "remote producer refused");
                self.refused("remote producer with unusable parameters");
                return;
            }
        };
        let id = p.id.clone();
        room.producers.insert(id.clone(), p);
        self.pipes
            .remote
            .insert(id.clone(), (room_id.clone(), node.clone()));
        self.pipes.origins.insert(id.clone(), origin.clone());
        let peers: Vec<PeerId> = room
            .peers
            .values()
            .filter(|p| p.joined)
            .map(|p| p.id.clone())
            .collect();
        for peer in peers {
            room.create_consumer(
                now,
                &peer,
                &id,
                &mut self.rng,
                &mut self.outputs,
                &mut self.transports,
            );
        }
    }

    /// Points an active subscription's streams at the pipe producer again.
    fn restore_streams(&mut self, node: &NodeId, producer_id: &ProducerId, stream_ids: &[u32]) {
        let Some(room_id) = self.remote_room(producer_id, node) else {
            return;
        };
        let Some(p) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.producers.get_mut(producer_id))
        else {
            return;
        };
        let n = p.streams_len();
        let Source::Pipe(pipe) = &mut p.source else {
            return;
        };
        if !pipe.stream_ids.is_empty() || stream_ids.len() != n {
            return;
        }
        pipe.stream_ids = stream_ids.iter().map(|&s| u64::from(s)).collect();
        if let Some(path) = self.pipes.paths.get(&(node.clone(), producer_id.clone())) {
            pipe.path = path.clone();
        }
        for (i, sid) in pipe.stream_ids.iter().enumerate() {
            self.pipes.inbound.insert(
                (node.clone(), *sid),
                (room_id.clone(), producer_id.clone(), i),
            );
        }
    }

    /// A room closed on this node: forget its pipe producers.
    pub(super) fn pipe_room_closed(&mut self, room_id: &RoomId) {
        self.directory.unwatch_room(room_id);
        self.pipes.remote.retain(|_, (r, _)| r != room_id);
        self.pipes.inbound.retain(|_, (r, _, _)| r != room_id);
        self.pipes.outbound.retain(|_, (r, _, _)| r != room_id);
    }
}
