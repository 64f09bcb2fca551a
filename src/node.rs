//! Node glue: binds the sockets, runs the worker task, the signaling and admin servers, and
//! shuts everything down when the shutdown future resolves.
//!
//! The worker task owns the [`Worker`] core by `&mut` and is the only writer of the UDP socket;
//! TCP connections get a reader task (RFC 4571 frames in) and a writer task (frames out).
//! DTLS handshakes run in the `dtls` crate's own tasks behind [`DtlsSession`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use crate::admin::{AdminState, Inspect};
use crate::config::Config;
use crate::discovery::cluster::ClusterDirectory;
use crate::discovery::directory::{DirectoryConfig, GossipDirectory, RoomDirectory};
use crate::discovery::etcd;
use crate::discovery::in_process::InProcessRegistry;
use crate::discovery::keys::{node_key, NodeLoad, NodeRecord, NodeState};
use crate::discovery::registry::{
    Registration, Registry, RegistryError, RegistryHandle, RegistryOp, RegistryUpdate,
};
use crate::edge::demux::{classify, encode_frame_header, FrameDecoder, PacketClass};
use crate::edge::dtls::{DtlsEvent, DtlsIdentity, DtlsSession};
use crate::edge::ice::{Protocol, Tuple};
use crate::ids::{NodeId, TransportId};
use crate::metrics::Kind;
use crate::pipe::endpoint::{EndpointConfig, PipeEndpoint, PipeEvent, PipeHandle};
use crate::pipe::link::LinkConfig;
use crate::pipe::shedding::LinkSample;
use crate::pipe::tls::{PipeIdentity, TransportTuning};
use crate::pipe::wire::DatagramKind;
use crate::signaling::server::{self as sig, SessionId, ToPeer, WorkerCommand};
use crate::timing::{DTLS_HANDSHAKE_TIMEOUT, PIPE_RATE_SAMPLE_INTERVAL};
use crate::worker::{Output, Worker, WorkerConfig};

/// Errors starting a node.
#[derive(Debug, Error)]
pub enum NodeError {
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The pipe endpoint could not start.
    #[error("pipes: {0}")]
    Pipe(String),
    /// The DTLS certificate could not be made.
    #[error(transparent)]
    Dtls(#[from] crate::edge::dtls::DtlsError),
    /// The cluster registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A setting could not be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Counters readable from the admin endpoint.
#[derive(Default, Debug)]
pub struct NodeCounters {
    /// TCP connections closed for bad framing.
    pub tcp_framing_errors: AtomicU64,
    /// The node is draining: it takes no new peers (`/readyz` says so).
    pub draining: std::sync::atomic::AtomicBool,
    /// Forwarding latency per ingress transport (see [`crate::metrics`]).
    pub forwarding_latency: crate::metrics::ForwardingLatency,
    /// Packets the worker emitted that no socket took.
    pub send_drops: crate::metrics::SendDrops,
}

/// Addresses a started node listens on (useful when binding port 0).
#[derive(Clone, Copy, Debug)]
pub struct NodeAddrs {
    /// WebSocket signaling.
    pub signaling: SocketAddr,
    /// UDP and TCP media port.
    pub rtc: SocketAddr,
    /// Admin HTTP.
    pub admin: SocketAddr,
    /// QUIC pipe listener, when pipes are configured.
    pub pipe: Option<SocketAddr>,
}

/// How often the node's load figures are refreshed in its registry record (written only when
/// they changed).
const LOAD_PUBLISH_INTERVAL: Duration = Duration::from_secs(5);
/// How often a node draining before shutdown checks whether its sessions have ended.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// Admin questions queued for the worker task.
const INSPECT_QUEUE: usize = 16;

/// Queue depth of the worker's command channel.
const WORKER_QUEUE: usize = 4096;
/// Frames queued towards one TCP client before frames are dropped.
const TCP_WRITE_QUEUE: usize = 512;
/// Concurrent TCP media connections accepted; more are refused at accept.
const MAX_TCP_CONNECTIONS: usize = 10_000;
/// A TCP media connection that sends nothing for this long is closed (ICE consent checks
/// arrive every few seconds on a live one).
const TCP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(35);
/// Largest RFC 4571 frame accepted from a client. RFC 4571 allows 65535, but every packet a
/// WebRTC client sends fits a path MTU; a larger length prefix means a desynchronised or
/// hostile stream, which is closed at once rather than buffered.
const MAX_TCP_FRAME: usize = 4096;

/// Events from glue tasks into the worker task.
enum Event {
    TcpPacket(Tuple, Bytes),
    TcpOpened(SocketAddr, mpsc::Sender<Bytes>),
    TcpClosed(SocketAddr),
    Dtls(TransportId, DtlsEvent),
}

/// Binds everything and runs until `shutdown` resolves, then stops every task.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let drain_deadline = Duration::from_secs(cfg.drain_deadline_secs);
    let (addrs, stop, mut tasks, inspect) = start_node(cfg).await?;
    tracing::info!(
        signaling = %addrs.signaling, rtc = %addrs.rtc, admin = %addrs.admin,
        "pipemesh node serving"
    );
    shutdown.await;
    if !drain_deadline.is_zero() {
        drain_before_stop(&inspect, drain_deadline).await;
    }
    tracing::info!("shutting down");
    let _ = stop.send(());
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Drains the node (no new peers; placement and `/readyz` send clients elsewhere) and waits
/// until its sessions have ended or `deadline` has passed.
async fn drain_before_stop(inspect: &mpsc::Sender<Inspect>, deadline: Duration) {
    let deadline_ms = unix_ms() + deadline.as_millis() as u64;
    if inspect
        .send(Inspect::Drain {
            draining: true,
            deadline_ms: Some(deadline_ms),
        })
        .await
        .is_err()
    {
        return;
    }
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if inspect.send(Inspect::Sessions(tx)).await.is_err() {
            return;
        }
        let Ok(n) = rx.await else { return };
        if n == 0 {
            tracing::info!("drained: no sessions left");
            return;
        }
        if tokio::time::Instant::now() >= until {
            tracing::info!(
                sessions = n,
                "drain deadline passed; closing the remaining sessions"
            );
            return;
        }
        tracing::info!(sessions = n, left = ?until.saturating_duration_since(tokio::time::Instant::now()), "draining before shutdown");
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Binds the listeners and spawns the node's tasks. Sending on the returned broadcast stops
/// them; the join set completes when all have finished.
pub async fn start(
    cfg: Config,
) -> Result<(NodeAddrs, broadcast::Sender<()>, JoinSet<()>), NodeError> {
    let (addrs, stop, tasks, _) = start_node(cfg).await?;
    Ok((addrs, stop, tasks))
}

/// [`start`], also returning the channel of questions to the worker task.
async fn start_node(
    cfg: Config,
) -> Result<
    (
        NodeAddrs,
        broadcast::Sender<()>,
        JoinSet<()>,
        mpsc::Sender<Inspect>,
    ),
    NodeError,
> {
    let (started, started_at_ms) = (Instant::now(), unix_ms());
    let bind = |what, addr, source| NodeError::Bind { what, addr, source };
    let (udp, tcp, rtc) = bind_rtc(cfg.rtc_listen).await?;
    let signaling = TcpListener::bind(cfg.signaling_listen)
        .await
        .map_err(|e| bind("signaling", cfg.signaling_listen, e))?;
    let admin_token = cfg.load_admin_token()?;
    let admin = TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|e| bind("admin", cfg.admin_listen, e))?;
    let addrs = NodeAddrs {
        signaling: signaling
            .local_addr()
            .map_err(|e| bind("signaling", cfg.signaling_listen, e))?,
        rtc,
        admin: admin
            .local_addr()
            .map_err(|e| bind("admin", cfg.admin_listen, e))?,
        pipe: None,
    };
    let mut addrs = addrs;
    let (stop, _) = broadcast::channel::<()>(1);
    let pipes = start_pipes(&cfg, &stop).await?;
    addrs.pipe = pipes.as_ref().map(|(h, _)| h.local_addr());
    let static_mode = !cfg.static_peers.is_empty();

    let record = node_record(&cfg, &addrs);
    let registry = if static_mode {
        None
    } else {
        match start_registry(&cfg, &record, &stop).await {
            Ok(r) => Some(r),
            Err(e) => {
                // The pipe endpoint already runs: stop it before refusing to start.
                let _ = stop.send(());
                if let Some((h, _)) = &pipes {
                    h.stopped().await;
                }
                return Err(e);
            }
        }
    };

    let identity = DtlsIdentity::generate()?;
    let worker = Worker::new(
        WorkerConfig {
            announced_address: cfg.effective_announced_address(),
            rtc_port: rtc.port(),
            consent_timeout: cfg.consent_timeout(),
            max_peers_per_room: cfg.max_peers_per_room,
        },
        identity.fingerprints().to_vec(),
        rand::random(),
    );

    let mut worker = worker;
    let directory_config = DirectoryConfig {
        max_peers_per_room: cfg.max_peers_per_room,
        ..DirectoryConfig::default()
    };
    let directory: Box<dyn RoomDirectory + Send> = if static_mode {
        Box::new(GossipDirectory::new(directory_config))
    } else {
        Box::new(ClusterDirectory::new(record, directory_config))
    };
    worker.enable_pipes(directory, Duration::from_secs(cfg.pipe_grace_secs));
    worker.set_routing(Instant::now(), cfg.routing);
    worker.set_ntp_origin(
        Instant::now(),
        ntp_from_system_time(std::time::SystemTime::now()),
    );
    let worker_counters = worker.counters();
    let (cmd_tx, cmd_rx) = mpsc::channel(WORKER_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(WORKER_QUEUE);
    let counters = Arc::new(NodeCounters::default());
    let mut tasks = JoinSet::new();

    let udp = Arc::new(udp);
    let (inspect_tx, inspect_rx) = mpsc::channel(INSPECT_QUEUE);
    let (registry_kind, registry_status, registry_io) = match registry {
        Some((kind, h)) => (kind, Some(h.status.clone()), Some((h.ops, h.updates))),
        None => ("static", None, None),
    };
    if let Some(mut status) = registry_status.clone() {
        // The node has stopped once the registry has: the etcd backend revokes the lease on
        // the way out (so this node's keys vanish at once), and its status channel closes
        // when it is done.
        tasks.spawn(async move { while status.changed().await.is_ok() {} });
    }
    let (pipe_handle, pipe_events) = match pipes {
        Some((h, rx)) => (Some(h), Some(rx)),
        None => (None, None),
    };
    if let Some(h) = pipe_handle.clone() {
        // The node has stopped once the pipe endpoint has closed its connections.
        let mut s = stop.subscribe();
        tasks.spawn(async move {
            let _ = s.recv().await;
            h.stopped().await;
        });
    }
    tasks.spawn(worker_task(
        worker,
        identity,
        udp,
        cmd_rx,
        ev_rx,
        ev_tx.clone(),
        pipe_handle.clone(),
        pipe_events,
        registry_io,
        inspect_rx,
        counters.clone(),
        cfg.pipe_layer_shedding,
        stop.subscribe(),
    ));
    tasks.spawn(tcp_accept(tcp, ev_tx, counters.clone(), stop.subscribe()));

    let app = sig::router(
        cmd_tx,
        sig::SignalingSettings::from_config(&cfg, worker_counters.clone())?,
    );
    let mut s = stop.subscribe();
    tasks.spawn(async move {
        let r = axum::serve(signaling, app)
            .with_graceful_shutdown(async move {
                let _ = s.recv().await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "signaling server failed");
        }
    });
    let pipe_peers = cfg
        .parsed_static_peers()
        .map(|v| v.into_iter().map(|p| p.node_id).collect())
        .unwrap_or_default();
    log_admin_access(&cfg, addrs.admin, admin_token.is_some());
    let (cpu_tx, cpu_percent) = tokio::sync::watch::channel(None);
    tasks.spawn(crate::admin::api::sample_cpu(cpu_tx, stop.subscribe()));
    let admin_app = crate::admin::router(AdminState {
        node_id: cfg.node_id.clone(),
        region: cfg.region.clone(),
        node: counters,
        worker: worker_counters,
        pipes: pipe_handle,
        static_peers: pipe_peers,
        registry: registry_status,
        registry_kind,
        inspect: inspect_tx.clone(),
        token: admin_token,
        process: crate::admin::api::ProcessInfo {
            started,
            started_at_ms,
            cpu_percent,
        },
    });
    let mut s = stop.subscribe();
    tasks.spawn(async move {
        let r = axum::serve(admin, admin_app)
            .with_graceful_shutdown(async move {
                let _ = s.recv().await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok((addrs, stop, tasks, inspect_tx))
}

/// Says at start who may use the admin API: token holders, or anyone who reaches the
/// listener (a warning unless that is loopback only).
fn log_admin_access(cfg: &Config, admin: SocketAddr, token: bool) {
    if token {
        if cfg.admin_token_file.is_some() && cfg.admin_token.is_some() {
            tracing::warn!("admin API: PIPEMESH_ADMIN_TOKEN ignored, --admin-token-file wins");
        }
        tracing::info!(%admin, "admin API: bearer token required (except /healthz and /readyz)");
    } else if !admin.ip().is_loopback() {
        tracing::warn!(
            %admin,
            "admin API open to anyone who reaches it (no --admin-token-file or PIPEMESH_ADMIN_TOKEN)"
        );
    }
}

/// Starts the pipe endpoint when pipes are configured: the identity from the cluster PKI (or
/// a throwaway one with `--insecure-pipes`), static peers resolved now.
async fn start_pipes(
    cfg: &Config,
    stop: &broadcast::Sender<()>,
) -> Result<Option<(PipeHandle, mpsc::Receiver<PipeEvent>)>, NodeError> {
    let peers = cfg
        .parsed_static_peers()
        .map_err(|e| NodeError::Pipe(e.to_string()))?;
    let Some(listen) = cfg.pipe_listen else {
        if peers.is_empty() {
            return Ok(None);
        }
        return Err(NodeError::Pipe(
            "static peers need --pipe-listen (the address they reach this node on)".into(),
        ));
    };
    let identity = match (&cfg.cluster_ca, &cfg.node_cert, &cfg.node_key) {
        (Some(ca), Some(cert), Some(key)) => PipeIdentity::from_files(&cfg.node_id, ca, cert, key)
            .map_err(|e| NodeError::Pipe(e.to_string()))?,
        _ if cfg.insecure_pipes => {
            PipeIdentity::insecure(&cfg.node_id).map_err(|e| NodeError::Pipe(e.to_string()))?
        }
        _ => {
            return Err(NodeError::Pipe(
                "pipes need --cluster-ca, --node-cert and --node-key (or --insecure-pipes)".into(),
            ))
        }
    };
    let mut resolved = Vec::with_capacity(peers.len());
    for p in peers {
        let addr = tokio::net::lookup_host(&p.address)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                NodeError::Pipe(format!(
                    "cannot resolve static peer {}={}",
                    p.node_id, p.address
                ))
            })?;
        resolved.push((p.node_id, addr));
    }
    let mut s = stop.subscribe();
    let (handle, events) = PipeEndpoint::start(
        EndpointConfig {
            bind: listen,
            identity,
            cluster: cfg.cluster.clone(),
            peers: resolved,
            accept_unknown: !cfg.etcd_endpoints.is_empty(),
            tuning: TransportTuning::default(),
            link: LinkConfig {
                rng_seed: rand::random(),
                idle_linger: Duration::from_secs(cfg.pipe_idle_linger_secs),
                ..LinkConfig::default()
            },
        },
        async move {
            let _ = s.recv().await;
        },
    )
    .map_err(|e| NodeError::Pipe(e.to_string()))?;
    tracing::info!(listen = %handle.local_addr(), "pipe endpoint listening");
    Ok(Some((handle, events)))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Tries of [`bind_rtc`] for a port chosen by the system.
const RTC_BIND_TRIES: usize = 16;

/// Binds the media port for UDP and TCP. With port 0 the system picks a free UDP port, which
/// TCP may already use (an outgoing connection's port, say): then another pair is tried.
async fn bind_rtc(listen: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), NodeError> {
    let bind = |what, addr, source| NodeError::Bind { what, addr, source };
    let tries = if listen.port() == 0 {
        RTC_BIND_TRIES
    } else {
        1
    };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| bind("rtc UDP", listen, e))?;
        let rtc = udp.local_addr().map_err(|e| bind("rtc UDP", listen, e))?;
        match TcpListener::bind(rtc).await {
            Ok(tcp) => return Ok((udp, tcp, rtc)),
            Err(e) => last = Some(bind("rtc TCP", rtc, e)),
        }
    }
    Err(last.expect("at least one try"))
}

/// This node's record in the cluster registry.
fn node_record(cfg: &Config, addrs: &NodeAddrs) -> NodeRecord {
    let started_at_ms = unix_ms();
    NodeRecord {
        node_id: NodeId::from(cfg.node_id.as_str()),
        region: cfg.region.clone(),
        pipe_addr: addrs.pipe.map(|p| cfg.effective_pipe_address(p.port())),
        signaling_url: cfg.effective_signaling_url(addrs.signaling.port()),
        admin_url: format!("http://{}", addrs.admin),
        state: NodeState::Serving,
        load: NodeLoad::default(),
        software: concat!("pipemesh ", env!("CARGO_PKG_VERSION")).to_owned(),
        started_at_ms,
        incarnation: uuid::Uuid::new_v4().to_string(),
    }
}

/// Starts the registry: etcd with `--etcd-endpoints`, the in-process one otherwise. Fails when
/// etcd cannot be reached in time or another live node has this node's id.
async fn start_registry(
    cfg: &Config,
    record: &NodeRecord,
    stop: &broadcast::Sender<()>,
) -> Result<(&'static str, RegistryHandle), NodeError> {
    let registration = Registration {
        node_id: cfg.node_id.clone(),
        node_key: node_key(&record.node_id),
        node_value: serde_json::to_string(record)
            .map_err(|e| NodeError::Pipe(format!("node record: {e}")))?,
    };
    if cfg.etcd_endpoints.is_empty() {
        return run_registry(InProcessRegistry, registration, stop).await;
    }
    let tls = if cfg.etcd_ca.is_some() || cfg.etcd_cert.is_some() {
        Some(etcd::EtcdTls {
            ca: cfg.etcd_ca.clone(),
            cert: cfg.etcd_cert.clone(),
            key: cfg.etcd_key.clone(),
            domain: None,
        })
    } else {
        None
    };
    let auth = match &cfg.etcd_user {
        Some(user) => Some(etcd::EtcdAuth {
            user: user.clone(),
            password: cfg.etcd_password()?.unwrap_or_default(),
        }),
        None => None,
    };
    let backend = etcd::EtcdConfig {
        lease_ttl: Duration::from_secs(cfg.etcd_lease_ttl_secs),
        connect_timeout: Duration::from_secs(cfg.etcd_connect_timeout_secs),
        tls,
        auth,
        ..etcd::EtcdConfig::new(cfg.etcd_endpoints.clone(), cfg.cluster.clone())
    };
    let started = run_registry(backend, registration, stop).await?;
    tracing::info!(endpoints = %cfg.etcd_endpoints.join(","), cluster = %cfg.cluster, "joined the cluster through etcd");
    Ok(started)
}

/// Starts any [`Registry`] backend until the node stops.
async fn run_registry(
    backend: impl Registry,
    registration: Registration,
    stop: &broadcast::Sender<()>,
) -> Result<(&'static str, RegistryHandle), NodeError> {
    let kind = backend.kind();
    let mut s = stop.subscribe();
    let handle = backend
        .start(registration, async move {
            let _ = s.recv().await;
        })
        .await?;
    Ok((kind, handle))
}

/// Waits for the next registry update, or forever when the node has no registry.
async fn next_registry_update(
    io: &mut Option<(
        mpsc::UnboundedSender<RegistryOp>,
        mpsc::Receiver<RegistryUpdate>,
    )>,
) -> Option<RegistryUpdate> {
    match io {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Asks the pipe endpoint for a link to `node` at `addr` (`HOST:PORT`, resolved if needed).
fn want_link(pipe: &PipeHandle, node: NodeId, addr: String) {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        if let Err(e) = pipe.want(node.as_str(), a) {
            tracing::warn!(%node, %addr, error = %e, "cannot link to node");
        }
        return;
    }
    let pipe = pipe.clone();
    tokio::spawn(async move {
        match tokio::net::lookup_host(&addr).await.map(|mut a| a.next()) {
            Ok(Some(a)) => {
                if let Err(e) = pipe.want(node.as_str(), a) {
                    tracing::warn!(%node, %addr, error = %e, "cannot link to node");
                }
            }
            Ok(None) | Err(_) => {
                tracing::warn!(%node, %addr, "cannot resolve the node's pipe address")
            }
        }
    });
}

/// Waits for the next pipe event, or forever when the node has no pipes.
async fn next_pipe_event(rx: &mut Option<mpsc::Receiver<PipeEvent>>) -> Option<PipeEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Feeds every pipe link's loss and RTT to the worker (layer shedding, once per
/// [`PIPE_RATE_SAMPLE_INTERVAL`]) and records the shed level it answers for `/metrics`.
fn feed_link_samples(worker: &mut Worker, pipe: &PipeHandle) {
    let now = Instant::now();
    for peer in pipe.peers() {
        let Some(st) = pipe.stats(&peer) else {
            continue;
        };
        let node = NodeId::from(peer.as_str());
        let sample = LinkSample {
            loss_percent: st.loss_percent,
            rtt_us: st.rtt_us,
            sent_packets: st.sent_packets,
            lost_packets: st.lost_packets,
        };
        let level = worker.handle_pipe_link_sample(now, &node, sample);
        if level != st.shed_layers {
            pipe.set_shed_layers(&peer, level);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker_task(
    mut worker: Worker,
    identity: DtlsIdentity,
    udp: Arc<UdpSocket>,
    mut commands: mpsc::Receiver<WorkerCommand>,
    mut events: mpsc::Receiver<Event>,
    event_tx: mpsc::Sender<Event>,
    pipe: Option<PipeHandle>,
    mut pipe_events: Option<mpsc::Receiver<PipeEvent>>,
    mut registry: Option<(
        mpsc::UnboundedSender<RegistryOp>,
        mpsc::Receiver<RegistryUpdate>,
    )>,
    mut inspect: mpsc::Receiver<Inspect>,
    counters: Arc<NodeCounters>,
    shedding: bool,
    mut stop: broadcast::Receiver<()>,
) {
    // When an operator's drain deadline passes, the sessions still open are closed.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut load_tick = tokio::time::interval(LOAD_PUBLISH_INTERVAL);
    load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut link_tick = tokio::time::interval(PIPE_RATE_SAMPLE_INTERVAL);
    link_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sessions: HashMap<SessionId, mpsc::Sender<ToPeer>> = HashMap::new();
    let mut tcp_writers: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut dtls: HashMap<TransportId, DtlsSession> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let rtp_header_byte = DatagramKind::Rtp.header_byte();
    loop {
        // An RTP packet from a producer taken at this instant on this transport: its
        // forwarding latency is observed once what it caused has been handed on.
        let mut rtp_in: Option<(Instant, Kind)> = None;
        let deadline = worker.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.recv() => break,
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let now = Instant::now();
                    // n <= buf.len() by recv_from's contract.
                    let data = &buf[..n];
                    if classify(data) == PacketClass::Rtp {
                        rtp_in = Some((now, Kind::Udp));
                    }
                    worker.handle_packet(now, Tuple { protocol: Protocol::Udp, remote: from }, data);
                }
                Err(e) => tracing::debug!(error = %e, "udp recv error"),
            },
            Some(ev) = events.recv() => match ev {
                Event::TcpPacket(tuple, data) => {
                    let now = Instant::now();
                    if classify(&data) == PacketClass::Rtp {
                        rtp_in = Some((now, Kind::Tcp));
                    }
                    worker.handle_packet(now, tuple, &data);
                }
                Event::TcpOpened(remote, tx) => { tcp_writers.insert(remote, tx); }
                Event::TcpClosed(remote) => {
                    tcp_writers.remove(&remote);
                    worker.handle_tcp_closed(Instant::now(), remote);
                }
                Event::Dtls(t, e) => worker.handle_dtls(Instant::now(), &t, e),
            },
            Some(cmd) = commands.recv() => match cmd {
                WorkerCommand::Open { session, room, peer, to_peer } => {
                    sessions.insert(session, to_peer);
                    worker.handle_session_open(Instant::now(), session, room, peer);
                }
                WorkerCommand::Request { session, request, reply } => {
                    let _ = reply.send(worker.handle_request(Instant::now(), session, request));
                }
                WorkerCommand::ConsumerAnswered { session, consumer, accepted } => {
                    worker.handle_consumer_answer(Instant::now(), session, &consumer, accepted);
                }
                WorkerCommand::Closed { session } => {
                    sessions.remove(&session);
                    worker.handle_session_closed(Instant::now(), session);
                }
            },
            Some(ev) = next_pipe_event(&mut pipe_events) => {
                let now = Instant::now();
                match ev {
                    PipeEvent::LinkUp { node_id } => worker.handle_pipe_link_up(now, &NodeId::from(node_id.as_str())),
                    PipeEvent::LinkDown { node_id } => worker.handle_pipe_link_down(now, &NodeId::from(node_id.as_str())),
                    PipeEvent::Control { node_id, msg } => worker.handle_pipe_control(now, &NodeId::from(node_id.as_str()), msg),
                    PipeEvent::Datagram { node_id, data } => {
                        if data.first() == Some(&rtp_header_byte) {
                            rtp_in = Some((now, Kind::Pipe));
                        }
                        worker.handle_pipe_datagram(now, &NodeId::from(node_id.as_str()), &data);
                    }
                    PipeEvent::Refused { node_id, reason } => {
                        tracing::warn!(node = %node_id, %reason, "pipe link refused by peer");
                    }
                }
            }
            Some(update) = next_registry_update(&mut registry) => {
                worker.handle_registry_update(Instant::now(), update);
            }
            Some(q) = inspect.recv() => match q {
                Inspect::Cluster(reply) => {
                    let _ = reply.send(worker.cluster_view_json());
                }
                Inspect::Sessions(reply) => {
                    let _ = reply.send(worker.session_count());
                }
                Inspect::Links(reply) => {
                    let _ = reply.send(worker.pipe_link_reports());
                }
                Inspect::Node(reply) => {
                    let _ = reply.send(worker.node_counts());
                }
                Inspect::Room { room, node, reply } => {
                    let _ = reply.send(worker.room_report(Instant::now(), &room, &node));
                }
                Inspect::Drain { draining, deadline_ms } => {
                    worker.set_draining(Instant::now(), draining, deadline_ms);
                }
            },
            _ = async {
                match drain_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                drain_deadline = None;
                tracing::info!(sessions = sessions.len(), "drain deadline reached; closing the remaining sessions");
                for tx in sessions.values() {
                    let _ = tx.try_send(ToPeer::Close);
                }
            }
            _ = load_tick.tick() => worker.publish_load(Instant::now(), unix_ms()),
            _ = link_tick.tick(), if pipe.is_some() && shedding => {
                if let Some(pipe) = &pipe {
                    feed_link_samples(&mut worker, pipe);
                }
            }
            _ = sleep => worker.handle_timeout(Instant::now()),
        }
        let mut stuck: Vec<SessionId> = Vec::new();
        let mut closing: Vec<SessionId> = Vec::new();
        // Packets handed to a socket, a TCP writer or the pipe endpoint.
        let mut handed_on = 0usize;
        loop {
            while let Some(out) = worker.poll_output() {
                match out {
                    Output::Transmit { tuple, data } => {
                        let sent = match tuple.protocol {
                            // Non-blocking: a full socket buffer drops the packet, as a router would.
                            Protocol::Udp => udp.try_send_to(&data, tuple.remote).is_ok(),
                            Protocol::Tcp => tcp_writers
                                .get(&tuple.remote)
                                .is_some_and(|w| w.try_send(data).is_ok()),
                        };
                        if sent {
                            handed_on += 1;
                        } else {
                            counters.send_drops.add(tuple.protocol);
                        }
                    }
                    Output::ToPeer { session, msg } => {
                        if let Some(tx) = sessions.get(&session) {
                            match tx.try_send(msg) {
                                Ok(()) => {}
                                // The session is ending: its Closed command is on its way.
                                Err(mpsc::error::TrySendError::Closed(_)) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    if !stuck.contains(&session) {
                                        tracing::warn!(
                                            session,
                                            "peer queue full; disconnecting it"
                                        );
                                        stuck.push(session);
                                    }
                                }
                            }
                        }
                    }
                    Output::DtlsStart {
                        transport,
                        role,
                        fingerprints,
                    } => {
                        let tx = event_tx.clone();
                        let t = transport.clone();
                        let s = DtlsSession::start(
                            &identity,
                            role,
                            fingerprints,
                            DTLS_HANDSHAKE_TIMEOUT,
                            move |e| {
                                let _ = tx.try_send(Event::Dtls(t.clone(), e));
                            },
                        );
                        dtls.insert(transport, s);
                    }
                    Output::DtlsFeed { transport, data } => {
                        if let Some(s) = dtls.get(&transport) {
                            s.feed(&data);
                        }
                    }
                    Output::DtlsStop { transport } => {
                        dtls.remove(&transport);
                    }
                    Output::CloseTcp { remote } => {
                        // Dropping the writer ends the writer task, which closes the socket.
                        tcp_writers.remove(&remote);
                    }
                    Output::PipeControl { node, msg } => {
                        if let Some(p) = &pipe {
                            if let Err(e) = p.send_control(node.as_str(), msg) {
                                tracing::debug!(%node, error = %e, "pipe control not sent");
                            }
                        }
                    }
                    Output::PipeDatagram { node, data } => {
                        if let Some(p) = &pipe {
                            // Counted by the endpoint when dropped (link down, too large).
                            if p.send_datagram(node.as_str(), data).is_ok() {
                                handed_on += 1;
                            }
                        }
                    }
                    Output::PipeWanted { node, addr } => {
                        if let Some(p) = &pipe {
                            want_link(p, node, addr);
                        }
                    }
                    Output::PipeUnwanted { node } => {
                        if let Some(p) = &pipe {
                            p.unwant(node.as_str());
                        }
                    }
                    Output::Drain {
                        draining,
                        deadline_ms,
                    } => {
                        counters.draining.store(draining, Ordering::Relaxed);
                        drain_deadline = match (draining, deadline_ms) {
                            (true, Some(ms)) => Some(
                                tokio::time::Instant::now()
                                    + Duration::from_millis(ms.saturating_sub(unix_ms())),
                            ),
                            _ => None,
                        };
                    }
                    Output::Registry(op) => {
                        if let Some((ops, _)) = &registry {
                            // Only fails once the registry task has stopped (shutdown).
                            let _ = ops.send(op);
                        }
                    }
                }
            }
            // A peer that cannot keep up leaves its room; dropping its sender ends its session.
            // Its departure has outputs of its own (notifications, registry writes): the loop
            // dispatches them; a peer found stuck while they are sent is closed the same way.
            stuck.retain(|s| !closing.contains(s));
            if stuck.is_empty() {
                break;
            }
            for session in stuck.drain(..) {
                closing.push(session);
                sessions.remove(&session);
                worker.handle_session_closed(Instant::now(), session);
            }
        }
        if let (Some((at, ingress)), true) = (rtp_in, handed_on > 0) {
            counters.forwarding_latency.observe(ingress, at.elapsed());
        }
    }
    for (_, tx) in sessions {
        let _ = tx.try_send(ToPeer::Close);
    }
}

async fn tcp_accept(
    listener: TcpListener,
    events: mpsc::Sender<Event>,
    counters: Arc<NodeCounters>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    if conns.len() >= MAX_TCP_CONNECTIONS {
                        tracing::warn!(%remote, "too many TCP media connections; refusing");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    conns.spawn(tcp_conn(stream, remote, events.clone(), counters.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn tcp_conn(
    stream: TcpStream,
    remote: SocketAddr,
    events: mpsc::Sender<Event>,
    counters: Arc<NodeCounters>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_WRITE_QUEUE);
    if events.send(Event::TcpOpened(remote, tx)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else {
                continue;
            };
            let hdr = encode_frame_header(len);
            if wr.write_all(&hdr).await.is_err() || wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let tuple = Tuple {
        protocol: Protocol::Tcp,
        remote,
    };
    let mut decoder = FrameDecoder::new(MAX_TCP_FRAME);
    'read: loop {
        // Read straight into the decoder's free space: no intermediate copy.
        let n = match tokio::time::timeout(TCP_IDLE_TIMEOUT, rd.read(decoder.read_buf())).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        decoder.commit(n);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if events
                        .send(Event::TcpPacket(tuple, Bytes::copy_from_slice(frame)))
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "bad RFC 4571 framing; closing");
                    counters.tcp_framing_errors.fetch_add(1, Ordering::Relaxed);
                    break 'read;
                }
            }
        }
    }
    writer.abort();
    let _ = events.send(Event::TcpClosed(remote)).await;
}

/// NTP time (RFC 3550: seconds since 1900 in the high 32 bits) of a wall-clock instant.
fn ntp_from_system_time(t: std::time::SystemTime) -> u64 {
    /// Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch).
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let unix = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
    ((unix.as_secs() + NTP_UNIX_OFFSET) << 32) | frac
}
