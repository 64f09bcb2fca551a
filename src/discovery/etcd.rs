//! The etcd registry backend: this node's keys bound to one lease, and a watch over the whole
//! cluster prefix, behind a [`RegistryHandle`].
//!
//! # Design
//!
//! [`start`] connects (retrying until `connect_timeout`), registers the node, lists the prefix
//! (the first [`RegistryUpdate::Snapshot`]) and opens the watch; only then does it return, so a
//! node that started is registered and watching. Every key lives under
//! `/pipemesh/<cluster>/`; ops and updates carry keys relative to that prefix.
//!
//! Two tasks run after that, so that a slow consumer of updates can never starve the lease:
//!
//! - **The session task** owns the lease, the writes and shutdown. It keeps `owned`, a mirror
//!   of every key this node has put and not deleted, updated by every op in arrival order
//!   whether or not etcd answers. While healthy it writes queued ops in transactions of at most
//!   `max_txn_ops` operations (repeated writes of one key inside a transaction collapse into
//!   the last one: a transaction is applied atomically, so nobody could see the ones before);
//!   every put carries the current lease. A small *keeper* task sends lease keep-alives every
//!   TTL/3 and ends, with the reason, when the stream fails, etcd answers TTL 0 (the lease is
//!   gone), or no answer came for a whole TTL.
//! - **The watch task** forwards each watch response as one [`RegistryUpdate::Changes`] into a
//!   bounded channel, waiting when the receiver is slow (ops are unbounded and handled by the
//!   other task, so writers never wait). When the watch breaks it reopens it from the revision
//!   after the last event it delivered (`watch_resumes`), with jittered backoff. When etcd
//!   cancels the watch because that revision was compacted away, it lists the prefix again and
//!   sends a new snapshot (`relists`) before watching from the listing's revision. An idle
//!   watch asks etcd for a progress report every TTL; a watch that leaves one unanswered for a
//!   TTL is treated as broken (a silently dead connection). A report only proves the watch
//!   alive: it does not move the resume revision, because etcd before 3.4.24 and 3.5.8 answers
//!   with the store's revision even while the watch is still catching up, and resuming from
//!   there would skip events. (An idle node may therefore re-list after a compaction, which
//!   costs one listing.)
//!
//! ## Losing the session and re-publishing
//!
//! Any failure of the session (lease lost, a write failed) makes the session task drop its
//! queued writes and *re-publish*, retrying with backoff until etcd answers: read the node
//! record, which must be absent or carry a lease of ours; grant a new lease; put every owned
//! key with the new lease in one transaction guarded by the node record still being as read;
//! then revoke every older lease of ours (`lease_regrants` counts the successes). Keys deleted locally while the session was broken are
//! still on the old lease and vanish with it; the ones re-published moved to the new lease and
//! survive. Watchers see puts of unchanged values and diff them away. (etcd compares are
//! conjunctions, so "absent or ours" is a read followed by a transaction that checks the read
//! still holds; a changed record fails the guard and the next attempt reads again. Reading
//! first also copes with an earlier attempt whose outcome was unknown: the record may be on
//! any lease this process granted.) More than `max_txn_ops` owned keys are written in several
//! transactions: the first carries the node record and the guard, the next ones check that
//! the node record is still on the new lease, so they are not atomic as a whole. If the node
//! record belongs to someone else, another instance took this node id: the session logs an
//! error, reports it in `last_error`, never overwrites it, and keeps retrying.
//!
//! Registration at start grants the first lease and writes the node record only if it is
//! absent, in one transaction that returns the record in the way otherwise. A record in the way
//! (another live node with this id, or this node's previous instance whose lease has not
//! expired yet) is watched for at most its lease's remaining TTL + 1 s, until it is deleted;
//! then one retry. Still there, start fails with [`RegistryError::DuplicateNode`]. A failed
//! start revokes the lease it granted.
//!
//! ## Status
//!
//! `connected` is true while the lease is kept alive, every write went through, and the watch
//! is running; `last_error` says which of them is not. `revision` is the last revision the
//! watch delivered.
//!
//! ## Stopping
//!
//! When the shutdown future completes (or the ops sender is dropped) the session revokes its
//! leases (1 s at most), so this node's keys vanish at once rather than after a TTL, then stops
//! the keeper and the watch. Then the status channel closes (`status.changed()` returns an
//! error) and the updates channel ends: the node can wait for that to know the backend is
//! gone.
//!
//! ## Defences
//!
//! Every etcd request has a timeout (the lease TTL, at least 1 s), since a request to an
//! unreachable etcd can otherwise wait forever. Nothing etcd sends can panic this module:
//! etcd-client asserts that a new watch's first response says "created", so watches are
//! opened in a separate task whose panic is an ordinary error, and delete events are told
//! from puts by their version (0 after a delete), because `Event::event_type` panics on an
//! unknown type number. Keys outside the prefix are ignored. Listings are paged. An expired
//! authentication token (etcd's simple tokens expire after `--auth-token-ttl` without use, and
//! keep-alives and watches on open streams do not count) is renewed when etcd rejects it; a
//! write it failed is sent again once.
//!
//! ## Files
//!
//! This module: configuration, [`start`], what the tasks share (status, request timeouts).
//! `connect`: TLS and authentication options, connecting, registering. `session`: the session
//! task and the lease keeper. `watch`: the watch task and listings.

mod connect;
mod session;
mod watch;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, KeyValue};
use rand::Rng;
use tokio::sync::{mpsc, watch as channel};
use tokio::time::{timeout, Instant};

use super::registry::{
    Registration, Registry, RegistryError, RegistryHandle, RegistryStatus, RegistryUpdate,
};
pub use connect::client;
use connect::{connect, connect_options, register};
use session::Session;
use watch::{list, open_watch, WatchLoop};

/// Default TTL of the node's lease: how long a dead node stays in the registry.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// Default time [`start`] waits for etcd to answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default operations per transaction: etcd's own `--max-txn-ops` default.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Updates buffered for a slow receiver before the watch waits for it.
const UPDATES_CAPACITY: usize = 1024;
/// First retry delay after a failure; doubles up to [`BACKOFF_MAX`], jittered.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest timeout of one etcd request (it is the lease TTL otherwise).
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long shutdown waits for etcd to revoke the lease.
const SHUTDOWN_REVOKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys per page when listing the prefix.
const LIST_PAGE: i64 = 500;
/// Largest watch response accepted (tonic's default, 4 MiB, is below what a catch-up after a
/// long disconnection can bring).
const MAX_WATCH_MESSAGE: usize = 64 << 20;
/// Where a CA bundle is looked for when TLS is asked for without a CA file.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

// gRPC status codes (tonic's `Code` discriminants; tonic is not a direct dependency).
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_NOT_FOUND: i32 = 5;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_FAILED_PRECONDITION: i32 = 9;
const GRPC_UNAUTHENTICATED: i32 = 16;

/// How to reach etcd and how this node's session behaves.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379`, `https://host:2379`).
    pub endpoints: Vec<String>,
    /// The cluster name: keys live under `/pipemesh/<cluster>/`.
    pub cluster: String,
    /// TTL of the node's lease (whole seconds, rounded up; etcd may raise it to its minimum).
    pub lease_ttl: Duration,
    /// How long [`start`] waits for etcd to answer.
    pub connect_timeout: Duration,
    /// TLS settings; `https` endpoints use TLS even without them (system CA bundle).
    pub tls: Option<EtcdTls>,
    /// User and password for etcd's role-based authentication.
    pub auth: Option<EtcdAuth>,
    /// Most operations in one transaction: etcd's `--max-txn-ops` (default 128).
    pub max_txn_ops: usize,
}

impl EtcdConfig {
    /// A configuration with the default timeouts, no TLS and no authentication.
    pub fn new(endpoints: Vec<String>, cluster: impl Into<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            cluster: cluster.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
            auth: None,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// TLS towards etcd (PEM files).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA that signs the etcd servers' certificates; unset: the system CA bundle.
    pub ca: Option<PathBuf>,
    /// Client certificate, for etcd's client-certificate authentication (with `key`).
    pub cert: Option<PathBuf>,
    /// Client private key (with `cert`).
    pub key: Option<PathBuf>,
    /// Name expected in the servers' certificates; unset: the endpoint's host.
    pub domain: Option<String>,
}

/// etcd role-based authentication.
#[derive(Clone)]
pub struct EtcdAuth {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Registry for EtcdConfig {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn start(
        self,
        registration: Registration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RegistryHandle, RegistryError> {
        start(self, registration, shutdown).await
    }
}

/// Connects, registers the node and starts watching the cluster prefix. Returns once the
/// node record is written and the first snapshot is queued on `updates`; the backend runs until
/// `shutdown` completes or the handle's `ops` sender is dropped.
pub async fn start(
    cfg: EtcdConfig,
    registration: Registration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RegistryHandle, RegistryError> {
    let options = connect_options(&cfg)?;
    let deadline = Instant::now() + cfg.connect_timeout;
    let prefix = format!("/pipemesh/{}/", cfg.cluster).into_bytes();
    let node_key = full_key(&prefix, &registration.node_key);
    let mut client = connect(&cfg, options, &node_key, deadline).await?;
    let lease_ttl = cfg.lease_ttl.max(Duration::from_secs(1));
    let (status_tx, status_rx) = channel::channel(RegistryStatus::default());
    let shared = Arc::new(Shared {
        prefix,
        node_key,
        node_id: registration.node_id.clone(),
        cluster: cfg.cluster.clone(),
        endpoints: cfg.endpoints.join(","),
        lease_ttl,
        request_timeout: lease_ttl.max(MIN_REQUEST_TIMEOUT),
        max_txn_ops: cfg.max_txn_ops.max(1),
        auth: cfg.auth.clone(),
        health: Health {
            tx: status_tx,
            problems: Mutex::new(Problems::default()),
        },
    });
    let unreachable = |e: Failure| RegistryError::Unreachable {
        endpoints: shared.endpoints.clone(),
        reason: e.to_string(),
    };

    let lease = register(&mut client, &shared, &registration).await?;
    let first = async {
        let (revision, kvs) = list(&mut client, &shared).await?;
        let opened = open_watch(&client, &shared, revision + 1).await?;
        Ok::<_, Failure>((revision, kvs, opened))
    };
    let (revision, kvs, (watcher, stream)) = match first.await {
        Ok(first) => first,
        Err(e) => {
            revoke_quietly(&mut client, &shared, lease).await;
            return Err(unreachable(e));
        }
    };

    let (updates_tx, updates_rx) = mpsc::channel(UPDATES_CAPACITY);
    // A fresh channel with room: this cannot fail or wait.
    let _ = updates_tx.try_send(RegistryUpdate::Snapshot { revision, kvs });
    shared.health.update(|_, s| {
        s.lease_id = lease;
        s.revision = revision;
    });
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let watch_task = tokio::spawn(
        WatchLoop::new(client.clone(), shared.clone(), updates_tx, revision + 1)
            .run(watcher, stream),
    );
    let session = Session::new(client, shared, registration, lease);
    tokio::spawn(session.run(ops_rx, Box::pin(shutdown), watch_task));
    Ok(RegistryHandle {
        ops: ops_tx,
        updates: updates_rx,
        status: status_rx,
    })
}

/// What both tasks share.
struct Shared {
    /// `/pipemesh/<cluster>/`.
    prefix: Vec<u8>,
    /// The node record's full key.
    node_key: Vec<u8>,
    node_id: String,
    cluster: String,
    /// For messages.
    endpoints: String,
    lease_ttl: Duration,
    request_timeout: Duration,
    max_txn_ops: usize,
    auth: Option<EtcdAuth>,
    health: Health,
}

impl Shared {
    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
    }

    /// Runs one etcd request with the request timeout.
    async fn call<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Failure> {
        match timeout(self.request_timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Failure::Etcd { what, source }),
            Err(_) => Err(Failure::Timeout {
                what,
                after: self.request_timeout,
            }),
        }
    }

    /// Renews the authentication token after etcd rejected it (simple tokens expire).
    async fn renew_auth(&self, client: &mut Client, failure: &Failure) {
        let Some(auth) = &self.auth else { return };
        if failure.grpc_code() != Some(GRPC_UNAUTHENTICATED) {
            return;
        }
        // etcd refuses to authenticate a request that carries the expired token.
        client.remove_client_auth();
        let renewed = self
            .call(
                "authenticating",
                client.set_client_auth(auth.user.clone(), auth.password.clone()),
            )
            .await;
        match renewed {
            Ok(()) => tracing::debug!("etcd: authentication token renewed"),
            Err(e) => tracing::warn!(error = %e, "etcd: renewing the authentication token failed"),
        }
    }
}

/// Why one etcd request failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// No answer in time.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// The request.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// etcd or the transport answered with an error.
    #[error("{what}: {source}")]
    Etcd {
        /// The request.
        what: &'static str,
        /// The error.
        source: etcd_client::Error,
    },
    /// etcd answered something unusable.
    #[error("{0}")]
    Protocol(String),
}

impl Failure {
    fn grpc_code(&self) -> Option<i32> {
        match self {
            Failure::Etcd {
                source: etcd_client::Error::GRpcStatus(s),
                ..
            } => Some(s.code() as i32),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Status

/// The status channel and the two halves of `connected`.
struct Health {
    tx: channel::Sender<RegistryStatus>,
    problems: Mutex<Problems>,
}

/// Why each half is unhealthy (`None`: healthy).
#[derive(Default)]
struct Problems {
    session: Option<String>,
    watch: Option<String>,
}

impl Health {
    /// Changes the problems and counters; `connected` and `last_error` follow the problems.
    fn update(&self, f: impl FnOnce(&mut Problems, &mut RegistryStatus)) {
        let mut problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        self.tx.send_if_modified(|s| {
            let before = s.clone();
            f(&mut problems, s);
            s.connected = problems.session.is_none() && problems.watch.is_none();
            s.last_error = problems.session.clone().or_else(|| problems.watch.clone());
            *s != before
        });
    }

    fn session_problem(&self, problem: Option<String>) {
        self.update(|p, _| p.session = problem);
    }

    fn watch_problem(&self, problem: Option<String>) {
        self.update(|p, _| p.watch = problem);
    }
}

async fn revoke_quietly(client: &mut Client, shared: &Shared, lease: i64) {
    match timeout(SHUTDOWN_REVOKE_TIMEOUT, client.lease_revoke(lease)).await {
        Ok(Ok(_)) => {}
        Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() as i32 == GRPC_NOT_FOUND => {}
        Ok(Err(e)) => {
            tracing::debug!(
                lease,
                error = %e,
                node_id = %shared.node_id,
                "etcd: revoking a lease failed"
            )
        }
        Err(_) => {
            tracing::debug!(lease, node_id = %shared.node_id, "etcd: revoking a lease timed out")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers

/// A delete event's key-value has version 0 (a put's is at least 1).
fn is_delete(kv: Option<&KeyValue>) -> bool {
    kv.is_some_and(|kv| kv.version() == 0)
}

fn full_key(prefix: &[u8], relative: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + relative.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(relative.as_bytes());
    key
}

fn strip<'k>(prefix: &[u8], key: &'k [u8]) -> Option<&'k [u8]> {
    key.strip_prefix(prefix)
}

/// The end of the range of keys starting with `prefix` (etcd's "prefix + 1").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or empty): every key from the prefix on.
    vec![0]
}

/// Jittered exponential retry delays.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// A delay between half and all of the current step; the step then doubles.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_MAX);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_every_prefixed_key() {
        assert_eq!(prefix_end(b"/pipemesh/c/"), b"/pipemesh/c0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn keys_are_prefixed_and_stripped() {
        let prefix = b"/pipemesh/c/";
        assert_eq!(full_key(prefix, "nodes/a"), b"/pipemesh/c/nodes/a".to_vec());
        assert_eq!(
            strip(prefix, b"/pipemesh/c/nodes/\xff"),
            Some(&b"nodes/\xff"[..])
        );
        assert_eq!(strip(prefix, b"/pipemesh/other/nodes/a"), None);
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::default();
        let mut step = BACKOFF_MIN;
        for _ in 0..10 {
            let d = b.next();
            assert!(d >= step / 2 && d <= step, "{d:?} within half of {step:?}");
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(step, BACKOFF_MAX);
    }

    #[test]
    fn lease_ttl_rounds_up_to_whole_seconds() {
        let shared = |ttl| Shared {
            prefix: Vec::new(),
            node_key: Vec::new(),
            node_id: String::new(),
            cluster: String::new(),
            endpoints: String::new(),
            lease_ttl: ttl,
            request_timeout: ttl,
            max_txn_ops: 1,
            auth: None,
            health: Health {
                tx: channel::channel(RegistryStatus::default()).0,
                problems: Mutex::new(Problems::default()),
            },
        };
        assert_eq!(shared(Duration::from_secs(3)).ttl_secs(), 3);
        assert_eq!(shared(Duration::from_millis(2500)).ttl_secs(), 3);
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let auth = EtcdAuth {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
