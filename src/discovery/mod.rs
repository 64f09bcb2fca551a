//! Discovery: which nodes host which rooms, and the peers and producers of each room across the
//! cluster.
//!
//! [`directory`] is the sans-IO room directory that merges this node's rooms with what other
//! nodes announce (today over pipes to static peers; etcd is the next backend).

pub mod directory;
