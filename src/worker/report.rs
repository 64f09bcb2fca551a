//! What the worker tells operators (`GET /api/v1/node` and `GET /api/v1/rooms/{room}` of the
//! admin API): how much this node holds, and what it has of one room — its local peers, and
//! every producer it has something of (local ones, and remote ones piped here), with their
//! encodings, the nodes they are piped to and their local consumers.
//!
//! Read-only bookkeeping over the worker's state, sans-IO: `now` is an input (encodings are
//! active when a packet arrived in the last [`ACTIVE_WINDOW`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::media::{Consumer, Producer, Source};
use super::Worker;
use crate::ids::{ConsumerId, NodeId, PeerId, ProducerId, RoomId};

/// An encoding that received a packet this recently is active.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(2);

/// How much this node holds (`/api/v1/node`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Signaling sessions open.
    pub sessions: usize,
    /// Rooms with a local peer.
    pub rooms: usize,
    /// Local peers (joined or not).
    pub peers: usize,
    /// WebRtcTransports.
    pub transports: usize,
    /// Local producers (sent by a client of this node; producers piped in are not counted,
    /// as in the node's registry record).
    pub producers: usize,
    /// Consumers (every consumer is local).
    pub consumers: usize,
    /// Pipe links up.
    pub pipe_links: usize,
}

/// What this node has of one room (`/api/v1/rooms/{room}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomReport {
    /// This node.
    pub node_id: NodeId,
    /// The room.
    pub room: RoomId,
    /// Local peers, by id.
    pub peers: Vec<PeerReport>,
    /// Producers this node has something of, by peer then kind then id.
    pub producers: Vec<ProducerReport>,
}

/// A local peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// The peer.
    pub peer_id: PeerId,
    /// Its display name (empty until it joins).
    pub display_name: String,
    /// Its transports.
    pub transports: usize,
    /// Its producers.
    pub producers: usize,
    /// Its consumers.
    pub consumers: usize,
}

/// A producer as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerReport {
    /// The producer (the same id on every node).
    pub producer_id: ProducerId,
    /// The peer that sends it.
    pub peer_id: PeerId,
    /// The node its peer is connected to.
    pub origin_node_id: NodeId,
    /// `audio` or `video`.
    pub kind: &'static str,
    /// Paused by its owner (at the origin).
    pub paused: bool,
    /// Sent by a client of this node.
    pub local: bool,
    /// The node whose pipe brings it here (`null` for a local producer).
    pub via: Option<NodeId>,
    /// Nodes this node pipes it to, sorted.
    pub piped_to: Vec<NodeId>,
    /// The way its stream takes to this node, origin first and this node last: just this node
    /// for a local producer; empty for a remote one whose stream is not piped here (yet).
    pub path: Vec<NodeId>,
    /// Its encodings as received here, lowest spatial layer first.
    pub layers: Vec<LayerReport>,
    /// Its local consumers, by peer then id.
    pub consumers: Vec<ConsumerReport>,
}

/// One encoding of a producer as received on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// RTP stream id (`null` when not simulcast, or not known here: encodings piped in are
    /// told apart by SSRC only).
    pub rid: Option<String>,
    /// SSRC it arrives with here (`null` until a rid-only encoding's first packet).
    pub ssrc: Option<u32>,
    /// A packet arrived in the last [`ACTIVE_WINDOW`].
    pub active: bool,
    /// Received bitrate over the last second, bits per second.
    pub bitrate_bps: u64,
}

/// A local consumer of a producer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerReport {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// The consuming peer.
    pub peer_id: PeerId,
    /// Paused by its peer (or not yet accepted).
    pub paused: bool,
    /// Spatial layer forwarded now (`null` when not simulcast, or none yet).
    pub spatial_layer: Option<u8>,
    /// Temporal layer forwarded now (`null` when not simulcast, or none yet).
    pub temporal_layer: Option<u8>,
}

impl Worker {
    /// How much this node holds.
    pub fn node_counts(&self) -> NodeCounts {
        let mut c = NodeCounts {
            sessions: self.sessions.len(),
            rooms: self.rooms.len(),
            transports: self.transports.len(),
            pipe_links: self.pipes.links_up(),
            ..NodeCounts::default()
        };
        for room in self.rooms.values() {
            c.peers += room.peers.len();
            c.producers += room
                .producers
                .values()
                .filter(|p| matches!(p.source, Source::Transport(_)))
                .count();
            c.consumers += room.consumers.len();
        }
        c
    }

    /// What this node (`this_node`) has of `room` at `now`; `None` when it has nothing of it
    /// (no local peer, no producer piped here or consumed here).
    ///
    /// A remote producer is listed when its media is piped here or a local peer consumes it
    /// (a remote producer the directory announced that nobody here consumes is not). `via` is
    /// the node its pipe subscription goes to; `originNodeId` the node the directory lists
    /// its peer on (the subscription's node when the directory no longer lists it).
    pub fn room_report(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        this_node: &NodeId,
    ) -> Option<RoomReport> {
        // Origin of every remote producer of the room, as the directory has it.
        let mut origins: HashMap<ProducerId, NodeId> = HashMap::new();
        if self.rooms.contains_key(room_id) {
            for (node, peer) in self.directory.remote_peers(room_id) {
                for p in peer.producers {
                    origins.insert(p.producer_id, node.clone());
                }
            }
        }
        let Worker {
            rooms,
            transports,
            pipes,
            ..
        } = self;
        let room = rooms.get_mut(room_id)?;
        let mut peers: Vec<PeerReport> = room
            .peers
            .values()
            .map(|p| {
                let mut r = PeerReport {
                    peer_id: p.id.clone(),
                    display_name: p.display_name.clone(),
                    transports: p.transports.len(),
                    producers: 0,
                    consumers: 0,
                };
                for t in p.transports.iter().filter_map(|t| transports.get(t)) {
                    r.producers += t.producers.len();
                    r.consumers += t.consumers.len();
                }
                r
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));

        let consumers = &room.consumers;
        let mut producers: Vec<ProducerReport> = room
            .producers
            .values_mut()
            .filter_map(|p| {
                let (local, via, origin) = match &p.source {
                    Source::Transport(_) => (true, None, this_node.clone()),
                    Source::Pipe(pipe) => {
                        // Listed only when piped here or consumed here.
                        if pipe.stream_ids.is_empty() && p.consumers.is_empty() {
                            return None;
                        }
                        let via = pipes.subscribed_via(&p.id).unwrap_or(&pipe.node).clone();
                        let origin = origins.get(&p.id).unwrap_or(&via).clone();
                        (false, Some(via), origin)
                    }
                };
                let mut path = super::pipe::upstream_path(p);
                if local || !path.is_empty() {
                    path.push(this_node.clone());
                }
                let mut r = producer_report(now, p, consumers, local, via, origin);
                r.path = path;
                Some(r)
            })
            .collect();
        producers.sort_by(|a, b| {
            (&a.peer_id, a.kind, &a.producer_id).cmp(&(&b.peer_id, b.kind, &b.producer_id))
        });
        if peers.is_empty() && producers.is_empty() {
            return None;
        }
        Some(RoomReport {
            node_id: this_node.clone(),
            room: room_id.clone(),
            peers,
            producers,
        })
    }
}

fn producer_report(
    now: Instant,
    p: &mut Producer,
    consumers: &HashMap<ConsumerId, Consumer>,
    local: bool,
    via: Option<NodeId>,
    origin_node_id: NodeId,
) -> ProducerReport {
    let simulcast = p.is_simulcast();
    let layers = p
        .encodings_received(now)
        .into_iter()
        .map(|e| LayerReport {
            rid: e.rid.filter(|_| simulcast),
            ssrc: e.ssrc,
            active: e
                .last_packet
                .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_WINDOW),
            bitrate_bps: e.bitrate_bps,
        })
        .collect();
    let mut piped_to = p.piped_to.clone();
    piped_to.sort();
    piped_to.dedup();
    let mut cons: Vec<ConsumerReport> = p
        .consumers
        .iter()
        .filter_map(|id| consumers.get(id))
        .map(|c| {
            let layers = c.current_layers();
            ConsumerReport {
                consumer_id: c.id.clone(),
                peer_id: c.peer.clone(),
                paused: c.paused,
                spatial_layer: layers.map(|l| l.0),
                temporal_layer: layers.map(|l| l.1),
            }
        })
        .collect();
    cons.sort_by(|a, b| (&a.peer_id, &a.consumer_id).cmp(&(&b.peer_id, &b.consumer_id)));
    ProducerReport {
        producer_id: p.id.clone(),
        peer_id: p.peer.clone(),
        origin_node_id,
        kind: p.kind.as_str(),
        paused: p.paused,
        local,
        via,
        piped_to,
        path: Vec::new(),
        layers,
        consumers: cons,
    }
}

/// One pipe link as the worker sees it ([`super::Worker::pipe_link_reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeLinkReport {
    /// The remote node.
    pub node: NodeId,
    /// Producers piped to it (local or relayed).
    pub piped_out: usize,
    /// Its producers piped here.
    pub piped_in: usize,
    /// Upper simulcast layers withheld from it because its link is congested
    /// ([`crate::pipe::shedding`]).
    pub shed_layers: u8,
}
