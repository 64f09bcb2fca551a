//! Routing of a producer across the cluster: which node each node that needs it pipes it from.
//! Pure and sans-IO: the inputs are what the directory knows, the output a [`Plan`].
//!
//! - [`RoutingMode::Mesh`]: every node that needs the producer pipes it from its origin (one
//!   copy per node leaves the origin).
//! - [`RoutingMode::Tree`]: a node in the origin's region pipes from the origin; in any other
//!   region Y one *relay* R_Y pipes from the origin and the other nodes of Y pipe from R_Y, so
//!   the producer crosses into each region once. R_Y is the alive host of the room in Y with
//!   the highest rendezvous score [`score`]`(producer, node)`, serving nodes before draining
//!   ones (ties, which need a 64-bit collision, go to the smaller node id). Rendezvous hashing
//!   spreads the relays of a room's producers over the region's nodes, and the relay only
//!   changes when it stops being a candidate (leaves the room, drains, dies) or a node that
//!   scores higher becomes one.
//!
//! Every route records its whole path origin → … → node; [`Plan::check`] verifies that the
//! plan is a tree rooted at the origin (no path repeats a node, every parent is itself routed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::discovery::cluster::{ClusterView, LinkView};
use crate::discovery::keys::NodeState;
use crate::ids::{NodeId, ProducerId, RoomId};

/// How producers are piped between nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Every node pipes each producer from its origin.
    Mesh,
    /// Each producer enters each other region once, through a relay node there.
    #[default]
    Tree,
}

impl fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutingMode::Mesh => "mesh",
            RoutingMode::Tree => "tree",
        })
    }
}

impl FromStr for RoutingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mesh" => Ok(RoutingMode::Mesh),
            "tree" => Ok(RoutingMode::Tree),
            other => Err(format!("unknown routing mode {other:?} (tree or mesh)")),
        }
    }
}

/// A node as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteNode {
    /// The node.
    pub id: NodeId,
    /// Its region (operator-defined; the empty string is a region like any other).
    pub region: String,
    /// Draining: a relay only when its region has no serving candidate.
    pub draining: bool,
    /// Alive (listed and reachable); a dead node is never routed to or through.
    pub alive: bool,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The origin is not among the known nodes, or not alive.
    #[error("origin node {0} unknown or not alive")]
    OriginUnavailable(NodeId),
}

/// How one node gets the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The node it pipes from.
    pub parent: NodeId,
    /// origin → … → parent → the node.
    pub path: Vec<NodeId>,
}

/// Where a producer flows: a route for every node that needs it (not the origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The producer's node.
    pub origin: NodeId,
    /// By node.
    pub routes: BTreeMap<NodeId, Route>,
}

/// A defect [`Plan::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanDefect {
    /// A path repeats a node.
    #[error("path to {0} repeats a node")]
    Loop(NodeId),
    /// A path does not run from the origin to its node through its parent.
    #[error("path to {0} is not origin → … → parent → node")]
    BadPath(NodeId),
    /// A parent is neither the origin nor routed itself.
    #[error("parent of {0} does not have the producer")]
    Orphan(NodeId),
    /// The origin has a route.
    #[error("the origin is routed")]
    OriginRouted,
}

/// The rendezvous score of `node` for `producer`: a stable 64-bit hash, the same on every node
/// and every version (so all nodes choose the same relay without talking). FNV-1a (64-bit)
/// over the producer id, a 0xFF separator (never in UTF-8) and the node id, then the
/// SplitMix64 finalizer so that ids differing in their last bytes still spread over the whole
/// range. Changing this function changes relays cluster-wide: a mixed-version cluster would
/// choose different relays (still loop-free, as each node checks the path it is offered).
pub fn score(producer: &ProducerId, node: &NodeId) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let bytes = producer
        .as_str()
        .bytes()
        .chain(std::iter::once(0xFF))
        .chain(node.as_str().bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The relay among `candidates` (alive hosts of the room in one region, not the origin) for
/// `producer`: serving before draining, then the highest [`score`], then the smaller id.
pub fn choose_relay<'a>(
    producer: &ProducerId,
    candidates: impl IntoIterator<Item = &'a RouteNode>,
) -> Option<&'a RouteNode> {
    candidates.into_iter().max_by(|a, b| {
        (!a.draining, score(producer, &a.id))
            .cmp(&(!b.draining, score(producer, &b.id)))
            // max_by keeps the last maximum; reversing the id order makes the smaller id win.
            .then_with(|| b.id.cmp(&a.id))
    })
}

/// The plan for `producer` of `origin`, given the `nodes` known and the room's `hosts` (the
/// nodes with peers in the room: they need the producer). Hosts that are unknown, dead, or the
/// origin get no route.
pub fn plan(
    nodes: &[RouteNode],
    hosts: &BTreeSet<NodeId>,
    producer: &ProducerId,
    origin: &NodeId,
    mode: RoutingMode,
) -> Result<Plan, RoutingError> {
    let by_id: BTreeMap<&NodeId, &RouteNode> = nodes.iter().map(|n| (&n.id, n)).collect();
    let Some(o) = by_id.get(origin).filter(|n| n.alive) else {
        return Err(RoutingError::OriginUnavailable(origin.clone()));
    };
    let needing: Vec<&RouteNode> = hosts
        .iter()
        .filter(|h| *h != origin)
        .filter_map(|h| by_id.get(h).copied())
        .filter(|n| n.alive)
        .collect();
    let direct = |n: &RouteNode| Route {
        parent: origin.clone(),
        path: vec![origin.clone(), n.id.clone()],
    };
    let mut routes = BTreeMap::new();
    match mode {
        RoutingMode::Mesh => {
            for n in needing {
                routes.insert(n.id.clone(), direct(n));
            }
        }
        RoutingMode::Tree => {
            let mut by_region: BTreeMap<&str, Vec<&RouteNode>> = BTreeMap::new();
            for n in needing {
                by_region.entry(n.region.as_str()).or_default().push(n);
            }
            for (region, members) in by_region {
                if region == o.region {
                    for n in members {
                        routes.insert(n.id.clone(), direct(n));
                    }
                    continue;
                }
                let relay = choose_relay(producer, members.iter().copied())
                    .expect("a region in the map has a member");
                routes.insert(relay.id.clone(), direct(relay));
                for n in members.iter().filter(|n| n.id != relay.id) {
                    routes.insert(
                        n.id.clone(),
                        Route {
                            parent: relay.id.clone(),
                            path: vec![origin.clone(), relay.id.clone(), n.id.clone()],
                        },
                    );
                }
            }
        }
    }
    Ok(Plan {
        origin: origin.clone(),
        routes,
    })
}

impl Plan {
    /// The node `node` pipes from (`None` for the origin and nodes that do not need it).
    pub fn parent(&self, node: &NodeId) -> Option<&NodeId> {
        self.routes.get(node).map(|r| &r.parent)
    }

    /// origin → … → `node`; just the origin for the origin.
    pub fn path(&self, node: &NodeId) -> Option<Vec<NodeId>> {
        if node == &self.origin {
            return Some(vec![self.origin.clone()]);
        }
        self.routes.get(node).map(|r| r.path.clone())
    }

    /// The nodes that pipe from `node`.
    pub fn children(&self, node: &NodeId) -> Vec<NodeId> {
        self.routes
            .iter()
            .filter(|(_, r)| &r.parent == node)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Copies piped (one per route).
    pub fn copies(&self) -> usize {
        self.routes.len()
    }

    /// Copies leaving the origin.
    pub fn copies_from_origin(&self) -> usize {
        self.children(&self.origin).len()
    }

    /// Verifies the plan is a tree rooted at the origin. See [`PlanDefect`].
    pub fn check(&self) -> Result<(), PlanDefect> {
        if self.routes.contains_key(&self.origin) {
            return Err(PlanDefect::OriginRouted);
        }
        for (node, r) in &self.routes {
            let unique: BTreeSet<&NodeId> = r.path.iter().collect();
            if unique.len() != r.path.len() {
                return Err(PlanDefect::Loop(node.clone()));
            }
            let n = r.path.len();
            if n < 2
                || r.path[0] != self.origin
                || &r.path[n - 1] != node
                || r.path[n - 2] != r.parent
            {
                return Err(PlanDefect::BadPath(node.clone()));
            }
            // The parent has the producer, along the same path.
            match self.path(&r.parent) {
                Some(p) if p[..] == r.path[..n - 1] => {}
                Some(_) => return Err(PlanDefect::BadPath(node.clone())),
                None => return Err(PlanDefect::Orphan(node.clone())),
            }
        }
        Ok(())
    }
}

/// Whether `node` may subscribe to a stream that reached its parent along `path` (origin → …
/// → parent): no, when `node` is already on it (the subscription would close a loop).
pub fn would_loop(path: &[NodeId], node: &NodeId) -> bool {
    path.contains(node)
}

/// The nodes as `view` shows them: a remote node is alive while listed and its link not
/// given up on or down; draining by its record or an operator's drain request.
pub fn route_nodes(view: &ClusterView) -> Vec<RouteNode> {
    view.nodes
        .iter()
        .map(|n| RouteNode {
            id: n.record.node_id.clone(),
            region: n.record.region.clone(),
            draining: n.record.state == NodeState::Draining || n.drain.is_some(),
            alive: n.link == LinkView::Local
                || (n.listed && !matches!(n.link, LinkView::Gone | LinkView::Down)),
        })
        .collect()
}

/// The node the local node of `view` pipes `producer` (of `origin`, in `room`) from: its
/// parent in the plan, or `None` when the plan has no route for it (the caller then pipes
/// from the origin, as in a mesh).
pub fn parent_in_view(
    view: &ClusterView,
    mode: RoutingMode,
    room: &RoomId,
    producer: &ProducerId,
    origin: &NodeId,
) -> Option<NodeId> {
    let mut hosts: BTreeSet<NodeId> = view
        .rooms
        .iter()
        .filter(|r| &r.room == room)
        .flat_map(|r| r.hosts.iter().cloned())
        .collect();
    // This node needs it (it asks), whether or not its host key is in the cache yet.
    hosts.insert(view.local_node.clone());
    let plan = plan(&route_nodes(view), &hosts, producer, origin, mode).ok()?;
    plan.parent(&view.local_node).cloned()
}

#[cfg(test)]
mod tests;
