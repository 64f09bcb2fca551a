//! The room directory: which peers and producers each room has on the other nodes.
//!
//! Rooms are global: a peer joining room R on node B must see R's peers on node A. The worker
//! talks to a [`RoomDirectory`] only, so the backend can change (LiveKit's `routing` interfaces are
//! the model):
//!
//! - [`LocalDirectory`]: a single node; no remote entries, every call a no-op.
//! - [`GossipDirectory`]: static peers linked by pipes. Each node watches the rooms it has local
//!   peers in ([`ControlMessage::RoomWatch`]); a watched node answers with a full
//!   [`ControlMessage::RoomPeers`] snapshot, then sends incremental `Peer*` / `Producer*` updates.
//! - [`ClusterDirectory`](crate::discovery::cluster::ClusterDirectory): a registry (etcd, or
//!   in-process on one node) holds every node's rooms, peers and producers; the directory
//!   writes its own entries as [`RegistryOp`]s and reads everyone's from [`RegistryUpdate`]s.
//!   It also says which nodes the worker should link to ([`DirectoryEvent::LinkWanted`]).
//!
//! Sans-IO: inputs are method calls (`local_*`, `watch_room`, `link_*`, `node_gone`,
//! `apply_remote`, `apply_registry`), outputs are drained with [`RoomDirectory::poll_event`],
//! [`RoomDirectory::poll_send`] and [`RoomDirectory::poll_registry_op`]. No clock, no sockets,
//! no tasks. The driver drains the queues after each input, which keeps them as short as the
//! changes one input causes.
//!
//! Events are a change log of [`RoomDirectory::remote_peers`]: replaying them from empty gives
//! the current view. A peer appears as one [`DirectoryEvent::RemotePeerJoined`] (carrying the
//! peer *without* producers) followed by one [`DirectoryEvent::RemoteProducerAdded`] per
//! producer, and disappears as one `RemoteProducerRemoved` per producer, then
//! `RemotePeerLeft`. So each producer is announced exactly once to the worker.
//!
//! This core owns the directory state only; it never touches transports, consumers or links.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use thiserror::Error;

use crate::discovery::cluster::ClusterView;
use crate::discovery::keys::{NodeLoad, NodeState};
use crate::discovery::local::{count_refused, LocalRooms};
use crate::discovery::registry::{RegistryOp, RegistryUpdate};
use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::pipe::wire::{ControlMessage, PeerInfo, ProducerInfo};

/// What the directory reports to the worker about remote nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryEvent {
    /// A peer of `room` on `node` appeared. `peer.producers` is empty: its producers follow as
    /// [`DirectoryEvent::RemoteProducerAdded`].
    RemotePeerJoined {
        /// The room.
        room: RoomId,
        /// The node the peer is connected to.
        node: NodeId,
        /// The peer, without producers.
        peer: PeerInfo,
    },
    /// A peer of `room` on `node` went away (its producers were removed just before).
    RemotePeerLeft {
        /// The room.
        room: RoomId,
        /// The node the peer was connected to.
        node: NodeId,
        /// The peer.
        peer_id: PeerId,
    },
    /// A remote peer changed its display name (`changeDisplayName` on its node).
    RemotePeerRenamed {
        /// The room.
        room: RoomId,
        /// The node the peer is connected to.
        node: NodeId,
        /// The peer.
        peer_id: PeerId,
        /// Its new name.
        display_name: String,
        /// Its previous name.
        old_display_name: String,
    },
    /// A remote peer has a producer the worker may consume.
    RemoteProducerAdded {
        /// The room.
        room: RoomId,
        /// The node the producer lives on.
        node: NodeId,
        /// The producing peer.
        peer_id: PeerId,
        /// The producer.
        producer: ProducerInfo,
    },
    /// A remote producer went away.
    RemoteProducerRemoved {
        /// The room.
        room: RoomId,
        /// The node the producer lived on.
        node: NodeId,
        /// The producing peer.
        peer_id: PeerId,
        /// The producer.
        producer_id: ProducerId,
    },
    /// An operator asked this node to drain (or took the request back): stop taking new peers;
    /// close the remaining sessions at `deadline_ms` (Unix milliseconds) if one is set.
    LocalDrain {
        /// Drain (true) or serve again (false).
        draining: bool,
        /// When to close what is left, if ever.
        deadline_ms: Option<u64>,
    },
    /// Every entry of `node` was removed (the individual removals were emitted first).
    NodeGone {
        /// The node.
        node: NodeId,
    },
    /// The worker should keep a pipe link to `node` at `pipe_addr` ("ip:port"): it has peers
    /// in a room this node watches. Sent again when the address changes.
    LinkWanted {
        /// The node.
        node: NodeId,
        /// Where its pipe listener is.
        pipe_addr: String,
    },
    /// The link to `node` is no longer wanted (sent once after a [`DirectoryEvent::LinkWanted`]).
    LinkUnwanted {
        /// The node.
        node: NodeId,
    },
}

/// A local change the directory refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The node already tracks [`DirectoryConfig::max_rooms`] rooms.
    #[error("too many rooms (max {max})")]
    TooManyRooms {
        /// The bound.
        max: usize,
    },
    /// The room already has [`DirectoryConfig::max_peers_per_room`] local peers.
    #[error("too many peers in room {room} (max {max})")]
    TooManyPeers {
        /// The room.
        room: RoomId,
        /// The bound.
        max: usize,
    },
    /// The peer already has [`DirectoryConfig::max_producers_per_peer`] producers.
    #[error("too many producers for peer {peer_id} (max {max})")]
    TooManyProducers {
        /// The peer.
        peer_id: PeerId,
        /// The bound.
        max: usize,
    },
    /// The peer is already in the room.
    #[error("peer {peer_id} already in room {room}")]
    PeerExists {
        /// The room.
        room: RoomId,
        /// The peer.
        peer_id: PeerId,
    },
    /// The peer is not a local peer of the room.
    #[error("peer {peer_id} not in room {room}")]
    UnknownPeer {
        /// The room.
        room: RoomId,
        /// The peer.
        peer_id: PeerId,
    },
    /// The peer already has this producer.
    #[error("producer {producer_id} already announced")]
    ProducerExists {
        /// The producer.
        producer_id: ProducerId,
    },
    /// The entry cannot be written to the registry: an empty id, or a key or value past the
    /// bounds every reader enforces ([`crate::discovery::keys::MAX_KEY_LEN`],
    /// [`crate::discovery::keys::MAX_VALUE_LEN`]).
    #[error("cannot publish {what}: {reason}")]
    Unpublishable {
        /// The entry (peer or producer id).
        what: String,
        /// Why.
        reason: String,
    },
}

/// The directory operations the worker needs; object-safe so backends are swappable.
pub trait RoomDirectory {
    /// A local peer joined `room` (with the producers it already has).
    fn local_peer_joined(&mut self, room: &RoomId, peer: PeerInfo) -> Result<(), DirectoryError>;
    /// A local peer left `room`. Unknown peers are ignored.
    fn local_peer_left(&mut self, room: &RoomId, peer_id: &PeerId);
    /// A local peer created a producer.
    fn local_producer_added(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer: ProducerInfo,
    ) -> Result<(), DirectoryError>;
    /// A local producer went away. Unknown producers are ignored.
    fn local_producer_removed(&mut self, room: &RoomId, peer_id: &PeerId, producer_id: &ProducerId);
    /// A local peer changed its display name. Unknown peers are ignored. (The gossip
    /// directory does not carry renames; the registry directory does.)
    fn local_peer_renamed(&mut self, _room: &RoomId, _peer_id: &PeerId, _display_name: &str) {}
    /// A local producer was paused or resumed by its owner. Unknown producers are ignored.
    fn local_producer_paused(
        &mut self,
        _room: &RoomId,
        _peer_id: &PeerId,
        _producer_id: &ProducerId,
        _paused: bool,
    ) {
    }
    /// Start following `room` on other nodes (while this node has local peers in it).
    fn watch_room(&mut self, room: &RoomId) -> Result<(), DirectoryError>;
    /// Stop following `room`; its remote entries are dropped (with events).
    fn unwatch_room(&mut self, room: &RoomId);
    /// The peers of `room` on other nodes, with their producers.
    fn remote_peers(&self, room: &RoomId) -> Vec<(NodeId, PeerInfo)>;
    /// The next change to the remote view, if any.
    fn poll_event(&mut self) -> Option<DirectoryEvent>;

    // Pipe-driven backends (gossip) learn through links; the defaults suit backends that do
    // not (single node, etcd).

    /// The pipe link to `node` is up.
    fn link_up(&mut self, _node: &NodeId) {}
    /// The pipe link to `node` is down (it may come back).
    fn link_down(&mut self, _node: &NodeId) {}
    /// `node` is considered gone: drop what it announced, with events.
    fn node_gone(&mut self, _node: &NodeId) {}
    /// A directory control message from `node` (others are ignored).
    fn apply_remote(&mut self, _node: &NodeId, _msg: &ControlMessage) {}
    /// The next control message to send to a node, if any.
    fn poll_send(&mut self) -> Option<(NodeId, ControlMessage)> {
        None
    }

    // Registry-driven backends (cluster) read and write a registry; the defaults suit backends
    // that have none.

    /// What the registry holds under the cluster prefix: a snapshot or changes.
    fn apply_registry(&mut self, _update: RegistryUpdate) {}
    /// The next write to the registry, if any.
    fn poll_registry_op(&mut self) -> Option<RegistryOp> {
        None
    }
    /// This node's load, for its published record (re-published only when it changed).
    fn set_local_load(&mut self, _load: NodeLoad) {}
    /// Serving or draining, for this node's published record.
    fn set_local_state(&mut self, _state: NodeState) {}
    /// The wall clock (Unix milliseconds), stamped on entries written from now on (when a
    /// room was first hosted). The directory never reads a clock itself.
    fn set_wall_clock(&mut self, _unix_ms: u64) {}
    /// A read-only picture of the cluster as this directory sees it (admin endpoint, CLI).
    fn cluster_view(&self) -> Option<ClusterView> {
        None
    }
}

/// The single-node directory: there are no other nodes, so nothing is remote.
#[derive(Debug, Default, Clone)]
pub struct LocalDirectory;

impl LocalDirectory {
    /// A single-node directory.
    pub fn new() -> Self {
        Self
    }
}

impl RoomDirectory for LocalDirectory {
    fn local_peer_joined(&mut self, _: &RoomId, _: PeerInfo) -> Result<(), DirectoryError> {
        Ok(())
    }
    fn local_peer_left(&mut self, _: &RoomId, _: &PeerId) {}
    fn local_producer_added(
        &mut self,
        _: &RoomId,
        _: &PeerId,
        _: ProducerInfo,
    ) -> Result<(), DirectoryError> {
        Ok(())
    }
    fn local_producer_removed(&mut self, _: &RoomId, _: &PeerId, _: &ProducerId) {}
    fn watch_room(&mut self, _: &RoomId) -> Result<(), DirectoryError> {
        Ok(())
    }
    fn unwatch_room(&mut self, _: &RoomId) {}
    fn remote_peers(&self, _: &RoomId) -> Vec<(NodeId, PeerInfo)> {
        Vec::new()
    }
    fn poll_event(&mut self) -> Option<DirectoryEvent> {
        None
    }
}

/// Bounds of a [`GossipDirectory`] or a
/// [`ClusterDirectory`](crate::discovery::cluster::ClusterDirectory). Past a bound, local
/// changes are refused with an error and remote entries are dropped (gossip) or not shown
/// (cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// Rooms this node tracks (local peers or watched), and rooms one remote node may watch.
    pub max_rooms: usize,
    /// Peers per room per node (local, and per remote node).
    pub max_peers_per_room: usize,
    /// Producers per peer.
    pub max_producers_per_peer: usize,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_peers_per_room: 1_000,
            max_producers_per_peer: 32,
        }
    }
}

/// Counters of what a [`GossipDirectory`] refused or ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Rooms refused past [`DirectoryConfig::max_rooms`] (local or a remote's `RoomWatch`).
    pub refused_rooms: u64,
    /// Peers refused past [`DirectoryConfig::max_peers_per_room`].
    pub refused_peers: u64,
    /// Producers refused past [`DirectoryConfig::max_producers_per_peer`].
    pub refused_producers: u64,
    /// Remote messages that repeated what was known (same peer joined twice, ...).
    pub ignored_duplicates: u64,
    /// Remote messages about rooms, peers or producers not known (or from unlinked nodes).
    pub ignored_unknown: u64,
}

count_refused!(DirectoryStats);

#[derive(Debug, Default)]
struct RemoteNode {
    linked: bool,
    /// Rooms this node asked us to keep it updated on.
    watches: BTreeSet<RoomId>,
    /// What it announced, per room we watch.
    rooms: BTreeMap<RoomId, BTreeMap<PeerId, PeerInfo>>,
}

/// The static-peer directory: rooms are gossiped over pipes to every linked node.
#[derive(Debug)]
pub struct GossipDirectory {
    config: DirectoryConfig,
    /// This node's rooms, peers and producers.
    rooms: LocalRooms,
    nodes: BTreeMap<NodeId, RemoteNode>,
    events: VecDeque<DirectoryEvent>,
    sends: VecDeque<(NodeId, ControlMessage)>,
    stats: DirectoryStats,
}

impl GossipDirectory {
    /// An empty directory with these bounds.
    pub fn new(config: DirectoryConfig) -> Self {
        Self {
            rooms: LocalRooms::new(config.clone()),
            config,
            nodes: BTreeMap::new(),
            events: VecDeque::new(),
            sends: VecDeque::new(),
            stats: DirectoryStats::default(),
        }
    }

    /// What was refused or ignored so far.
    pub fn stats(&self) -> &DirectoryStats {
        &self.stats
    }

    /// The link to `node` is up: ask it for every room we watch. Entries it announced before
    /// are kept; its snapshots replace them (only differences become events).
    pub fn link_up(&mut self, node: &NodeId) {
        let entry = self.nodes.entry(node.clone()).or_default();
        entry.linked = true;
        for room in self.rooms.watched() {
            self.sends.push_back((
                node.clone(),
                ControlMessage::RoomWatch {
                    room_id: room.clone(),
                },
            ));
        }
    }

    /// The link to `node` is down. Its entries stay (it may come back soon); its watches are
    /// forgotten, since it sends them again on the next link, and unsent messages are dropped.
    pub fn link_down(&mut self, node: &NodeId) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.linked = false;
            n.watches.clear();
        }
        self.sends.retain(|(to, _)| to != node);
    }

    /// `node` is gone for good: drop everything it announced, with events, then
    /// [`DirectoryEvent::NodeGone`].
    pub fn node_gone(&mut self, node: &NodeId) {
        let Some(n) = self.nodes.remove(node) else {
            return;
        };
        for (room, peers) in n.rooms {
            for (_, peer) in peers {
                push_peer_left(&mut self.events, &room, node, peer);
            }
        }
        self.sends.retain(|(to, _)| to != node);
        self.events
            .push_back(DirectoryEvent::NodeGone { node: node.clone() });
    }

    /// A control message from `node`. Messages that are not about the directory are ignored,
    /// as are messages from nodes not linked.
    pub fn apply_remote(&mut self, node: &NodeId, msg: &ControlMessage) {
        let is_directory = matches!(
            msg,
            ControlMessage::RoomWatch { .. }
                | ControlMessage::RoomUnwatch { .. }
                | ControlMessage::RoomPeers { .. }
                | ControlMessage::PeerJoined { .. }
                | ControlMessage::PeerLeft { .. }
                | ControlMessage::ProducerAdded { .. }
                | ControlMessage::ProducerRemoved { .. }
        );
        if !is_directory {
            return;
        }
        if !self.nodes.get(node).is_some_and(|n| n.linked) {
            self.stats.ignored_unknown += 1;
            return;
        }
        match msg {
            ControlMessage::RoomWatch { room_id } => self.remote_watch(node, room_id),
            ControlMessage::RoomUnwatch { room_id } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.watches.remove(room_id);
                }
            }
            ControlMessage::RoomPeers { room_id, peers } => {
                self.remote_snapshot(node, room_id, peers)
            }
            ControlMessage::PeerJoined { room_id, peer } => self.remote_joined(node, room_id, peer),
            ControlMessage::PeerLeft { room_id, peer_id } => {
                self.remote_left(node, room_id, peer_id)
            }
            ControlMessage::ProducerAdded {
                room_id,
                peer_id,
                producer,
            } => self.remote_producer_added(node, room_id, peer_id, producer),
            ControlMessage::ProducerRemoved {
                room_id,
                peer_id,
                producer_id,
            } => self.remote_producer_removed(node, room_id, peer_id, producer_id),
            _ => {}
        }
    }

    /// The next message to send, and to which node.
    pub fn poll_send(&mut self) -> Option<(NodeId, ControlMessage)> {
        self.sends.pop_front()
    }

    /// Queue `msg` to every linked node that watches `room`.
    fn broadcast(&mut self, room: &RoomId, msg: ControlMessage) {
        for (id, n) in &self.nodes {
            if n.linked && n.watches.contains(room) {
                self.sends.push_back((id.clone(), msg.clone()));
            }
        }
    }

    fn remote_watch(&mut self, node: &NodeId, room: &RoomId) {
        let max = self.config.max_rooms;
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if !n.watches.contains(room) && n.watches.len() >= max {
            self.stats.refused_rooms += 1;
            return;
        }
        n.watches.insert(room.clone());
        let peers = self.rooms.peers(room).cloned().collect();
        self.sends.push_back((
            node.clone(),
            ControlMessage::RoomPeers {
                room_id: room.clone(),
                peers,
            },
        ));
    }

    /// Bound and de-duplicate a remote peer's producers.
    fn sanitize(&mut self, peer: &PeerInfo) -> PeerInfo {
        let mut clean = PeerInfo {
            producers: Vec::new(),
            ..peer.clone()
        };
        for p in &peer.producers {
            if clean
                .producers
                .iter()
                .any(|q| q.producer_id == p.producer_id)
            {
                self.stats.ignored_duplicates += 1;
            } else if clean.producers.len() >= self.config.max_producers_per_peer {
                self.stats.refused_producers += 1;
            } else {
                clean.producers.push(p.clone());
            }
        }
        clean
    }

    fn remote_snapshot(&mut self, node: &NodeId, room: &RoomId, peers: &[PeerInfo]) {
        if !self.rooms.is_watched(room) {
            self.stats.ignored_unknown += 1;
            return;
        }
        let mut new: BTreeMap<PeerId, PeerInfo> = BTreeMap::new();
        for p in peers {
            if new.contains_key(&p.peer_id) {
                self.stats.ignored_duplicates += 1;
            } else if new.len() >= self.config.max_peers_per_room {
                self.stats.refused_peers += 1;
            } else {
                let clean = self.sanitize(p);
                new.insert(p.peer_id.clone(), clean);
            }
        }
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let old = n.rooms.remove(room).unwrap_or_default();
        let events = &mut self.events;
        for (id, old_peer) in &old {
            match new.get(id) {
                None => push_peer_left(events, room, node, old_peer.clone()),
                Some(new_peer) => {
                    for p in &old_peer.producers {
                        if !new_peer
                            .producers
                            .iter()
                            .any(|q| q.producer_id == p.producer_id)
                        {
                            events.push_back(DirectoryEvent::RemoteProducerRemoved {
                                room: room.clone(),
                                node: node.clone(),
                                peer_id: id.clone(),
                                producer_id: p.producer_id.clone(),
                            });
                        }
                    }
                    for p in &new_peer.producers {
                        if !old_peer
                            .producers
                            .iter()
                            .any(|q| q.producer_id == p.producer_id)
                        {
                            events.push_back(DirectoryEvent::RemoteProducerAdded {
                                room: room.clone(),
                                node: node.clone(),
                                peer_id: id.clone(),
                                producer: p.clone(),
                            });
                        }
                    }
                }
            }
        }
        for (id, peer) in &new {
            if !old.contains_key(id) {
                push_peer_joined(events, room, node, peer);
            }
        }
        if !new.is_empty() {
            n.rooms.insert(room.clone(), new);
        }
    }

    fn remote_joined(&mut self, node: &NodeId, room: &RoomId, peer: &PeerInfo) {
        if !self.rooms.is_watched(room) {
            self.stats.ignored_unknown += 1;
            return;
        }
        let clean = self.sanitize(peer);
        let max_peers = self.config.max_peers_per_room;
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let peers = n.rooms.entry(room.clone()).or_default();
        if peers.contains_key(&peer.peer_id) {
            self.stats.ignored_duplicates += 1;
            return;
        }
        if peers.len() >= max_peers {
            self.stats.refused_peers += 1;
            if peers.is_empty() {
                n.rooms.remove(room);
            }
            return;
        }
        push_peer_joined(&mut self.events, room, node, &clean);
        peers.insert(clean.peer_id.clone(), clean);
    }

    fn remote_left(&mut self, node: &NodeId, room: &RoomId, peer_id: &PeerId) {
        let removed = self.nodes.get_mut(node).and_then(|n| {
            let peers = n.rooms.get_mut(room)?;
            let peer = peers.remove(peer_id)?;
            if peers.is_empty() {
                n.rooms.remove(room);
            }
            Some(peer)
        });
        match removed {
            Some(peer) => push_peer_left(&mut self.events, room, node, peer),
            None => self.stats.ignored_unknown += 1,
        }
    }

    fn remote_producer_added(
        &mut self,
        node: &NodeId,
        room: &RoomId,
        peer_id: &PeerId,
        producer: &ProducerInfo,
    ) {
        let max = self.config.max_producers_per_peer;
        let Some(peer) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.rooms.get_mut(room))
            .and_then(|peers| peers.get_mut(peer_id))
        else {
            self.stats.ignored_unknown += 1;
            return;
        };
        if peer
            .producers
            .iter()
            .any(|p| p.producer_id == producer.producer_id)
        {
            self.stats.ignored_duplicates += 1;
            return;
        }
        if peer.producers.len() >= max {
            self.stats.refused_producers += 1;
            return;
        }
        peer.producers.push(producer.clone());
        self.events.push_back(DirectoryEvent::RemoteProducerAdded {
            room: room.clone(),
            node: node.clone(),
            peer_id: peer_id.clone(),
            producer: producer.clone(),
        });
    }

    fn remote_producer_removed(
        &mut self,
        node: &NodeId,
        room: &RoomId,
        peer_id: &PeerId,
        producer_id: &ProducerId,
    ) {
        let removed = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.rooms.get_mut(room))
            .and_then(|peers| peers.get_mut(peer_id))
            .and_then(|peer| {
                let i = peer
                    .producers
                    .iter()
                    .position(|p| &p.producer_id == producer_id)?;
                Some(peer.producers.remove(i))
            });
        if removed.is_none() {
            self.stats.ignored_unknown += 1;
            return;
        }
        self.events
            .push_back(DirectoryEvent::RemoteProducerRemoved {
                room: room.clone(),
                node: node.clone(),
                peer_id: peer_id.clone(),
                producer_id: producer_id.clone(),
            });
    }
}

/// Announce `peer` the way the event grammar says: the peer without producers, then each
/// producer.
pub(crate) fn push_peer_joined(
    events: &mut VecDeque<DirectoryEvent>,
    room: &RoomId,
    node: &NodeId,
    peer: &PeerInfo,
) {
    events.push_back(DirectoryEvent::RemotePeerJoined {
        room: room.clone(),
        node: node.clone(),
        peer: PeerInfo {
            producers: Vec::new(),
            ..peer.clone()
        },
    });
    for p in &peer.producers {
        events.push_back(DirectoryEvent::RemoteProducerAdded {
            room: room.clone(),
            node: node.clone(),
            peer_id: peer.peer_id.clone(),
            producer: p.clone(),
        });
    }
}

/// Withdraw `peer`: each producer, then the peer.
pub(crate) fn push_peer_left(
    events: &mut VecDeque<DirectoryEvent>,
    room: &RoomId,
    node: &NodeId,
    peer: PeerInfo,
) {
    for p in peer.producers {
        events.push_back(DirectoryEvent::RemoteProducerRemoved {
            room: room.clone(),
            node: node.clone(),
            peer_id: peer.peer_id.clone(),
            producer_id: p.producer_id,
        });
    }
    events.push_back(DirectoryEvent::RemotePeerLeft {
        room: room.clone(),
        node: node.clone(),
        peer_id: peer.peer_id,
    });
}

impl RoomDirectory for GossipDirectory {
    fn local_peer_joined(&mut self, room: &RoomId, peer: PeerInfo) -> Result<(), DirectoryError> {
        self.rooms
            .admit_peer(room, &peer)
            .inspect_err(|e| self.stats.count_refused(e))?;
        self.rooms.insert_peer(room, peer.clone());
        self.broadcast(
            room,
            ControlMessage::PeerJoined {
                room_id: room.clone(),
                peer,
            },
        );
        Ok(())
    }

    fn local_peer_left(&mut self, room: &RoomId, peer_id: &PeerId) {
        if self.rooms.remove_peer(room, peer_id).is_none() {
            return;
        }
        self.broadcast(
            room,
            ControlMessage::PeerLeft {
                room_id: room.clone(),
                peer_id: peer_id.clone(),
            },
        );
    }

    fn local_producer_added(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer: ProducerInfo,
    ) -> Result<(), DirectoryError> {
        self.rooms
            .admit_producer(room, peer_id, &producer)
            .inspect_err(|e| self.stats.count_refused(e))?;
        self.rooms.insert_producer(room, peer_id, producer.clone());
        self.broadcast(
            room,
            ControlMessage::ProducerAdded {
                room_id: room.clone(),
                peer_id: peer_id.clone(),
                producer,
            },
        );
        Ok(())
    }

    fn local_producer_removed(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer_id: &ProducerId,
    ) {
        if self
            .rooms
            .remove_producer(room, peer_id, producer_id)
            .is_none()
        {
            return;
        }
        self.broadcast(
            room,
            ControlMessage::ProducerRemoved {
                room_id: room.clone(),
                peer_id: peer_id.clone(),
                producer_id: producer_id.clone(),
            },
        );
    }

    fn local_producer_paused(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer_id: &ProducerId,
        paused: bool,
    ) {
        if self
            .rooms
            .set_paused(room, peer_id, producer_id, paused)
            .is_none()
        {
            return;
        }
        // The pipe message of the same name: nodes that know the producer apply it to their
        // pipe producer whether or not they are subscribed.
        let producer_id = producer_id.clone();
        let msg = if paused {
            ControlMessage::ProducerPaused { producer_id }
        } else {
            ControlMessage::ProducerResumed { producer_id }
        };
        self.broadcast(room, msg);
    }

    fn watch_room(&mut self, room: &RoomId) -> Result<(), DirectoryError> {
        if !self
            .rooms
            .watch(room)
            .inspect_err(|e| self.stats.count_refused(e))?
        {
            return Ok(());
        }
        for (id, n) in &self.nodes {
            if n.linked {
                self.sends.push_back((
                    id.clone(),
                    ControlMessage::RoomWatch {
                        room_id: room.clone(),
                    },
                ));
            }
        }
        Ok(())
    }

    fn unwatch_room(&mut self, room: &RoomId) {
        if !self.rooms.unwatch(room) {
            return;
        }
        for (id, n) in self.nodes.iter_mut() {
            if let Some(peers) = n.rooms.remove(room) {
                for (_, peer) in peers {
                    push_peer_left(&mut self.events, room, id, peer);
                }
            }
            if n.linked {
                self.sends.push_back((
                    id.clone(),
                    ControlMessage::RoomUnwatch {
                        room_id: room.clone(),
                    },
                ));
            }
        }
    }

    fn remote_peers(&self, room: &RoomId) -> Vec<(NodeId, PeerInfo)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| Some((id, n.rooms.get(room)?)))
            .flat_map(|(id, peers)| peers.values().map(move |p| (id.clone(), p.clone())))
            .collect()
    }

    fn poll_event(&mut self) -> Option<DirectoryEvent> {
        self.events.pop_front()
    }
    fn link_up(&mut self, node: &NodeId) {
        GossipDirectory::link_up(self, node)
    }
    fn link_down(&mut self, node: &NodeId) {
        GossipDirectory::link_down(self, node)
    }
    fn node_gone(&mut self, node: &NodeId) {
        GossipDirectory::node_gone(self, node)
    }
    fn apply_remote(&mut self, node: &NodeId, msg: &ControlMessage) {
        GossipDirectory::apply_remote(self, node, msg)
    }
    fn poll_send(&mut self) -> Option<(NodeId, ControlMessage)> {
        GossipDirectory::poll_send(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::testing::{
        added, events, joined, left, node_a, node_b, peer, producer, refuse_past_unit_bounds,
        removed, room, unit_bounds,
    };

    /// Two directories, "a" and "b", wired back to back.
    struct Pair {
        a: GossipDirectory,
        b: GossipDirectory,
    }

    impl Pair {
        fn new(config: DirectoryConfig) -> Self {
            Self {
                a: GossipDirectory::new(config.clone()),
                b: GossipDirectory::new(config),
            }
        }
        fn link(&mut self) {
            self.a.link_up(&node_b());
            self.b.link_up(&node_a());
            self.pump();
        }
        /// Deliver every queued message until both sides are quiet.
        fn pump(&mut self) -> usize {
            let mut delivered = 0;
            for _ in 0..100 {
                let mut moved = false;
                while let Some((to, msg)) = self.a.poll_send() {
                    assert_eq!(to, node_b());
                    self.b.apply_remote(&node_a(), &msg);
                    moved = true;
                    delivered += 1;
                }
                while let Some((to, msg)) = self.b.poll_send() {
                    assert_eq!(to, node_a());
                    self.a.apply_remote(&node_b(), &msg);
                    moved = true;
                    delivered += 1;
                }
                if !moved {
                    return delivered;
                }
            }
            panic!("messages never settled");
        }
    }

    #[test]
    fn local_directory_has_no_remote_entries() {
        let mut d = LocalDirectory::new();
        let dir: &mut dyn RoomDirectory = &mut d;
        dir.watch_room(&room()).unwrap();
        dir.local_peer_joined(&room(), peer("alice", &["p1"]))
            .unwrap();
        dir.local_producer_added(&room(), &PeerId::from("alice"), producer("p2"))
            .unwrap();
        dir.local_producer_removed(&room(), &PeerId::from("alice"), &ProducerId::from("p2"));
        dir.local_peer_left(&room(), &PeerId::from("alice"));
        dir.unwatch_room(&room());
        assert!(dir.remote_peers(&room()).is_empty());
        assert!(events(dir).is_empty());
        // It has no registry.
        dir.apply_registry(RegistryUpdate::Snapshot {
            revision: 1,
            kvs: vec![(b"nodes/x".to_vec(), b"{}".to_vec())],
        });
        dir.set_local_load(NodeLoad::default());
        dir.set_local_state(NodeState::Draining);
        dir.set_wall_clock(1);
        assert_eq!(dir.poll_registry_op(), None);
        assert_eq!(dir.cluster_view(), None);
        assert!(events(dir).is_empty());
    }

    /// A has alice (with p1) in R; B has bob and watches R; links come up.
    fn alice_and_bob() -> Pair {
        let mut pair = Pair::new(DirectoryConfig::default());
        pair.a.watch_room(&room()).unwrap();
        pair.a
            .local_peer_joined(&room(), peer("alice", &["p1"]))
            .unwrap();
        pair.b.watch_room(&room()).unwrap();
        pair.b.local_peer_joined(&room(), peer("bob", &[])).unwrap();
        pair.link();
        pair
    }

    #[test]
    fn watcher_learns_existing_peers_and_producers() {
        let mut pair = alice_and_bob();
        assert_eq!(
            events(&mut pair.b),
            vec![joined(&node_a(), "alice"), added(&node_a(), "alice", "p1")]
        );
        assert_eq!(
            pair.b.remote_peers(&room()),
            vec![(node_a(), peer("alice", &["p1"]))]
        );
        assert_eq!(events(&mut pair.a), vec![joined(&node_b(), "bob")]);
        assert_eq!(
            pair.a.remote_peers(&room()),
            vec![(node_b(), peer("bob", &[]))]
        );
    }

    #[test]
    fn nothing_is_sent_for_unwatched_rooms() {
        let mut pair = Pair::new(DirectoryConfig::default());
        pair.a
            .local_peer_joined(&room(), peer("alice", &["p1"]))
            .unwrap();
        pair.link();
        assert_eq!(pair.pump(), 0);
        assert!(events(&mut pair.b).is_empty());
        // B starts watching later: it gets the snapshot then.
        pair.b.watch_room(&room()).unwrap();
        pair.pump();
        assert_eq!(
            events(&mut pair.b),
            vec![joined(&node_a(), "alice"), added(&node_a(), "alice", "p1")]
        );
    }

    #[test]
    fn local_changes_propagate_incrementally() {
        let mut pair = alice_and_bob();
        events(&mut pair.a);
        events(&mut pair.b);
        let alice = PeerId::from("alice");
        pair.a
            .local_producer_added(&room(), &alice, producer("p2"))
            .unwrap();
        pair.pump();
        assert_eq!(events(&mut pair.b), vec![added(&node_a(), "alice", "p2")]);
        pair.a
            .local_producer_removed(&room(), &alice, &ProducerId::from("p1"));
        pair.pump();
        assert_eq!(events(&mut pair.b), vec![removed(&node_a(), "alice", "p1")]);
        pair.a.local_peer_left(&room(), &alice);
        pair.pump();
        assert_eq!(
            events(&mut pair.b),
            vec![removed(&node_a(), "alice", "p2"), left(&node_a(), "alice")]
        );
        assert!(pair.b.remote_peers(&room()).is_empty());

        pair.b
            .local_peer_joined(&room(), peer("carol", &["c1"]))
            .unwrap();
        pair.pump();
        assert_eq!(
            events(&mut pair.a),
            vec![joined(&node_b(), "carol"), added(&node_b(), "carol", "c1")]
        );
        assert_eq!(pair.a.remote_peers(&room()).len(), 2);
    }

    #[test]
    fn node_gone_removes_everything_with_events() {
        let mut pair = alice_and_bob();
        events(&mut pair.b);
        pair.b.link_down(&node_a());
        // Entries survive a link going down.
        assert_eq!(pair.b.remote_peers(&room()).len(), 1);
        assert!(events(&mut pair.b).is_empty());
        pair.b.node_gone(&node_a());
        assert_eq!(
            events(&mut pair.b),
            vec![
                removed(&node_a(), "alice", "p1"),
                left(&node_a(), "alice"),
                DirectoryEvent::NodeGone { node: node_a() },
            ]
        );
        assert!(pair.b.remote_peers(&room()).is_empty());
        // Unknown node: nothing.
        pair.b.node_gone(&node_a());
        assert!(events(&mut pair.b).is_empty());
    }

    #[test]
    fn reconnect_snapshot_emits_only_differences() {
        let mut pair = alice_and_bob();
        pair.a
            .local_peer_joined(&room(), peer("dave", &["d1"]))
            .unwrap();
        pair.pump();
        events(&mut pair.a);
        events(&mut pair.b);

        pair.a.link_down(&node_b());
        pair.b.link_down(&node_a());
        // While down: alice loses p1 and gains p3, dave leaves, erin joins.
        let alice = PeerId::from("alice");
        pair.a
            .local_producer_removed(&room(), &alice, &ProducerId::from("p1"));
        pair.a
            .local_producer_added(&room(), &alice, producer("p3"))
            .unwrap();
        pair.a.local_peer_left(&room(), &PeerId::from("dave"));
        pair.a
            .local_peer_joined(&room(), peer("erin", &[]))
            .unwrap();
        assert_eq!(pair.pump(), 0, "nothing is sent on a down link");

        pair.link();
        assert_eq!(
            events(&mut pair.b),
            vec![
                removed(&node_a(), "alice", "p1"),
                added(&node_a(), "alice", "p3"),
                removed(&node_a(), "dave", "d1"),
                left(&node_a(), "dave"),
                joined(&node_a(), "erin"),
            ]
        );
        // Bob did not change: A sees no events at all.
        assert!(events(&mut pair.a).is_empty());
    }

    #[test]
    fn duplicates_and_unknowns_are_ignored() {
        let mut pair = alice_and_bob();
        events(&mut pair.b);
        let a = node_a();
        let other = RoomId::from("other");
        let msgs = [
            ControlMessage::PeerJoined {
                room_id: room(),
                peer: peer("alice", &["p9"]),
            },
            ControlMessage::ProducerAdded {
                room_id: room(),
                peer_id: PeerId::from("alice"),
                producer: producer("p1"),
            },
            ControlMessage::PeerJoined {
                room_id: other.clone(),
                peer: peer("zed", &[]),
            },
            ControlMessage::RoomPeers {
                room_id: other.clone(),
                peers: vec![peer("zed", &[])],
            },
            ControlMessage::PeerLeft {
                room_id: room(),
                peer_id: PeerId::from("nobody"),
            },
            ControlMessage::ProducerAdded {
                room_id: room(),
                peer_id: PeerId::from("nobody"),
                producer: producer("x"),
            },
            ControlMessage::ProducerRemoved {
                room_id: room(),
                peer_id: PeerId::from("alice"),
                producer_id: ProducerId::from("nope"),
            },
            ControlMessage::Ping { nonce: 1 },
        ];
        for m in &msgs {
            pair.b.apply_remote(&a, m);
        }
        assert!(events(&mut pair.b).is_empty());
        assert_eq!(
            pair.b.remote_peers(&room()),
            vec![(node_a(), peer("alice", &["p1"]))]
        );
        assert!(pair.b.remote_peers(&other).is_empty());
        assert_eq!(pair.b.stats().ignored_duplicates, 2);
        assert_eq!(pair.b.stats().ignored_unknown, 5);

        // From a node that never linked: ignored.
        pair.b.apply_remote(
            &NodeId::from("stranger"),
            &ControlMessage::PeerJoined {
                room_id: room(),
                peer: peer("mallory", &[]),
            },
        );
        assert!(events(&mut pair.b).is_empty());
        assert_eq!(pair.b.stats().ignored_unknown, 6);

        // A snapshot listing a peer twice keeps the first.
        pair.b.apply_remote(
            &a,
            &ControlMessage::RoomPeers {
                room_id: room(),
                peers: vec![peer("alice", &["p1"]), peer("alice", &["p7"])],
            },
        );
        assert!(events(&mut pair.b).is_empty());
    }

    #[test]
    fn unwatch_drops_remote_entries_and_stops_updates() {
        let mut pair = alice_and_bob();
        events(&mut pair.b);
        pair.b.unwatch_room(&room());
        assert_eq!(
            events(&mut pair.b),
            vec![removed(&node_a(), "alice", "p1"), left(&node_a(), "alice")]
        );
        pair.pump();
        pair.a
            .local_peer_joined(&room(), peer("frank", &[]))
            .unwrap();
        assert_eq!(pair.pump(), 0, "B no longer watches R");
        assert!(events(&mut pair.b).is_empty());
    }

    #[test]
    fn local_bounds_refuse_and_count() {
        let mut d = GossipDirectory::new(unit_bounds());
        refuse_past_unit_bounds(&mut d);
        let s = d.stats();
        assert_eq!(
            (s.refused_rooms, s.refused_peers, s.refused_producers),
            (2, 1, 2)
        );
        let alice = PeerId::from("alice");
        // The room frees up once empty and unwatched.
        d.local_peer_left(&room(), &alice);
        d.watch_room(&RoomId::from("r2")).unwrap();
    }

    #[test]
    fn remote_bounds_drop_and_count() {
        let config = DirectoryConfig {
            max_rooms: 1,
            max_peers_per_room: 2,
            max_producers_per_peer: 1,
        };
        let mut b = GossipDirectory::new(config);
        b.watch_room(&room()).unwrap();
        b.link_up(&node_a());
        while b.poll_send().is_some() {}
        let a = node_a();
        b.apply_remote(
            &a,
            &ControlMessage::RoomPeers {
                room_id: room(),
                peers: vec![peer("p", &["p1", "p2"]), peer("q", &[]), peer("s", &[])],
            },
        );
        assert_eq!(
            events(&mut b),
            vec![joined(&a, "p"), added(&a, "p", "p1"), joined(&a, "q")]
        );
        b.apply_remote(
            &a,
            &ControlMessage::PeerJoined {
                room_id: room(),
                peer: peer("t", &[]),
            },
        );
        b.apply_remote(
            &a,
            &ControlMessage::ProducerAdded {
                room_id: room(),
                peer_id: PeerId::from("p"),
                producer: producer("p3"),
            },
        );
        assert!(events(&mut b).is_empty());
        assert_eq!(b.remote_peers(&room()).len(), 2);
        assert_eq!(b.stats().refused_peers, 2);
        assert_eq!(b.stats().refused_producers, 2);

        // A remote may watch at most max_rooms rooms of ours.
        b.apply_remote(&a, &ControlMessage::RoomWatch { room_id: room() });
        b.apply_remote(
            &a,
            &ControlMessage::RoomWatch {
                room_id: RoomId::from("r2"),
            },
        );
        let sent: Vec<_> = std::iter::from_fn(|| b.poll_send()).collect();
        assert_eq!(
            sent,
            vec![(
                a.clone(),
                ControlMessage::RoomPeers {
                    room_id: room(),
                    peers: vec![],
                }
            )]
        );
        assert_eq!(b.stats().refused_rooms, 1);
    }
}
