//! Discovery: which nodes exist, which rooms they host, and the peers and producers of each
//! room across the cluster.
//!
//! - [`directory`]: the [`directory::RoomDirectory`] trait the worker talks to, the single-node
//!   [`directory::LocalDirectory`] and the static-peer [`directory::GossipDirectory`].
//! - [`registry`]: the boundary to a revisioned, leased key-value registry (ops out, updates in).
//! - [`keys`]: the key layout and value records under the cluster prefix.
//! - [`cluster`]: [`cluster::ClusterDirectory`], the sans-IO directory over a registry.
//! - `local`: this node's rooms, peers and producers within the bounds, shared by the gossip
//!   and cluster directories.
//! - [`placement`]: which node a new client of a room should connect to.
//! - [`routing`]: which node pipes each producer to which (full mesh or a tree per region).
//! - [`etcd`] and [`in_process`]: the two registry backends (tokio tasks).

pub mod cluster;
pub mod directory;
pub mod etcd;
pub mod in_process;
pub mod keys;
mod local;
pub mod placement;
pub mod registry;
pub mod routing;
#[cfg(test)]
mod testing;
