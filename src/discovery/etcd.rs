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
//!   TTL is treated as broken (a silently dead connection), and a report moves the resume
//!   revision forward so that an idle node does not fall behind compactions.
//!
//! ## Losing the session and re-publishing
//!
//! Any failure of the session (lease lost, a write failed) makes the session task drop its
//! queued writes and *re-publish*, retrying with backoff until etcd answers: grant a new lease;
//! read the node record; put every owned key with the new lease in one transaction guarded by
//! the node record being as just read, which must be absent or carry a lease of ours; then
//! revoke every older lease of ours. Keys deleted locally while the session was broken are
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
//! Registration at start is the same guarded write with one difference: a record of someone
//! else (another live node with this id, or this node's previous instance whose lease has not
//! expired yet) is waited out for at most its lease's remaining TTL + 1 s before one retry;
//! still there, start fails with [`RegistryError::DuplicateNode`].
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
//! authentication token is renewed when etcd rejects one.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream, Watcher,
};
use rand::Rng;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::registry::{
    KvChange, Registration, RegistryError, RegistryHandle, RegistryOp, RegistryStatus,
    RegistryUpdate,
};

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
    let (status_tx, status_rx) = watch::channel(RegistryStatus::default());
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
        WatchLoop {
            client: client.clone(),
            shared: shared.clone(),
            updates: updates_tx,
            next_revision: revision + 1,
        }
        .run(watcher, stream),
    );
    let mut owned = BTreeMap::new();
    owned.insert(registration.node_key, registration.node_value);
    let mut session = Session {
        client,
        shared,
        owned,
        pending: VecDeque::new(),
        lease,
        our_leases: vec![lease],
        keeper: None,
        retry: None,
    };
    session.spawn_keeper();
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
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "etcd: renewing the authentication token failed");
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
    tx: watch::Sender<RegistryStatus>,
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

// ---------------------------------------------------------------------------------------------
// Connecting and registering

fn connect_options(cfg: &EtcdConfig) -> Result<Option<ConnectOptions>, RegistryError> {
    if cfg.endpoints.is_empty() {
        return Err(RegistryError::Config("no etcd endpoints".into()));
    }
    let https = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
    let mut options = None;
    if cfg.tls.is_some() || https {
        let tls = tls_options(&cfg.tls.clone().unwrap_or_default())?;
        options = Some(ConnectOptions::new().with_tls(tls));
    }
    if let Some(auth) = &cfg.auth {
        options = Some(
            options
                .unwrap_or_default()
                .with_user(auth.user.clone(), auth.password.clone()),
        );
    }
    Ok(options)
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, RegistryError> {
    let ca = match &tls.ca {
        Some(path) => read_pem(path, "CA certificate")?,
        None => {
            let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let found = from_env
                .into_iter()
                .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    RegistryError::Config(
                        "TLS to etcd without a CA file, and no system CA bundle found; give the \
                         etcd CA file"
                            .into(),
                    )
                })?;
            read_pem(&found, "CA bundle")?
        }
    };
    if certificates(&ca) == 0 {
        return Err(RegistryError::Config(
            "the etcd CA file holds no PEM certificate".into(),
        ));
    }
    // Go's gRPC server may not offer ALPN "h2"; it speaks HTTP/2 all the same.
    let mut options = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .assume_http2(true);
    match (&tls.cert, &tls.key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read_pem(cert_path, "client certificate")?;
            if certificates(&cert) == 0 {
                return Err(RegistryError::Config(format!(
                    "{} holds no PEM certificate",
                    cert_path.display()
                )));
            }
            let key = read_pem(key_path, "client key")?;
            if !matches!(
                rustls_pemfile::private_key(&mut key.as_slice()),
                Ok(Some(_))
            ) {
                return Err(RegistryError::Config(format!(
                    "{} holds no PEM private key",
                    key_path.display()
                )));
            }
            options = options.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(RegistryError::Config(
                "an etcd client certificate needs its key, and a key its certificate".into(),
            ))
        }
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain.clone());
    }
    Ok(options)
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| {
        RegistryError::Config(format!(
            "cannot read the etcd {what} {}: {e}",
            path.display()
        ))
    })
}

fn certificates(pem: &[u8]) -> usize {
    rustls_pemfile::certs(&mut &pem[..])
        .filter(Result::is_ok)
        .count()
}

/// A client that has answered a read of the node key, retried until `deadline`.
async fn connect(
    cfg: &EtcdConfig,
    options: Option<ConnectOptions>,
    node_key: &[u8],
    deadline: Instant,
) -> Result<Client, RegistryError> {
    let endpoints = cfg.endpoints.join(",");
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let mut client = Client::connect(&cfg.endpoints, options.clone()).await?;
            let probe = GetOptions::new().with_keys_only().with_count_only();
            client.get(node_key, Some(probe)).await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let reason =
            match timeout(deadline.saturating_duration_since(Instant::now()), attempt).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => {
                    if let Some(config) = configuration_error(&e) {
                        return Err(RegistryError::Config(config));
                    }
                    e.to_string()
                }
                Err(_) => "no answer".to_owned(),
            };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RegistryError::Unreachable { endpoints, reason });
        }
        tracing::debug!(%endpoints, %reason, "etcd: not reachable yet");
        sleep(backoff.next().min(left)).await;
    }
}

/// The errors that retrying cannot fix: bad URLs, TLS settings, credentials or permissions.
/// (etcd also answers FailedPrecondition "not capable" while it starts, so only the
/// authentication ones of that code count.)
fn configuration_error(e: &etcd_client::Error) -> Option<String> {
    match e {
        etcd_client::Error::InvalidArgs(_)
        | etcd_client::Error::InvalidUri(_)
        | etcd_client::Error::TransportError(_) => Some(format!("etcd client: {e}")),
        etcd_client::Error::GRpcStatus(s) => {
            let refused = match s.code() as i32 {
                GRPC_INVALID_ARGUMENT | GRPC_PERMISSION_DENIED => true,
                GRPC_FAILED_PRECONDITION => s.message().contains("auth"),
                _ => false,
            };
            refused.then(|| format!("etcd refused the client: {}", s.message()))
        }
        _ => None,
    }
}

/// Grants the first lease and writes the node record with it (see the module docs).
async fn register(
    client: &mut Client,
    shared: &Shared,
    registration: &Registration,
) -> Result<i64, RegistryError> {
    let unreachable = |e: Failure| RegistryError::Unreachable {
        endpoints: shared.endpoints.clone(),
        reason: e.to_string(),
    };
    let lease = shared
        .call(
            "granting a lease",
            client.lease_grant(shared.ttl_secs(), None),
        )
        .await
        .map_err(unreachable)?
        .id();
    let result = async {
        let Some(existing) = claim(client, shared, registration, lease)
            .await
            .map_err(unreachable)?
        else {
            return Ok(());
        };
        let started = Instant::now();
        let wait = if existing.lease() == 0 {
            Duration::ZERO
        } else {
            let ttl = shared
                .call(
                    "reading the other node's lease",
                    client.lease_time_to_live(existing.lease(), None),
                )
                .await
                .map_err(unreachable)?
                .ttl();
            Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) + Duration::from_secs(1)
        };
        tracing::warn!(
            node_id = %shared.node_id,
            existing = %String::from_utf8_lossy(existing.value()),
            ?wait,
            "etcd: node id already registered; waiting for the other record's lease to expire"
        );
        wait_for_delete(client, shared, existing.mod_revision() + 1, wait).await;
        match claim(client, shared, registration, lease)
            .await
            .map_err(unreachable)?
        {
            None => Ok(()),
            Some(existing) => Err(RegistryError::DuplicateNode {
                node_id: shared.node_id.clone(),
                cluster: shared.cluster.clone(),
                existing: String::from_utf8_lossy(existing.value()).into_owned(),
                waited: started.elapsed(),
            }),
        }
    }
    .await;
    match result {
        Ok(()) => Ok(lease),
        Err(e) => {
            revoke_quietly(client, shared, lease).await;
            Err(e)
        }
    }
}

/// Writes the node record if absent; the record in the way otherwise.
async fn claim(
    client: &mut Client,
    shared: &Shared,
    registration: &Registration,
    lease: i64,
) -> Result<Option<KeyValue>, Failure> {
    let key = shared.node_key.clone();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            registration.node_value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let resp = shared.call("registering the node", client.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(None);
    }
    let existing = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
        _ => None,
    });
    match existing {
        Some(kv) => Ok(Some(kv)),
        // Deleted between the compare and the read of the same transaction cannot happen;
        // an answer without the read is etcd misbehaving.
        None => Err(Failure::Protocol(
            "etcd answered a failed registration without the record in the way".into(),
        )),
    }
}

/// Waits at most `wait` for the node record to be deleted (at or after `from`).
async fn wait_for_delete(client: &Client, shared: &Shared, from: i64, wait: Duration) {
    let deadline = Instant::now() + wait;
    let key = shared.node_key.clone();
    let watched = async {
        let options = WatchOptions::new().with_start_revision(from);
        let Ok((_watcher, mut stream)) =
            open_watch_raw(client.watch_client(), key, options, wait).await
        else {
            return;
        };
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled() || resp.events().iter().any(|e| is_delete(e.kv())) {
                return;
            }
        }
    };
    if timeout(wait, watched).await.is_ok() {
        return;
    }
    // Timed out, or the watch broke: in both cases the wait is over or ends at the deadline.
    sleep_until(deadline).await;
}

async fn revoke_quietly(client: &mut Client, shared: &Shared, lease: i64) {
    match timeout(SHUTDOWN_REVOKE_TIMEOUT, client.lease_revoke(lease)).await {
        Ok(Ok(_)) => {}
        Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() as i32 == GRPC_NOT_FOUND => {}
        Ok(Err(e)) => {
            tracing::debug!(lease, error = %e, node_id = %shared.node_id, "etcd: revoking a lease failed")
        }
        Err(_) => {
            tracing::debug!(lease, node_id = %shared.node_id, "etcd: revoking a lease timed out")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The session: lease, writes, re-publishing, shutdown

/// When the next re-publish attempt runs.
struct Retry {
    at: Instant,
    backoff: Backoff,
}

struct Session {
    client: Client,
    shared: Arc<Shared>,
    /// Every key this node has put and not deleted (relative key → value).
    owned: BTreeMap<String, String>,
    /// Ops accepted while healthy and not yet written.
    pending: VecDeque<RegistryOp>,
    /// The lease puts carry (meaningful while healthy).
    lease: i64,
    /// Leases this process granted and has not revoked; the last one is `lease`.
    our_leases: Vec<i64>,
    /// Keeps `lease` alive; ends with the reason the lease was lost.
    keeper: Option<JoinHandle<String>>,
    /// Set while the session is broken: the next re-publish attempt.
    retry: Option<Retry>,
}

impl Session {
    async fn run(
        mut self,
        mut ops: mpsc::UnboundedReceiver<RegistryOp>,
        mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
        watch_task: JoinHandle<()>,
    ) {
        'run: loop {
            // Take everything queued, so that transactions are as large as allowed.
            loop {
                match ops.try_recv() {
                    Ok(op) => self.accept(op),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'run,
                }
            }
            if self.retry.is_none() && !self.pending.is_empty() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'run,
                    written = self.write_batch() => {
                        if let Err(e) = written {
                            self.shared.health.update(|_, s| s.failed_writes += 1);
                            self.renew_auth(&e).await;
                            self.lost(format!("write failed: {e}"));
                        }
                    }
                }
                continue;
            }
            let retry_at = self.retry.as_ref().map(|r| r.at);
            tokio::select! {
                biased;
                () = &mut shutdown => break 'run,
                reason = join_keeper(&mut self.keeper) => {
                    self.keeper = None;
                    self.lost(reason);
                }
                op = ops.recv() => match op {
                    Some(op) => self.accept(op),
                    None => break 'run,
                },
                () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break 'run,
                        () = self.republish() => {}
                    }
                }
            }
        }
        self.stop(watch_task).await;
    }

    fn accept(&mut self, op: RegistryOp) {
        match &op {
            RegistryOp::Put { key, value } => {
                self.owned.insert(key.clone(), value.clone());
            }
            RegistryOp::Delete { key } => {
                self.owned.remove(key);
            }
        }
        // While broken, the next re-publish writes `owned` as a whole.
        if self.retry.is_none() {
            self.pending.push_back(op);
        }
    }

    /// Writes the next transaction's worth of pending ops.
    async fn write_batch(&mut self) -> Result<(), Failure> {
        let batch = take_batch(&mut self.pending, self.shared.max_txn_ops);
        let ops: Vec<TxnOp> = batch
            .into_iter()
            .map(|op| match op {
                RegistryOp::Put { key, value } => TxnOp::put(
                    full_key(&self.shared.prefix, &key),
                    value,
                    Some(PutOptions::new().with_lease(self.lease)),
                ),
                RegistryOp::Delete { key } => {
                    TxnOp::delete(full_key(&self.shared.prefix, &key), None)
                }
            })
            .collect();
        let shared = self.shared.clone();
        shared
            .call("writing", self.client.txn(Txn::new().and_then(ops)))
            .await?;
        Ok(())
    }

    /// The session broke: stop keeping the lease alive, forget queued writes, re-publish.
    fn lost(&mut self, reason: String) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        self.pending.clear();
        if self.retry.is_none() {
            tracing::warn!(node_id = %self.shared.node_id, %reason, "etcd: session lost; re-publishing");
            self.retry = Some(Retry {
                at: Instant::now(),
                backoff: Backoff::default(),
            });
        }
        self.shared.health.session_problem(Some(reason));
    }

    fn retry_later(&mut self, reason: String) {
        let retry = self.retry.get_or_insert_with(|| Retry {
            at: Instant::now(),
            backoff: Backoff::default(),
        });
        retry.at = Instant::now() + retry.backoff.next();
        tracing::debug!(node_id = %self.shared.node_id, %reason, "etcd: re-publishing failed; retrying");
        self.shared.health.session_problem(Some(reason));
    }

    async fn renew_auth(&mut self, failure: &Failure) {
        let shared = self.shared.clone();
        shared.renew_auth(&mut self.client, failure).await;
    }

    /// One attempt of the re-publish path (module docs).
    async fn republish(&mut self) {
        let shared = self.shared.clone();
        let granted = shared
            .call(
                "granting a new lease",
                self.client.lease_grant(shared.ttl_secs(), None),
            )
            .await;
        let new = match granted {
            Ok(g) => g.id(),
            Err(e) => {
                self.renew_auth(&e).await;
                self.retry_later(format!("session lost; etcd unavailable ({e})"));
                return;
            }
        };
        self.our_leases.push(new);
        match self.publish_all(new).await {
            Ok(()) => {}
            Err(Republish::Taken(existing)) => {
                revoke_quietly(&mut self.client, &shared, new).await;
                self.our_leases.retain(|l| *l != new);
                let reason = format!(
                    "node id {:?} was taken by another instance ({existing}); not overwriting it",
                    shared.node_id
                );
                tracing::error!(node_id = %shared.node_id, %existing, "etcd: another instance registered this node id");
                self.retry_later(reason);
                return;
            }
            Err(Republish::Failed(e)) => {
                // The outcome may be unknown: keep `new` among ours, the next attempt reads
                // which lease the node record is on.
                self.renew_auth(&e).await;
                self.retry_later(format!("session lost; re-publishing failed ({e})"));
                return;
            }
        }
        for old in std::mem::replace(&mut self.our_leases, vec![new]) {
            if old != new {
                revoke_quietly(&mut self.client, &shared, old).await;
            }
        }
        self.lease = new;
        self.retry = None;
        self.spawn_keeper();
        shared.health.update(|p, s| {
            p.session = None;
            s.lease_id = new;
            s.lease_regrants += 1;
        });
        tracing::info!(node_id = %shared.node_id, lease = new, keys = self.owned.len(), "etcd: session re-established; keys re-published");
    }

    /// Puts every owned key with lease `new`, guarded as the module docs say.
    async fn publish_all(&mut self, new: i64) -> Result<(), Republish> {
        let shared = self.shared.clone();
        let node = shared.node_key.clone();
        let current = shared
            .call(
                "reading the node record",
                self.client.get(node.clone(), None),
            )
            .await?
            .take_kvs()
            .into_iter()
            .next();
        let guard = match current {
            None => Compare::create_revision(node.clone(), CompareOp::Equal, 0),
            Some(kv) if self.our_leases.contains(&kv.lease()) => {
                Compare::lease(node.clone(), CompareOp::Equal, kv.lease())
            }
            Some(kv) => {
                return Err(Republish::Taken(
                    String::from_utf8_lossy(kv.value()).into_owned(),
                ))
            }
        };
        let node_owned = self
            .owned
            .keys()
            .any(|k| full_key(&shared.prefix, k) == node);
        // The node record first: the first transaction carries it and the guard.
        let mut puts: Vec<(Vec<u8>, &String)> = self
            .owned
            .iter()
            .map(|(k, v)| (full_key(&shared.prefix, k), v))
            .collect();
        puts.sort_by_key(|(k, _)| *k != node);
        for (i, chunk) in puts.chunks(shared.max_txn_ops).enumerate() {
            let when = if i == 0 {
                vec![guard.clone()]
            } else if node_owned {
                vec![Compare::lease(node.clone(), CompareOp::Equal, new)]
            } else {
                Vec::new()
            };
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| {
                    TxnOp::put(
                        k.clone(),
                        (*v).clone(),
                        Some(PutOptions::new().with_lease(new)),
                    )
                })
                .collect();
            let txn = Txn::new().when(when).and_then(ops);
            let resp = shared.call("re-publishing", self.client.txn(txn)).await?;
            if !resp.succeeded() {
                return Err(Republish::Failed(Failure::Protocol(
                    "the node record changed while re-publishing".into(),
                )));
            }
        }
        Ok(())
    }

    fn spawn_keeper(&mut self) {
        self.keeper = Some(tokio::spawn(keep_alive(
            self.client.clone(),
            self.lease,
            self.shared.lease_ttl,
            self.shared.request_timeout,
        )));
    }

    async fn stop(mut self, watch_task: JoinHandle<()>) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            let _ = keeper.await;
        }
        let shared = self.shared.clone();
        let revokes = self.our_leases.iter().map(|&lease| {
            let mut client = self.client.clone();
            async move { client.lease_revoke(lease).await }
        });
        let revoked = timeout(
            SHUTDOWN_REVOKE_TIMEOUT,
            futures_util::future::join_all(revokes),
        )
        .await;
        if revoked.is_err() {
            tracing::warn!(node_id = %shared.node_id, "etcd: could not revoke the lease at shutdown; this node's keys stay until it expires");
        }
        watch_task.abort();
        let _ = watch_task.await;
        shared.health.update(|p, s| {
            p.session = Some("registry shut down".into());
            s.lease_id = 0;
        });
    }
}

/// Why a re-publish attempt failed.
enum Republish {
    /// The node record is someone else's.
    Taken(String),
    /// etcd failed or the record changed meanwhile; try again.
    Failed(Failure),
}

impl From<Failure> for Republish {
    fn from(f: Failure) -> Self {
        Republish::Failed(f)
    }
}

async fn join_keeper(keeper: &mut Option<JoinHandle<String>>) -> String {
    match keeper {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| format!("lease keep-alive task failed: {e}")),
        None => std::future::pending().await,
    }
}

/// Keeps `lease` alive until it cannot; returns why.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    request_timeout: Duration,
) -> String {
    let opened = timeout(request_timeout, client.lease_keep_alive(lease)).await;
    let (mut keeper, mut stream) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return format!("lease {lease} keep-alive failed: {e}"),
        Err(_) => return format!("lease {lease} keep-alive: no answer within {request_timeout:?}"),
    };
    // Opening the stream refreshed the lease once already.
    let mut last_ack = Instant::now();
    let mut tick = tokio::time::interval_at(last_ack + ttl / 3, ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match timeout(request_timeout, keeper.keep_alive()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("lease {lease} keep-alive failed: {e}"),
                    Err(_) => return format!("lease {lease} keep-alive: request not sent within {request_timeout:?}"),
                }
            }
            answer = stream.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                Ok(Some(_)) => return format!("lease {lease} is gone (etcd answered TTL 0)"),
                Ok(None) => return format!("lease {lease} keep-alive stream closed"),
                Err(e) => return format!("lease {lease} keep-alive failed: {e}"),
            },
            () = sleep_until(last_ack + ttl) => {
                return format!("lease {lease}: no keep-alive answer within {ttl:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The watch

struct WatchLoop {
    client: Client,
    shared: Arc<Shared>,
    updates: mpsc::Sender<RegistryUpdate>,
    /// The revision to resume from: one past the last one delivered.
    next_revision: i64,
}

/// Why following a watch stopped.
enum Ended {
    /// The receiver of updates is gone; nothing left to do.
    ReceiverGone,
    /// etcd compacted the revisions the watch needed.
    Compacted(i64),
    /// The stream failed or went quiet.
    Broken(String),
}

impl WatchLoop {
    async fn run(mut self, watcher: Watcher, stream: WatchStream) {
        let mut current = Some((watcher, stream));
        let mut backoff = Backoff::default();
        let mut relist = false;
        loop {
            if let Some((watcher, stream)) = current.take() {
                let problem = match self.follow(watcher, stream).await {
                    Ended::ReceiverGone => return,
                    Ended::Compacted(at) => {
                        relist = true;
                        format!("watch fell behind a compaction (revision {at}); re-listing")
                    }
                    Ended::Broken(reason) => reason,
                };
                tracing::debug!(node_id = %self.shared.node_id, %problem, "etcd: watch interrupted");
                self.shared.health.watch_problem(Some(problem));
            }
            sleep(backoff.next()).await;
            let relisted = relist;
            if relist {
                match self.relist().await {
                    Ok(true) => relist = false,
                    Ok(false) => return,
                    Err(e) => {
                        self.failed(format!("re-listing failed: {e}"), &e).await;
                        continue;
                    }
                }
            }
            match open_watch(&self.client, &self.shared, self.next_revision).await {
                Ok(opened) => {
                    backoff = Backoff::default();
                    self.shared.health.update(|p, s| {
                        p.watch = None;
                        if !relisted {
                            s.watch_resumes += 1;
                        }
                    });
                    current = Some(opened);
                }
                Err(e) => {
                    self.failed(format!("re-opening the watch failed: {e}"), &e)
                        .await
                }
            }
        }
    }

    async fn failed(&mut self, problem: String, failure: &Failure) {
        self.shared.health.watch_problem(Some(problem));
        let shared = self.shared.clone();
        shared.renew_auth(&mut self.client, failure).await;
    }

    /// Forwards the watch's events until it stops.
    async fn follow(&mut self, mut watcher: Watcher, mut stream: WatchStream) -> Ended {
        let idle = self.shared.lease_ttl;
        let mut progress_asked = false;
        loop {
            let resp = match timeout(idle, stream.message()).await {
                Err(_) if progress_asked => {
                    return Ended::Broken(format!(
                        "watch: no answer to a progress request within {idle:?}"
                    ))
                }
                Err(_) => {
                    if let Err(e) = watcher.request_progress().await {
                        return Ended::Broken(format!("watch: {e}"));
                    }
                    progress_asked = true;
                    continue;
                }
                Ok(Err(e)) => return Ended::Broken(format!("watch failed: {e}")),
                Ok(Ok(None)) => return Ended::Broken("watch stream closed".into()),
                Ok(Ok(Some(resp))) => resp,
            };
            progress_asked = false;
            if resp.compact_revision() > 0 {
                return Ended::Compacted(resp.compact_revision());
            }
            if resp.canceled() {
                return Ended::Broken(format!("watch canceled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                // A progress report: everything up to the header's revision was delivered
                // (etcd only reports progress of a watch that has caught up).
                if let Some(h) = resp.header().filter(|_| !resp.created()) {
                    self.delivered(h.revision());
                }
                continue;
            }
            let mut top = 0;
            let mut changes = Vec::with_capacity(resp.events().len());
            for kv in resp.events().iter().filter_map(|e| e.kv()) {
                top = top.max(kv.mod_revision());
                let Some(key) = strip(&self.shared.prefix, kv.key()) else {
                    tracing::debug!(key = %String::from_utf8_lossy(kv.key()), "etcd: watch event outside the prefix ignored");
                    continue;
                };
                changes.push(KvChange {
                    key: key.to_vec(),
                    value: (!is_delete(Some(kv))).then(|| kv.value().to_vec()),
                    mod_revision: kv.mod_revision(),
                });
            }
            if !changes.is_empty() {
                let update = RegistryUpdate::Changes {
                    revision: top,
                    changes,
                };
                if self.updates.send(update).await.is_err() {
                    return Ended::ReceiverGone;
                }
            }
            self.delivered(top);
        }
    }

    fn delivered(&mut self, revision: i64) {
        if revision >= self.next_revision {
            self.next_revision = revision + 1;
            self.shared.health.update(|_, s| s.revision = revision);
        }
    }

    /// Lists the prefix and sends it as a new snapshot; false when the receiver is gone.
    async fn relist(&mut self) -> Result<bool, Failure> {
        let shared = self.shared.clone();
        let (revision, kvs) = list(&mut self.client, &shared).await?;
        if self
            .updates
            .send(RegistryUpdate::Snapshot { revision, kvs })
            .await
            .is_err()
        {
            return Ok(false);
        }
        self.next_revision = revision + 1;
        shared.health.update(|_, s| {
            s.revision = revision;
            s.relists += 1;
        });
        Ok(true)
    }
}

/// Everything under the prefix (relative keys) and the revision of the listing, in pages.
async fn list(
    client: &mut Client,
    shared: &Shared,
) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), Failure> {
    let end = prefix_end(&shared.prefix);
    let mut from = shared.prefix.clone();
    let mut revision = 0;
    let mut kvs = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LIST_PAGE);
        if revision > 0 {
            // Later pages read the same revision as the first.
            options = options.with_revision(revision);
        }
        let mut resp = shared
            .call("listing", client.get(from.clone(), Some(options)))
            .await?;
        if revision == 0 {
            revision = resp
                .header()
                .map(|h| h.revision())
                .filter(|r| *r > 0)
                .ok_or_else(|| Failure::Protocol("etcd listing without a revision".into()))?;
        }
        let more = resp.more();
        let page = resp.take_kvs();
        let Some(last) = page.last().map(|kv| kv.key().to_vec()) else {
            break;
        };
        kvs.extend(page.into_iter().filter_map(|kv| {
            let (key, value) = kv.into_key_value();
            Some((strip(&shared.prefix, &key)?.to_vec(), value))
        }));
        if !more {
            break;
        }
        from = last;
        from.push(0);
    }
    Ok((revision, kvs))
}

/// Opens the prefix watch from `revision`.
async fn open_watch(
    client: &Client,
    shared: &Shared,
    revision: i64,
) -> Result<(Watcher, WatchStream), Failure> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision)
        .with_progress_notify();
    open_watch_raw(
        client.watch_client(),
        shared.prefix.clone(),
        options,
        shared.request_timeout,
    )
    .await
}

/// Opens a watch in a task of its own: etcd-client asserts (panics) when the first response
/// is not the "created" one, and what etcd sends must never panic the backend.
async fn open_watch_raw(
    watch_client: etcd_client::WatchClient,
    key: Vec<u8>,
    options: WatchOptions,
    within: Duration,
) -> Result<(Watcher, WatchStream), Failure> {
    let mut watch_client = watch_client.max_decoding_message_size(MAX_WATCH_MESSAGE);
    let mut task = tokio::spawn(async move { watch_client.watch(key, Some(options)).await });
    match timeout(within, &mut task).await {
        Ok(Ok(Ok(opened))) => Ok(opened),
        Ok(Ok(Err(source))) => Err(Failure::Etcd {
            what: "opening the watch",
            source,
        }),
        Ok(Err(e)) => Err(Failure::Protocol(format!(
            "opening the watch: unexpected answer from etcd ({e})"
        ))),
        Err(_) => {
            task.abort();
            Err(Failure::Timeout {
                what: "opening the watch",
                after: within,
            })
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
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
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

/// Takes from the front of `pending` the ops of one transaction: at most `max` distinct keys,
/// a later op of a key replacing the earlier one (etcd refuses a key twice in a transaction,
/// and nobody can see inside a transaction).
fn take_batch(pending: &mut VecDeque<RegistryOp>, max: usize) -> Vec<RegistryOp> {
    let mut batch: Vec<RegistryOp> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(op) = pending.front() {
        let key = match op {
            RegistryOp::Put { key, .. } | RegistryOp::Delete { key } => key,
        };
        match index.get(key) {
            Some(&i) => {
                // Checked by `front` above.
                batch[i] = pending.pop_front().expect("front exists");
            }
            None if batch.len() == max => break,
            None => {
                index.insert(key.clone(), batch.len());
                batch.push(pending.pop_front().expect("front exists"));
            }
        }
    }
    batch
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

    fn put(key: &str, value: &str) -> RegistryOp {
        RegistryOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn delete(key: &str) -> RegistryOp {
        RegistryOp::Delete { key: key.into() }
    }

    #[test]
    fn batches_collapse_repeated_keys_and_stop_at_max_distinct_keys() {
        let mut pending: VecDeque<RegistryOp> = [
            put("a", "1"),
            put("b", "1"),
            delete("a"),
            put("b", "2"),
            put("c", "1"),
            put("d", "1"),
        ]
        .into();
        assert_eq!(
            take_batch(&mut pending, 3),
            vec![delete("a"), put("b", "2"), put("c", "1")]
        );
        assert_eq!(take_batch(&mut pending, 3), vec![put("d", "1")]);
        assert!(take_batch(&mut pending, 3).is_empty());
    }

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
                tx: watch::channel(RegistryStatus::default()).0,
                problems: Mutex::new(Problems::default()),
            },
        };
        assert_eq!(shared(Duration::from_secs(3)).ttl_secs(), 3);
        assert_eq!(shared(Duration::from_millis(2500)).ttl_secs(), 3);
    }

    #[test]
    fn tls_settings_that_cannot_work_are_configuration_errors() {
        let missing = PathBuf::from("/nonexistent/pipemesh/etcd-client.pem");
        let mut cfg = EtcdConfig::new(vec!["https://127.0.0.1:2379".into()], "c");
        cfg.tls = Some(EtcdTls {
            ca: Some(missing.clone()),
            ..EtcdTls::default()
        });
        match connect_options(&cfg) {
            Err(RegistryError::Config(m)) => {
                assert!(m.contains(&missing.display().to_string()), "{m}")
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
        cfg.endpoints.clear();
        assert!(matches!(
            connect_options(&cfg),
            Err(RegistryError::Config(_))
        ));
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
