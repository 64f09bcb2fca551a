//! [`ClusterView`]: the read-only picture of a [`ClusterDirectory`] for the admin endpoint
//! and operators. Built on demand; never part of the directory's state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ClusterDirectory, ClusterStats, Link};
use crate::discovery::keys::{DrainRecord, NodeRecord};
use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::router::rtp_parameters::MediaKind;

/// The state of the pipe link to a node, as the directory was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkView {
    /// Never reported.
    #[default]
    Unknown,
    /// Up.
    Up,
    /// Down (may come back).
    Down,
    /// Given up on ([`node_gone`]) until the next link up.
    ///
    /// [`node_gone`]: crate::discovery::directory::RoomDirectory::node_gone
    Gone,
    /// This node.
    Local,
}

/// A node in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Its record: the registry's for listed nodes, the last one seen for frozen nodes, and
    /// the one this node publishes for itself.
    pub record: NodeRecord,
    /// Its record is in the registry.
    pub listed: bool,
    /// Unlisted, but still shown as it was (link up).
    pub frozen: bool,
    /// The link state.
    pub link: LinkView,
    /// The worker is asked to keep a link to it.
    pub wanted: bool,
    /// An operator's request that it drain (`pipemesh drain`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainRecord>,
}

/// A producer in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerView {
    /// The producer.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Paused at the origin.
    pub paused: bool,
}

/// A peer in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// The node it is connected to.
    pub node: NodeId,
    /// The peer.
    pub peer_id: PeerId,
    /// Its name.
    pub display_name: String,
    /// Its producers in the registry.
    pub producers: Vec<ProducerView>,
}

/// A room in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    /// The room.
    pub room: RoomId,
    /// This node watches it (has local peers in it).
    pub watched: bool,
    /// Nodes with a room host key.
    pub hosts: Vec<NodeId>,
    /// Its peers in the registry, on every node.
    pub peers: Vec<PeerView>,
}

/// A read-only picture of the registry as one node's directory sees it, for the admin endpoint
/// and operators. Rooms and peers are the registry's (this node's included); nodes are the
/// listed ones plus frozen ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This node.
    pub local_node: NodeId,
    /// The registry revision of the last update applied.
    pub revision: i64,
    /// Nodes, by id.
    pub nodes: Vec<NodeView>,
    /// Rooms, by id.
    pub rooms: Vec<RoomView>,
    /// Counters.
    pub stats: ClusterStats,
}

impl ClusterDirectory {
    /// A read-only picture of the cluster as this directory sees it.
    pub fn cluster_view(&self) -> ClusterView {
        let mut nodes = Vec::new();
        let local = &self.local.node_id;
        let mut ids: BTreeSet<&NodeId> = self.cache.nodes.keys().collect();
        ids.insert(local);
        ids.extend(
            self.remotes
                .iter()
                .filter(|(_, r)| r.frozen.is_some() && r.record.is_some())
                .map(|(n, _)| n),
        );
        for id in ids {
            let remote = self.remotes.get(id);
            let record = if id == local {
                Some(&self.local)
            } else {
                self.cache
                    .nodes
                    .get(id)
                    .or_else(|| remote.and_then(|r| r.record.as_ref()))
            };
            let Some(record) = record else { continue };
            let link = match remote {
                _ if id == local => LinkView::Local,
                Some(r) if r.gone => LinkView::Gone,
                Some(r) => match r.link {
                    Link::Unknown => LinkView::Unknown,
                    Link::Up => LinkView::Up,
                    Link::Down => LinkView::Down,
                },
                None => LinkView::Unknown,
            };
            nodes.push(NodeView {
                record: record.clone(),
                listed: self.cache.nodes.contains_key(id),
                frozen: remote.is_some_and(|r| r.frozen.is_some()),
                link,
                wanted: remote.is_some_and(|r| r.wanted.is_some()),
                drain: self.drains.get(id).cloned(),
            });
        }

        let mut rooms: BTreeMap<&RoomId, RoomView> = BTreeMap::new();
        for (node, node_rooms) in &self.cache.rooms {
            for (room, e) in node_rooms {
                let view = rooms.entry(room).or_insert_with(|| RoomView {
                    room: room.clone(),
                    watched: self.rooms.is_watched(room),
                    hosts: Vec::new(),
                    peers: Vec::new(),
                });
                if e.host.is_some() {
                    view.hosts.push(node.clone());
                }
                for (peer_id, p) in &e.peers {
                    let producers = e
                        .producers
                        .get(peer_id)
                        .into_iter()
                        .flatten()
                        .map(|(id, q)| ProducerView {
                            producer_id: id.clone(),
                            kind: q.kind,
                            paused: q.paused,
                        })
                        .collect();
                    view.peers.push(PeerView {
                        node: node.clone(),
                        peer_id: peer_id.clone(),
                        display_name: p.display_name.clone(),
                        producers,
                    });
                }
            }
        }
        ClusterView {
            local_node: local.clone(),
            revision: self.revision,
            nodes,
            rooms: rooms.into_values().collect(),
            stats: self.stats.clone(),
        }
    }
}
