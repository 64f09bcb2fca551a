//! [`ClusterDirectory`]: the room directory over a cluster registry (etcd, or in-process on one
//! node), sans-IO.
//!
//! Inputs are the [`RoomDirectory`] methods plus [`ClusterDirectory::apply_registry`] (what the
//! registry holds, see [`RegistryUpdate`]); outputs are drained with
//! [`ClusterDirectory::poll_event`] and [`ClusterDirectory::poll_registry_op`]. No clock, no
//! sockets, no tasks: the backend task and the worker do the I/O.
//!
//! **Writing.** The directory keeps every key this node publishes in [`ClusterDirectory::owned`]
//! (key → JSON value, layout in [`crate::discovery::keys`]): the node record; a room host key
//! for every room with a local peer; each local peer; each local producer. Every change
//! enqueues its puts and deletes in an order readers can follow (room host key, then peer,
//! then its producers; deletes in reverse). The first op, enqueued at construction, puts the
//! node record.
//!
//! **Reading.** Snapshots and changes build a cache of the whole prefix. A snapshot replaces the
//! cache, and only its differences are interpreted, so a re-listing after a compaction makes
//! events only for what changed meanwhile. Malformed keys and values are skipped, counted and
//! logged once per key and value. Entries under this node's id are never shown; one the
//! directory does not own (left by a previous run, or written by someone else) is deleted, and
//! an owned one with another value (or deleted) is put again.
//!
//! **Exposure.** What the worker sees of remote node N in watched room R:
//! - N is *listed* (its `nodes/N` record is present and valid) and not given up on
//!   ([`RoomDirectory::node_gone`], cleared by the next [`RoomDirectory::link_up`]): N's peers in R
//!   from the cache, each with those of its producers the cache has. A producer whose peer is
//!   not in the cache waits for it.
//! - N is not listed but its link is up: a *frozen* copy of what was shown for N when its record
//!   disappeared. Its lease expired (N lost the registry), yet N is alive and still pipes media
//!   to us, so its peers stay. When N is listed again the cache takes over (differences become
//!   events); when the link goes down first, the frozen copy goes.
//! - Otherwise nothing.
//!
//! Every input recomputes the pairs (room, node) it may affect and reports the difference with
//! the event grammar of [`crate::discovery::directory`]. A producer's pause state is not an
//! event (the pipe carries it); any other change of a producer is a removal and an addition, and
//! a changed peer (name, device) leaves and joins again. Past the [`DirectoryConfig`] bounds, a
//! remote node's extra peers and producers are not shown (the first in key order are).
//!
//! **Links.** N is *wanted* while it is listed with a `pipeAddr` and has peers (or a room host
//! key) in a watched room, or while it is frozen with something shown and its link is up. A
//! node given up on is still wanted, so the worker dials it again. Changes are reported as
//! [`DirectoryEvent::LinkWanted`] (before the joins they enable) and
//! [`DirectoryEvent::LinkUnwanted`] (after the removals). When N's record disappears and nothing
//! of N is shown any more, [`DirectoryEvent::NodeGone`] follows its removals.
//!
//! This core owns the directory state only: no transports, links or registry sessions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::discovery::directory::{
    push_peer_joined, push_peer_left, DirectoryConfig, DirectoryError, DirectoryEvent,
    RoomDirectory,
};
use crate::discovery::keys::{
    self, DrainRecord, NodeLoad, NodeRecord, NodeState, ParsedKey, PeerRecord, ProducerRecord,
    RoomHostRecord, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use crate::discovery::local::{count_refused, LocalRooms};
use crate::discovery::registry::{RegistryOp, RegistryUpdate};
use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::pipe::wire::{PeerInfo, ProducerInfo};

#[cfg(test)]
mod tests;
mod view;

pub use view::{ClusterView, LinkView, NodeView, PeerView, ProducerView, RoomView};

/// What one remote node shows in one room.
type Peers = BTreeMap<PeerId, PeerInfo>;

/// Counters of what a [`ClusterDirectory`] skipped, refused or repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStats {
    /// Registry entries skipped because their key or value is malformed (once per key and
    /// value).
    pub malformed: u64,
    /// Entries under this node's id it did not own, deleted.
    pub stale_own_deleted: u64,
    /// Owned entries put again because the registry had another value or none.
    pub own_republished: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Individual changes applied.
    pub changes: u64,
    /// Local rooms refused past [`DirectoryConfig::max_rooms`].
    pub refused_rooms: u64,
    /// Local peers refused past [`DirectoryConfig::max_peers_per_room`].
    pub refused_peers: u64,
    /// Local producers refused past [`DirectoryConfig::max_producers_per_peer`].
    pub refused_producers: u64,
}

count_refused!(ClusterStats);

/// A remote node's entries in one room, as the registry holds them.
#[derive(Debug, Default)]
struct RoomEntries {
    host: Option<RoomHostRecord>,
    peers: BTreeMap<PeerId, PeerRecord>,
    /// By peer; kept even when the peer key is absent (shown once it appears).
    producers: BTreeMap<PeerId, BTreeMap<ProducerId, ProducerRecord>>,
}

impl RoomEntries {
    fn is_empty(&self) -> bool {
        self.host.is_none() && self.peers.is_empty() && self.producers.is_empty()
    }
}

/// The registry contents: raw for diffing snapshots, parsed for exposure.
#[derive(Debug, Default)]
struct Cache {
    /// Every key and value under the prefix. Keys and values past the bounds are stored as a
    /// short fingerprint ([`bounded`]), enough to tell whether they changed.
    raw: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Valid node records.
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// Valid room entries, by node then room.
    rooms: BTreeMap<NodeId, BTreeMap<RoomId, RoomEntries>>,
    /// Keys under this node's id present in the registry (any value).
    own: BTreeSet<String>,
}

impl Cache {
    fn insert(&mut self, key: &ParsedKey, value: &[u8]) -> Result<(), keys::ValueError> {
        match key {
            ParsedKey::Node(node) => {
                let record = keys::parse_node_record(node, value)?;
                self.nodes.insert(node.clone(), record);
            }
            ParsedKey::RoomHost { room, node } => {
                let record = keys::parse_value(value)?;
                self.entries(node, room).host = Some(record);
            }
            ParsedKey::Peer { room, node, peer } => {
                let record = keys::parse_value(value)?;
                self.entries(node, room).peers.insert(peer.clone(), record);
            }
            ParsedKey::Producer {
                room,
                node,
                peer,
                producer,
            } => {
                let record = keys::parse_value(value)?;
                self.entries(node, room)
                    .producers
                    .entry(peer.clone())
                    .or_default()
                    .insert(producer.clone(), record);
            }
        }
        Ok(())
    }

    fn entries(&mut self, node: &NodeId, room: &RoomId) -> &mut RoomEntries {
        self.rooms
            .entry(node.clone())
            .or_default()
            .entry(room.clone())
            .or_default()
    }

    fn remove(&mut self, key: &ParsedKey) {
        let (room, node) = match key {
            ParsedKey::Node(node) => {
                self.nodes.remove(node);
                return;
            }
            ParsedKey::RoomHost { room, node }
            | ParsedKey::Peer { room, node, .. }
            | ParsedKey::Producer { room, node, .. } => (room, node),
        };
        let Some(rooms) = self.rooms.get_mut(node) else {
            return;
        };
        let Some(e) = rooms.get_mut(room) else {
            return;
        };
        match key {
            ParsedKey::RoomHost { .. } => e.host = None,
            ParsedKey::Peer { peer, .. } => {
                e.peers.remove(peer);
            }
            ParsedKey::Producer { peer, producer, .. } => {
                if let Some(ps) = e.producers.get_mut(peer) {
                    ps.remove(producer);
                    if ps.is_empty() {
                        e.producers.remove(peer);
                    }
                }
            }
            ParsedKey::Node(_) => {}
        }
        if e.is_empty() {
            rooms.remove(room);
            if rooms.is_empty() {
                self.rooms.remove(node);
            }
        }
    }

    fn room(&self, node: &NodeId, room: &RoomId) -> Option<&RoomEntries> {
        self.rooms.get(node)?.get(room)
    }
}

/// `bytes` as stored in [`Cache::raw`]: as is up to `max`, else a fingerprint that cannot be a
/// valid key or value (it starts with 0xFF), of the length and a hash.
fn bounded(bytes: &[u8], max: usize) -> Vec<u8> {
    if bytes.len() <= max {
        return bytes.to_vec();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let mut out = vec![0xFF, 0xFF];
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(&h.finish().to_be_bytes());
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Link {
    #[default]
    Unknown,
    Up,
    Down,
}

/// What the directory knows of a remote node beyond the cache.
#[derive(Debug, Default)]
struct Remote {
    link: Link,
    /// Given up on by the worker, until the next link up.
    gone: bool,
    /// Listed at the last settle (to see the record come and go).
    listed: bool,
    /// Its last valid record (kept while frozen: the address of a wanted link).
    record: Option<NodeRecord>,
    /// What was shown when its record disappeared with the link up, per watched room.
    frozen: Option<BTreeMap<RoomId, Peers>>,
    /// The address last sent in a `LinkWanted`, while wanted.
    wanted: Option<String>,
}

/// What one registry update touched: rooms per node (an empty set when only the node record
/// changed).
type Touched = BTreeMap<NodeId, BTreeSet<RoomId>>;

/// The sans-IO room directory over a registry. See the module docs.
#[derive(Debug)]
pub struct ClusterDirectory {
    /// This node's record, as published.
    local: NodeRecord,
    config: DirectoryConfig,
    /// The wall clock as last told ([`RoomDirectory::set_wall_clock`]).
    clock_ms: u64,
    /// This node's rooms, peers and producers.
    rooms: LocalRooms,
    owned: BTreeMap<String, String>,
    ops: VecDeque<RegistryOp>,
    revision: i64,
    cache: Cache,
    remotes: BTreeMap<NodeId, Remote>,
    /// What the worker was told, by node then room (non-empty maps only).
    exposed: BTreeMap<NodeId, BTreeMap<RoomId, Peers>>,
    /// Operators' drain requests (`drain/<node>`), by node.
    drains: BTreeMap<NodeId, DrainRecord>,
    events: VecDeque<DirectoryEvent>,
    stats: ClusterStats,
}

impl ClusterDirectory {
    /// A directory for the node `local` describes; enqueues the put of its record. The clock
    /// starts at `local.started_at_ms` until [`RoomDirectory::set_wall_clock`] is called.
    pub fn new(local: NodeRecord, config: DirectoryConfig) -> Self {
        let mut d = Self {
            clock_ms: local.started_at_ms,
            local,
            rooms: LocalRooms::new(config.clone()),
            config,
            owned: BTreeMap::new(),
            ops: VecDeque::new(),
            revision: 0,
            cache: Cache::default(),
            remotes: BTreeMap::new(),
            exposed: BTreeMap::new(),
            drains: BTreeMap::new(),
            events: VecDeque::new(),
            stats: ClusterStats::default(),
        };
        d.put_node_record();
        d
    }

    /// Every key this node publishes, with its value.
    pub fn owned(&self) -> &BTreeMap<String, String> {
        &self.owned
    }

    /// This node's record as published.
    pub fn local_record(&self) -> &NodeRecord {
        &self.local
    }

    /// What was skipped, refused or repaired so far.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The revision of the last registry update applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next write to the registry.
    pub fn poll_registry_op(&mut self) -> Option<RegistryOp> {
        self.ops.pop_front()
    }

    /// The next change to the remote view.
    pub fn poll_event(&mut self) -> Option<DirectoryEvent> {
        self.events.pop_front()
    }

    /// What the registry holds: a snapshot replaces the cache, changes update it; either way
    /// only differences are interpreted.
    pub fn apply_registry(&mut self, update: RegistryUpdate) {
        let mut touched = BTreeMap::new();
        let mut own = BTreeSet::new();
        match update {
            RegistryUpdate::Snapshot { revision, kvs } => {
                self.stats.snapshots += 1;
                self.revision = revision;
                let mut listed: BTreeMap<Vec<u8>, (&[u8], &[u8])> = BTreeMap::new();
                for (k, v) in &kvs {
                    listed.insert(bounded(k, MAX_KEY_LEN), (k, v));
                }
                let gone: Vec<Vec<u8>> = self
                    .cache
                    .raw
                    .keys()
                    .filter(|k| !listed.contains_key(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.apply_change(&k, None, &mut touched, &mut own);
                }
                for (k, v) in listed.values() {
                    self.apply_change(k, Some(v), &mut touched, &mut own);
                }
                // A full listing: check every own entry, not only those that changed.
                own.extend(self.cache.own.iter().cloned());
                own.extend(self.owned.keys().cloned());
            }
            RegistryUpdate::Changes { revision, changes } => {
                self.revision = revision;
                for c in &changes {
                    self.stats.changes += 1;
                    self.apply_change(&c.key, c.value.as_deref(), &mut touched, &mut own);
                }
            }
        }
        for key in own {
            self.reconcile_own(key);
        }
        for (node, rooms) in touched {
            self.settle(&node, rooms, false);
        }
    }

    /// Apply one key's new value (`None`: deleted) to the cache.
    fn apply_change(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        touched: &mut Touched,
        own: &mut BTreeSet<String>,
    ) {
        let raw_key = bounded(key, MAX_KEY_LEN);
        let raw_value = value.map(|v| bounded(v, MAX_VALUE_LEN));
        if self.cache.raw.get(&raw_key) == raw_value.as_ref() {
            return;
        }
        match raw_value {
            Some(v) => self.cache.raw.insert(raw_key, v),
            None => self.cache.raw.remove(&raw_key),
        };
        if let Some(node) = keys::parse_drain_key(key) {
            self.apply_drain(key, node, value);
            return;
        }
        let parsed = match keys::parse_key(key) {
            Ok(p) => p,
            Err(e) => {
                if value.is_some() {
                    self.malformed(key, &e);
                }
                return;
            }
        };
        if parsed.node() == &self.local.node_id {
            let text = parsed.to_key();
            if value.is_some() {
                self.cache.own.insert(text.clone());
            } else {
                self.cache.own.remove(&text);
            }
            own.insert(text);
        }
        match value {
            None => self.cache.remove(&parsed),
            Some(v) => {
                if let Err(e) = self.cache.insert(&parsed, v) {
                    self.malformed(key, &e);
                    self.cache.remove(&parsed);
                }
            }
        }
        let rooms = touched.entry(parsed.node().clone()).or_default();
        if let Some(room) = parsed.room() {
            rooms.insert(room.clone());
        }
    }

    /// An operator's drain request appeared, changed or went away. Only this node's own
    /// request becomes an event ([`DirectoryEvent::LocalDrain`]); others are shown in the view.
    fn apply_drain(
        &mut self,
        key: &[u8],
        node: Result<NodeId, keys::KeyError>,
        value: Option<&[u8]>,
    ) {
        let node = match node {
            Ok(n) => n,
            Err(e) => {
                if value.is_some() {
                    self.malformed(key, &e);
                }
                return;
            }
        };
        let record = match value.map(keys::parse_value::<DrainRecord>) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                // A request we cannot read still asks for a drain: without a deadline.
                self.malformed(key, &e);
                Some(DrainRecord::default())
            }
        };
        let before = match &record {
            Some(r) => self.drains.insert(node.clone(), r.clone()),
            None => self.drains.remove(&node),
        };
        if node == self.local.node_id && before != record {
            self.events.push_back(DirectoryEvent::LocalDrain {
                draining: record.is_some(),
                deadline_ms: record.and_then(|r| r.deadline_ms),
            });
        }
    }

    /// Operators' drain requests, by node.
    pub fn drains(&self) -> &BTreeMap<NodeId, DrainRecord> {
        &self.drains
    }

    fn malformed(&mut self, key: &[u8], error: &dyn std::error::Error) {
        self.stats.malformed += 1;
        let shown = String::from_utf8_lossy(&key[..key.len().min(200)]);
        tracing::warn!(key = %shown, %error, "registry: skipping malformed entry");
    }

    /// Make the registry hold what this node owns at `key`.
    fn reconcile_own(&mut self, key: String) {
        let present = self.cache.raw.get(key.as_bytes()).map(Vec::as_slice);
        match self.owned.get(&key) {
            None if present.is_some() => {
                tracing::info!(%key, "registry: deleting an entry of this node it does not own");
                self.stats.stale_own_deleted += 1;
                self.ops.push_back(RegistryOp::Delete { key });
            }
            Some(value) if present != Some(value.as_bytes()) => {
                self.stats.own_republished += 1;
                let value = value.clone();
                self.ops.push_back(RegistryOp::Put { key, value });
            }
            _ => {}
        }
    }

    /// What `node` should show in `room` now.
    fn target(&self, room: &RoomId, node: &NodeId) -> Peers {
        if node == &self.local.node_id || !self.rooms.is_watched(room) {
            return Peers::new();
        }
        let remote = self.remotes.get(node);
        if remote.is_some_and(|r| r.gone) {
            return Peers::new();
        }
        if self.cache.nodes.contains_key(node) {
            let Some(e) = self.cache.room(node, room) else {
                return Peers::new();
            };
            return e
                .peers
                .iter()
                .take(self.config.max_peers_per_room)
                .map(|(id, rec)| {
                    let mut peer = rec.to_info(id);
                    if let Some(ps) = e.producers.get(id) {
                        peer.producers = ps
                            .iter()
                            .take(self.config.max_producers_per_peer)
                            .map(|(pid, p)| p.to_info(pid))
                            .collect();
                    }
                    (id.clone(), peer)
                })
                .collect();
        }
        match remote {
            Some(r) if r.link == Link::Up => r
                .frozen
                .as_ref()
                .and_then(|f| f.get(room))
                .cloned()
                .unwrap_or_default(),
            _ => Peers::new(),
        }
    }

    /// Where the worker should keep a link to `node`, if it should.
    fn wanted_addr(&self, node: &NodeId) -> Option<String> {
        if node == &self.local.node_id {
            return None;
        }
        if let Some(record) = self.cache.nodes.get(node) {
            let addr = record.pipe_addr.as_ref().filter(|a| !a.is_empty())?;
            let hosts = self.cache.rooms.get(node)?.iter().any(|(room, e)| {
                (e.host.is_some() || !e.peers.is_empty()) && self.rooms.is_watched(room)
            });
            return hosts.then(|| addr.clone());
        }
        let r = self.remotes.get(node)?;
        let showing = r
            .frozen
            .as_ref()
            .is_some_and(|f| f.values().any(|p| !p.is_empty()));
        if r.link != Link::Up || !showing {
            return None;
        }
        r.record
            .as_ref()?
            .pipe_addr
            .clone()
            .filter(|a| !a.is_empty())
    }

    /// Recompute what `node` shows in `rooms` and report the differences; every room it may
    /// show something in when `link_input` (a link or give-up changed) or its listing changed.
    fn settle(&mut self, node: &NodeId, rooms: BTreeSet<RoomId>, link_input: bool) {
        if node == &self.local.node_id {
            return;
        }
        let listed = self.cache.nodes.contains_key(node);
        let had_exposure = self.exposed.contains_key(node);
        let r = self.remotes.entry(node.clone()).or_default();
        let was_listed = r.listed;
        if was_listed != listed {
            r.listed = listed;
            // Freeze what is shown now: the removals the same update brought are not applied
            // to `exposed` yet.
            r.frozen = match (listed, r.link) {
                (false, Link::Up) => self.exposed.get(node).cloned(),
                _ => None,
            };
        }
        if let Some(record) = self.cache.nodes.get(node) {
            r.record = Some(record.clone());
        }
        let whole_node = link_input || was_listed != listed;

        let want = self.wanted_addr(node);
        if let Some(addr) = &want {
            let r = self.remotes.entry(node.clone()).or_default();
            if r.wanted.as_ref() != Some(addr) {
                r.wanted = Some(addr.clone());
                self.events.push_back(DirectoryEvent::LinkWanted {
                    node: node.clone(),
                    pipe_addr: addr.clone(),
                });
            }
        }

        let rooms: Vec<RoomId> = if whole_node {
            self.relevant_rooms(node)
        } else {
            rooms
                .into_iter()
                .filter(|room| self.rooms.is_watched(room) || self.exposed_in(node, room))
                .collect()
        };
        for room in rooms {
            self.refresh_pair(&room, node);
        }

        if whole_node && !listed && !self.exposed.contains_key(node) && (was_listed || had_exposure)
        {
            self.events
                .push_back(DirectoryEvent::NodeGone { node: node.clone() });
        }
        if want.is_none() {
            let r = self.remotes.entry(node.clone()).or_default();
            if r.wanted.take().is_some() {
                self.events
                    .push_back(DirectoryEvent::LinkUnwanted { node: node.clone() });
            }
        }
        self.prune(node);
    }

    /// Watched rooms where `node` shows, has entries, or has a frozen copy.
    fn relevant_rooms(&self, node: &NodeId) -> Vec<RoomId> {
        let mut rooms: BTreeSet<&RoomId> = BTreeSet::new();
        if let Some(m) = self.exposed.get(node) {
            rooms.extend(m.keys());
        }
        if let Some(m) = self.cache.rooms.get(node) {
            rooms.extend(m.keys());
        }
        if let Some(f) = self.remotes.get(node).and_then(|r| r.frozen.as_ref()) {
            rooms.extend(f.keys());
        }
        rooms
            .into_iter()
            .filter(|room| self.rooms.is_watched(room) || self.exposed_in(node, room))
            .cloned()
            .collect()
    }

    fn exposed_in(&self, node: &NodeId, room: &RoomId) -> bool {
        self.exposed.get(node).is_some_and(|m| m.contains_key(room))
    }

    fn refresh_pair(&mut self, room: &RoomId, node: &NodeId) {
        let new = self.target(room, node);
        let old = match self.exposed.get_mut(node) {
            Some(m) => {
                let old = m.remove(room).unwrap_or_default();
                if m.is_empty() {
                    self.exposed.remove(node);
                }
                old
            }
            None => Peers::new(),
        };
        push_diff(&mut self.events, room, node, &old, &new);
        if !new.is_empty() {
            self.exposed
                .entry(node.clone())
                .or_default()
                .insert(room.clone(), new);
        }
    }

    /// Forget a remote node nothing depends on any more.
    fn prune(&mut self, node: &NodeId) {
        let idle = self.remotes.get(node).is_some_and(|r| {
            !r.listed && r.link != Link::Up && !r.gone && r.frozen.is_none() && r.wanted.is_none()
        });
        if idle && !self.exposed.contains_key(node) {
            self.remotes.remove(node);
        }
    }

    fn link_changed(&mut self, node: &NodeId, f: impl FnOnce(&mut Remote)) {
        if node == &self.local.node_id {
            return;
        }
        f(self.remotes.entry(node.clone()).or_default());
        self.settle(node, BTreeSet::new(), true);
    }

    /// The pipe link to `node` is up; a give-up is cleared.
    pub fn link_up(&mut self, node: &NodeId) {
        self.link_changed(node, |r| {
            r.link = Link::Up;
            r.gone = false;
        });
    }

    /// The pipe link to `node` is down. A listed node keeps showing; a frozen one is dropped.
    pub fn link_down(&mut self, node: &NodeId) {
        self.link_changed(node, |r| {
            r.link = Link::Down;
            if !r.listed {
                r.frozen = None;
            }
        });
    }

    /// The worker gave up on `node`: hide it until its link is up again. It stays wanted.
    pub fn node_gone(&mut self, node: &NodeId) {
        self.link_changed(node, |r| r.gone = true);
    }

    /// Set `key` to `value` in the registry, unless it already is.
    fn put(&mut self, key: String, value: String) {
        if self.owned.get(&key) == Some(&value) {
            return;
        }
        self.owned.insert(key.clone(), value.clone());
        self.ops.push_back(RegistryOp::Put { key, value });
    }

    fn delete(&mut self, key: String) {
        if self.owned.remove(&key).is_some() {
            self.ops.push_back(RegistryOp::Delete { key });
        }
    }

    fn put_node_record(&mut self) {
        match keys::encode_value(&self.local) {
            Ok(value) => self.put(keys::node_key(&self.local.node_id), value),
            // Only a record past MAX_VALUE_LEN fails, which no configuration makes.
            Err(e) => tracing::error!(error = %e, "cannot publish this node's record"),
        }
    }

    fn peer_entry(
        &self,
        room: &RoomId,
        peer: &PeerInfo,
    ) -> Result<(String, String), DirectoryError> {
        let key = keys::peer_key(room, &self.local.node_id, &peer.peer_id);
        let value = keys::encode_value(&PeerRecord::from_info(peer));
        publishable(
            &peer.peer_id,
            &[room.as_str(), peer.peer_id.as_str()],
            key,
            value,
        )
    }

    fn producer_entry(
        &self,
        room: &RoomId,
        peer_id: &PeerId,
        producer: &ProducerInfo,
    ) -> Result<(String, String), DirectoryError> {
        let key = keys::producer_key(room, &self.local.node_id, peer_id, &producer.producer_id);
        let value = keys::encode_value(&ProducerRecord::from_info(producer));
        publishable(
            &producer.producer_id,
            &[
                room.as_str(),
                peer_id.as_str(),
                producer.producer_id.as_str(),
            ],
            key,
            value,
        )
    }

    /// Every remote node with something in `room` (entries, frozen copy or shown).
    fn nodes_in(&self, room: &RoomId) -> BTreeSet<NodeId> {
        let mut nodes: BTreeSet<NodeId> = self
            .cache
            .rooms
            .iter()
            .filter(|(_, rooms)| rooms.contains_key(room))
            .map(|(n, _)| n.clone())
            .collect();
        nodes.extend(
            self.exposed
                .iter()
                .filter(|(_, rooms)| rooms.contains_key(room))
                .map(|(n, _)| n.clone()),
        );
        nodes.extend(
            self.remotes
                .iter()
                .filter(|(_, r)| r.frozen.as_ref().is_some_and(|f| f.contains_key(room)))
                .map(|(n, _)| n.clone()),
        );
        nodes
    }
}

/// The key and value of an entry, or why it cannot be published.
fn publishable(
    what: &dyn std::fmt::Display,
    ids: &[&str],
    key: String,
    value: Result<String, keys::ValueError>,
) -> Result<(String, String), DirectoryError> {
    let refuse = |reason: String| DirectoryError::Unpublishable {
        what: what.to_string(),
        reason,
    };
    if ids.iter().any(|id| id.is_empty()) {
        return Err(refuse("empty id".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(refuse(format!(
            "key of {} bytes (max {MAX_KEY_LEN})",
            key.len()
        )));
    }
    let value = value.map_err(|e| refuse(e.to_string()))?;
    Ok((key, value))
}

/// Same producer as far as consumers are concerned (pause state aside).
fn same_media(a: &ProducerInfo, b: &ProducerInfo) -> bool {
    a.producer_id == b.producer_id
        && a.kind == b.kind
        && a.rtp_parameters == b.rtp_parameters
        && a.app_data == b.app_data
}

/// The same peer as far as consumers go: a new display name is a rename, not a new peer.
fn same_peer(a: &PeerInfo, b: &PeerInfo) -> bool {
    a.device == b.device
}

/// Report the change from `old` to `new` for (`room`, `node`): every removal, then every
/// addition.
fn push_diff(
    events: &mut VecDeque<DirectoryEvent>,
    room: &RoomId,
    node: &NodeId,
    old: &Peers,
    new: &Peers,
) {
    for (id, before) in old {
        match new.get(id) {
            Some(after) if same_peer(before, after) => {
                for p in &before.producers {
                    if !after.producers.iter().any(|q| same_media(p, q)) {
                        events.push_back(DirectoryEvent::RemoteProducerRemoved {
                            room: room.clone(),
                            node: node.clone(),
                            peer_id: id.clone(),
                            producer_id: p.producer_id.clone(),
                        });
                    }
                }
            }
            _ => push_peer_left(events, room, node, before.clone()),
        }
    }
    for (id, after) in new {
        match old.get(id) {
            Some(before) if same_peer(before, after) => {
                if before.display_name != after.display_name {
                    events.push_back(DirectoryEvent::RemotePeerRenamed {
                        room: room.clone(),
                        node: node.clone(),
                        peer_id: id.clone(),
                        display_name: after.display_name.clone(),
                        old_display_name: before.display_name.clone(),
                    });
                }
                for p in &after.producers {
                    if !before.producers.iter().any(|q| same_media(q, p)) {
                        events.push_back(DirectoryEvent::RemoteProducerAdded {
                            room: room.clone(),
                            node: node.clone(),
                            peer_id: id.clone(),
                            producer: p.clone(),
                        });
                    }
                }
            }
            _ => push_peer_joined(events, room, node, after),
        }
    }
}

impl RoomDirectory for ClusterDirectory {
    fn local_peer_joined(&mut self, room: &RoomId, peer: PeerInfo) -> Result<(), DirectoryError> {
        self.rooms
            .admit_peer(room, &peer)
            .inspect_err(|e| self.stats.count_refused(e))?;
        let mut entries = vec![self.peer_entry(room, &peer)?];
        let mut ids = BTreeSet::new();
        for p in &peer.producers {
            if !ids.insert(&p.producer_id) {
                return Err(DirectoryError::ProducerExists {
                    producer_id: p.producer_id.clone(),
                });
            }
            entries.push(self.producer_entry(room, &peer.peer_id, p)?);
        }
        if self.rooms.insert_peer(room, peer) {
            let host = RoomHostRecord {
                since_ms: self.clock_ms,
            };
            match keys::encode_value(&host) {
                Ok(value) => self.put(keys::room_host_key(room, &self.local.node_id), value),
                // A record of one number always encodes.
                Err(e) => tracing::error!(error = %e, "cannot publish a room host record"),
            }
        }
        for (key, value) in entries {
            self.put(key, value);
        }
        Ok(())
    }

    fn local_peer_left(&mut self, room: &RoomId, peer_id: &PeerId) {
        let Some((peer, last)) = self.rooms.remove_peer(room, peer_id) else {
            return;
        };
        let node = self.local.node_id.clone();
        for p in &peer.producers {
            self.delete(keys::producer_key(room, &node, peer_id, &p.producer_id));
        }
        self.delete(keys::peer_key(room, &node, peer_id));
        if last {
            self.delete(keys::room_host_key(room, &node));
        }
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
        let (key, value) = self.producer_entry(room, peer_id, &producer)?;
        self.rooms.insert_producer(room, peer_id, producer);
        self.put(key, value);
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
        self.delete(keys::producer_key(
            room,
            &self.local.node_id,
            peer_id,
            producer_id,
        ));
    }

    fn local_peer_renamed(&mut self, room: &RoomId, peer_id: &PeerId, display_name: &str) {
        let Some(peer) = self.rooms.rename_peer(room, peer_id, display_name).cloned() else {
            return;
        };
        match self.peer_entry(room, &peer) {
            Ok((key, value)) => self.put(key, value),
            Err(e) => tracing::warn!(error = %e, "cannot re-publish a renamed peer"),
        }
    }

    fn local_producer_paused(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer_id: &ProducerId,
        paused: bool,
    ) {
        let Some(producer) = self
            .rooms
            .set_paused(room, peer_id, producer_id, paused)
            .cloned()
        else {
            return;
        };
        // It was publishable when added, and pausing does not change its size meaningfully.
        match self.producer_entry(room, peer_id, &producer) {
            Ok((key, value)) => self.put(key, value),
            Err(e) => tracing::warn!(error = %e, "cannot re-publish a paused producer"),
        }
    }

    fn watch_room(&mut self, room: &RoomId) -> Result<(), DirectoryError> {
        if !self
            .rooms
            .watch(room)
            .inspect_err(|e| self.stats.count_refused(e))?
        {
            return Ok(());
        }
        for node in self.nodes_in(room) {
            self.settle(&node, BTreeSet::from([room.clone()]), false);
        }
        Ok(())
    }

    fn unwatch_room(&mut self, room: &RoomId) {
        if !self.rooms.unwatch(room) {
            return;
        }
        let nodes = self.nodes_in(room);
        // A frozen copy holds what was shown, and nothing is shown in an unwatched room.
        for r in self.remotes.values_mut() {
            if let Some(f) = r.frozen.as_mut() {
                f.remove(room);
                if f.is_empty() {
                    r.frozen = None;
                }
            }
        }
        for node in nodes {
            self.settle(&node, BTreeSet::from([room.clone()]), false);
        }
    }

    fn remote_peers(&self, room: &RoomId) -> Vec<(NodeId, PeerInfo)> {
        self.exposed
            .iter()
            .filter_map(|(id, rooms)| Some((id, rooms.get(room)?)))
            .flat_map(|(id, peers)| peers.values().map(move |p| (id.clone(), p.clone())))
            .collect()
    }

    fn poll_event(&mut self) -> Option<DirectoryEvent> {
        ClusterDirectory::poll_event(self)
    }

    fn link_up(&mut self, node: &NodeId) {
        ClusterDirectory::link_up(self, node)
    }

    fn link_down(&mut self, node: &NodeId) {
        ClusterDirectory::link_down(self, node)
    }

    fn node_gone(&mut self, node: &NodeId) {
        ClusterDirectory::node_gone(self, node)
    }

    fn apply_registry(&mut self, update: RegistryUpdate) {
        ClusterDirectory::apply_registry(self, update)
    }

    fn poll_registry_op(&mut self) -> Option<RegistryOp> {
        ClusterDirectory::poll_registry_op(self)
    }

    fn set_local_load(&mut self, load: NodeLoad) {
        if self.local.load != load {
            self.local.load = load;
            self.put_node_record();
        }
    }

    fn set_local_state(&mut self, state: NodeState) {
        if self.local.state != state {
            self.local.state = state;
            self.put_node_record();
        }
    }

    fn set_wall_clock(&mut self, unix_ms: u64) {
        self.clock_ms = unix_ms;
    }

    fn cluster_view(&self) -> Option<ClusterView> {
        Some(ClusterDirectory::cluster_view(self))
    }
}
