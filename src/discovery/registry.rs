//! The registry boundary: what a node writes to the cluster registry and what it reads back.
//!
//! A *registry* is a revisioned key-value store with leases and watches: etcd in a cluster
//! ([`crate::discovery::etcd`]), an in-process map on a single node
//! ([`crate::discovery::in_process`]). Both backends run as a task behind a
//! [`RegistryHandle`] and speak only the plain types of this module, so the sans-IO
//! [`crate::discovery::cluster::ClusterDirectory`] that interprets keys and values is the same
//! whatever the backend.
//!
//! Keys here are *relative* to the cluster prefix (`nodes/a`, `rooms/r1/peers/a/p1`); the
//! backend adds `/pipemesh/<cluster>/`. See [`crate::discovery::keys`] for the layout.
//!
//! Every key a node writes is bound to that node's lease: when the node dies, the lease
//! expires and the store deletes all its keys in one revision.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// One write by this node. Applied in order; every put is bound to the node's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryOp {
    /// Set `key` (relative to the cluster prefix) to `value`.
    Put {
        /// The key.
        key: String,
        /// The value (JSON text).
        value: String,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// One change seen by the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The key relative to the cluster prefix, as stored (not necessarily UTF-8).
    pub key: Vec<u8>,
    /// The new value; `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The revision of the change.
    pub mod_revision: i64,
}

/// What the registry reports about the contents under the cluster prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryUpdate {
    /// Everything under the prefix at `revision`: the first listing, or a re-listing after
    /// the watch fell behind a compaction. The receiver replaces its view with this and reports
    /// only the differences.
    Snapshot {
        /// The revision of the listing.
        revision: i64,
        /// Every key (relative) and value.
        kvs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Changes after the previous update, in revision order.
    Changes {
        /// The highest revision these changes bring the view to.
        revision: i64,
        /// The changes.
        changes: Vec<KvChange>,
    },
}

/// The registry session as the node's readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryStatus {
    /// The session is healthy: lease alive and kept alive, watch running, writes applied.
    pub connected: bool,
    /// The current lease (0 when none).
    pub lease_id: i64,
    /// The last revision the watch delivered.
    pub revision: i64,
    /// Times the lease was lost and re-granted (every owned key re-published).
    pub lease_regrants: u64,
    /// Times the watch resumed from its last revision after a reconnect.
    pub watch_resumes: u64,
    /// Times the view was re-listed because the watch fell behind a compaction.
    pub relists: u64,
    /// Writes that failed (retried by the next re-publish).
    pub failed_writes: u64,
    /// Why the session is not connected, when it is not.
    pub last_error: Option<String>,
}

/// The node's side of a running registry backend.
#[derive(Debug)]
pub struct RegistryHandle {
    /// Writes, applied in order. Unbounded: the writer is the worker, whose writes are bounded
    /// by its own local changes, and a registry outage must not block it.
    pub ops: mpsc::UnboundedSender<RegistryOp>,
    /// Snapshot first, then changes; a re-listing sends a new snapshot.
    pub updates: mpsc::Receiver<RegistryUpdate>,
    /// Session health for `/readyz` and metrics.
    pub status: watch::Receiver<RegistryStatus>,
}

/// Errors starting a registry backend. Each is a reason to refuse to start the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No endpoint answered in time.
    #[error("cannot reach the registry at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last error.
        reason: String,
    },
    /// Another live node is registered with this node id.
    #[error(
        "node id {node_id:?} is already registered in cluster {cluster:?} by a live node \
         ({existing}); waited {waited:?} for its lease to expire. Give every node its own \
         --node-id"
    )]
    DuplicateNode {
        /// The node id.
        node_id: String,
        /// The cluster.
        cluster: String,
        /// The other node's record, as stored.
        existing: String,
        /// How long we waited for it to go away.
        waited: Duration,
    },
    /// TLS or authentication settings could not be used.
    #[error("registry configuration: {0}")]
    Config(String),
}

/// A registry backend: started once per node, it registers the node and then runs behind the
/// returned [`RegistryHandle`] until `shutdown` completes or the handle's `ops` sender is
/// dropped. The node only ever sees the handle, so backends are interchangeable:
/// [`crate::discovery::in_process::InProcessRegistry`] on a single node (the default) and
/// [`crate::discovery::etcd::EtcdConfig`] in a cluster.
pub trait Registry {
    /// A short name for logs and the admin endpoint (`"etcd"`, `"in-process"`).
    fn kind(&self) -> &'static str;

    /// Registers the node (its record under `registration.node_key`) and starts the session.
    /// Returns once the first [`RegistryUpdate::Snapshot`] is queued; fails when the node must
    /// not start (registry unreachable, node id taken, unusable settings).
    fn start(
        self,
        registration: Registration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<RegistryHandle, RegistryError>> + Send;
}

/// What a backend needs to register this node: its record's key and first value.
#[derive(Debug, Clone)]
pub struct Registration {
    /// This node's id.
    pub node_id: String,
    /// Its record key, relative (`nodes/<id>`).
    pub node_key: String,
    /// Its record (JSON text).
    pub node_value: String,
}
