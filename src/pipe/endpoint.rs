//! The QUIC pipe endpoint: one `quinn::Endpoint` per node, server and client at once, holding
//! one link per remote node. Glue only: the dialing side is driven by the sans-IO
//! [`LinkState`]; framing and checks come from [`crate::pipe::wire`] and [`crate::pipe::tls`].
//!
//! One link per pair of nodes: the node whose id is lexicographically smaller dials, the other
//! only accepts (and refuses a dial from a larger id with [`RefuseCode::DuplicateLink`]), so two
//! nodes never race each other into two connections.
//!
//! Which nodes: static peers ([`EndpointConfig::peers`]) are always needed and dialed from the
//! start. Nodes learned at run time get a link on demand: [`PipeHandle::want`] needs it,
//! [`PipeHandle::unwant`] lets it close after [`LinkConfig::idle_linger`]; with
//! [`EndpointConfig::accept_unknown`] a node that is not a static peer may dial us. Each node has
//! one slot (counters, the up link) for as long as it matters; at most [`MAX_PEERS`] slots, idle
//! dynamic ones are forgotten to make room.
//!
//! A link is one QUIC connection: the first bidirectional stream (opened by the dialer) carries
//! the Hello/HelloAck handshake and then length-prefixed control frames; media travels as QUIC
//! datagrams validated with [`parse_datagram`]. Malformed control frames that the decoder can
//! skip are counted and skipped, fatal ones close the link; garbage datagrams are counted and
//! dropped. Every queue is bounded and every task stops when the shutdown future completes.
//!
//! Figures of a link ([`PipeHandle::stats`]): our counters, quinn's path statistics of the live
//! connection (RTT, congestion window, packets sent and lost; those of closed connections are
//! added in, so the totals only grow), and bitrate and loss over the last few seconds
//! ([`crate::timing::PIPE_RATE_WINDOW`]), from a task that samples every link every
//! [`PIPE_RATE_SAMPLE_INTERVAL`] (see [`crate::pipe::rate`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{mpsc, watch};

use crate::ids::NodeId;
use crate::pipe::link::{LinkAction, LinkConfig, LinkError, LinkState};
use crate::pipe::rate::{loss_percent, Window};
use crate::pipe::tls::{self, PipeIdentity, TlsError, TransportTuning};
use crate::pipe::wire::{
    check_hello, encode_control, negotiated_version, parse_datagram, ControlDecoder,
    ControlMessage, Hello, Refusal, RefuseCode, PROTOCOL_VERSION,
};
use crate::timing::PIPE_RATE_SAMPLE_INTERVAL;

/// Capacity of the event channel returned by [`PipeEndpoint::start`].
pub const EVENT_QUEUE: usize = 1024;
/// Capacity of each link's outgoing control queue.
pub const CONTROL_QUEUE: usize = 256;
/// Incoming connections being handshaken at once; more are refused.
pub const MAX_PENDING_ACCEPTS: usize = 64;
/// Nodes with a slot at once (static, wanted or accepted). When full, idle dynamic slots (not
/// wanted, link down) are forgotten to make room; if none is idle, new nodes are refused.
pub const MAX_PEERS: usize = 1024;
/// How long a refusing side waits for the peer to read its Refuse and close.
const REFUSE_LINGER: Duration = Duration::from_millis(500);
/// Bytes read from the control stream per wake-up.
const READ_CHUNK: usize = 16 * 1024;

/// Errors of [`PipeEndpoint::start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The TLS or transport configuration could not be built.
    #[error("pipe TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// The link configuration is invalid.
    #[error("pipe link configuration: {0}")]
    Link(#[from] LinkError),
    /// The UDP socket could not be bound.
    #[error("cannot bind the pipe endpoint: {0}")]
    Bind(#[source] std::io::Error),
    /// A static peer is listed twice or is this node itself.
    #[error("invalid static peer {0:?}")]
    InvalidPeer(String),
}

/// Errors of [`PipeHandle::want`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WantError {
    /// The node is this node itself.
    #[error("{0:?} is this node")]
    OwnId(String),
    /// The endpoint has shut down; no link is opened any more.
    #[error("the pipe endpoint has shut down")]
    Stopped,
    /// [`MAX_PEERS`] nodes have a slot and none of them is idle.
    #[error("{0} pipe peers already, none idle")]
    TooManyPeers(usize),
}

/// Errors of [`PipeHandle::send_control`] and [`PipeHandle::send_datagram`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The node has no slot: not a static peer, never wanted, never accepted (or forgotten).
    #[error("unknown pipe peer {0:?}")]
    UnknownPeer(String),
    /// The link to the node is not up; nothing was sent.
    #[error("pipe link to {0:?} is down")]
    LinkDown(String),
    /// The link's control queue is full; the message was not queued.
    #[error("pipe control queue to {0:?} is full")]
    QueueFull(String),
    /// QUIC refused the datagram (too large, or datagrams disabled by the peer).
    #[error("datagram to {node_id:?} refused: {reason}")]
    Datagram {
        /// The peer.
        node_id: String,
        /// quinn's reason.
        reason: String,
    },
}

/// What the endpoint reports to the node.
#[derive(Debug, Clone, PartialEq)]
pub enum PipeEvent {
    /// The link to `node_id` is up (handshake done).
    LinkUp {
        /// The peer.
        node_id: String,
    },
    /// The link to `node_id` that was up is not any more.
    LinkDown {
        /// The peer.
        node_id: String,
    },
    /// A control message from `node_id` (handshake messages are handled here and not reported).
    Control {
        /// The peer.
        node_id: String,
        /// The message.
        msg: ControlMessage,
    },
    /// A well-formed datagram from `node_id`; dropped instead when the event queue is full.
    Datagram {
        /// The peer.
        node_id: String,
        /// The whole datagram, header included (parse it with [`parse_datagram`]).
        data: Bytes,
    },
    /// `node_id` refused our Hello.
    Refused {
        /// The peer.
        node_id: String,
        /// Its reason.
        reason: String,
    },
}

/// Configuration of [`PipeEndpoint::start`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Address to bind (UDP).
    pub bind: SocketAddr,
    /// This node's identity.
    pub identity: PipeIdentity,
    /// The cluster name; Hellos from other clusters are refused.
    pub cluster: String,
    /// Static peers: node id and address. Always needed; [`PipeHandle::unwant`] ignores them.
    pub peers: Vec<(String, SocketAddr)>,
    /// Accept links from nodes that are not static peers (cluster discovery), once TLS has
    /// authenticated them: a certificate of the cluster CA, whose id is the node's, or with an
    /// insecure identity the id of the Hello. Otherwise such nodes are refused with
    /// [`RefuseCode::WrongNodeId`].
    pub accept_unknown: bool,
    /// QUIC transport settings.
    pub tuning: TransportTuning,
    /// Reconnect and handshake timing of dialed links (the seed is mixed with each peer id), and
    /// how long an unwanted link lingers ([`LinkConfig::idle_linger`]).
    pub link: LinkConfig,
}

/// Counters of one link, kept across reconnects, and figures of its current connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStats {
    /// Whether the link is up.
    pub up: bool,
    /// Datagrams received and handed up.
    pub datagrams_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Received datagrams that failed [`parse_datagram`] and were dropped.
    pub garbage_datagrams: u64,
    /// Datagrams dropped because the event queue was full or the link was down.
    pub dropped_datagrams: u64,
    /// Control frames that could not be decoded and were skipped.
    pub skipped_control: u64,
    /// Control messages received.
    pub control_in: u64,
    /// Control messages queued for sending.
    pub control_out: u64,
    /// Dials started (QUIC connection attempts); stays 0 on the accepting side.
    pub dials: u64,
    /// Smoothed round-trip time of the current connection (quinn's estimate), in
    /// microseconds; 0 while the link is down.
    pub rtt_us: u64,
    /// Congestion window of the current connection, in bytes; 0 while the link is down.
    pub congestion_window: u64,
    /// QUIC packets sent, over every connection of the link (media, control and acks).
    pub sent_packets: u64,
    /// Of those, packets quinn declared lost.
    pub lost_packets: u64,
    /// `lost_packets` over `sent_packets` across the last rate window
    /// ([`crate::timing::PIPE_RATE_WINDOW`]), in percent.
    pub loss_percent: f64,
    /// Datagram bytes received per second across the last rate window, in bits per second
    /// (media payload: `bytes_in`'s rate, without QUIC and UDP overhead).
    pub bitrate_in_bps: u64,
    /// The same for `bytes_out`.
    pub bitrate_out_bps: u64,
    /// When the current connection came up (handshake done), in Unix milliseconds.
    pub up_since_ms: Option<u64>,
    /// Upper simulcast layers the worker withholds from the peer because the link is
    /// congested ([`crate::pipe::shedding`]), as the glue last recorded it
    /// ([`PipeHandle::set_shed_layers`]).
    pub shed_layers: u8,
}

/// One remote node: its link (when up), counters, and why it is known.
#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    control: Option<mpsc::Sender<ControlMessage>>,
    generation: u64,
    /// Our counters. Its `sent_packets` and `lost_packets` are those of closed connections:
    /// [`Slot::snapshot`] adds the live connection's.
    stats: LinkStats,
    /// Windows over `bytes_in`, `bytes_out` and the packet totals, fed by [`rate_task`].
    rate_in: Window,
    rate_out: Window,
    sent_window: Window,
    lost_window: Window,
    /// A static peer: always needed, never forgotten.
    fixed: bool,
    /// A room needs the link ([`PipeHandle::want`]).
    wanted: bool,
    /// The dial task, when this node dials the remote one.
    dialer: Option<Dialer>,
}

impl Slot {
    /// Whether the slot may be forgotten to make room.
    fn idle(&self) -> bool {
        !self.fixed && !self.wanted && self.conn.is_none()
    }

    /// Packets (sent, lost) over every connection, the live one included.
    fn packet_totals(&self) -> (u64, u64) {
        let live = self.conn.as_ref().map(|c| c.stats().path);
        (
            self.stats.sent_packets + live.as_ref().map_or(0, |p| p.sent_packets),
            self.stats.lost_packets + live.as_ref().map_or(0, |p| p.lost_packets),
        )
    }

    /// The link's figures as of now.
    fn snapshot(&self) -> LinkStats {
        let mut st = self.stats.clone();
        if let Some(c) = &self.conn {
            let path = c.stats().path;
            st.rtt_us = u64::try_from(path.rtt.as_micros()).unwrap_or(u64::MAX);
            st.congestion_window = path.cwnd;
        }
        (st.sent_packets, st.lost_packets) = self.packet_totals();
        st.loss_percent = loss_percent(&self.lost_window, &self.sent_window);
        st.bitrate_in_bps = self.rate_in.per_second().saturating_mul(8);
        st.bitrate_out_bps = self.rate_out.per_second().saturating_mul(8);
        st
    }

    /// Takes the live connection out of the slot, keeping its packet counts.
    fn retire_conn(&mut self) -> Option<Connection> {
        let conn = self.conn.take()?;
        let path = conn.stats().path;
        self.stats.sent_packets += path.sent_packets;
        self.stats.lost_packets += path.lost_packets;
        self.stats.up_since_ms = None;
        Some(conn)
    }

    /// Feeds the rate windows with the counters as of `now`.
    fn sample(&mut self, now: Instant) {
        let (sent, lost) = self.packet_totals();
        self.rate_in.sample(now, self.stats.bytes_in);
        self.rate_out.sample(now, self.stats.bytes_out);
        self.sent_window.sample(now, sent);
        self.lost_window.sample(now, lost);
    }
}

/// The node's end of a dial task. Dropping it stops the task, which closes its connection.
struct Dialer {
    addr: SocketAddr,
    /// Whether the link is needed; the task feeds changes to [`LinkState::need`] and
    /// [`LinkState::no_longer_needed`]. Latest value wins: need is a level, not a queue.
    need: watch::Sender<bool>,
}

/// What starting a dial task takes; dropped at shutdown so none starts after it.
struct Spawner {
    endpoint: quinn::Endpoint,
    runtime: tokio::runtime::Handle,
    alive: Alive,
}

struct Shared {
    local_id: String,
    cluster: String,
    identity: PipeIdentity,
    tuning: TransportTuning,
    /// Link timing, validated by [`PipeEndpoint::start`].
    link: LinkConfig,
    accept_unknown: bool,
    /// Lock order: `slots` before `spawner`.
    slots: Mutex<HashMap<String, Slot>>,
    spawner: Mutex<Option<Spawner>>,
    stop: watch::Receiver<bool>,
    events: mpsc::Sender<PipeEvent>,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A poisoned lock only means another task panicked mid-update of counters.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawner(&self) -> MutexGuard<'_, Option<Spawner>> {
        // Poisoning cannot leave an `Option` half-written.
        self.spawner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_slot<R>(&self, node_id: &str, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.slots().get_mut(node_id).map(f)
    }
}

/// Inserts an empty slot for `node_id` unless it has one, forgetting idle slots when full.
fn ensure_slot<'a>(
    slots: &'a mut HashMap<String, Slot>,
    node_id: &str,
) -> Result<&'a mut Slot, WantError> {
    if !slots.contains_key(node_id) {
        if slots.len() >= MAX_PEERS {
            // Dropping a forgotten slot's dialer stops its task.
            slots.retain(|_, s| !s.idle());
        }
        if slots.len() >= MAX_PEERS {
            return Err(WantError::TooManyPeers(slots.len()));
        }
        tracing::info!(peer = node_id, "new pipe peer");
    }
    Ok(slots.entry(node_id.to_owned()).or_default())
}

/// Starts the dial task of the link to `peer` at `addr`, needed from the start.
fn spawn_dialer(shared: &Arc<Shared>, spawner: &Spawner, peer: &str, addr: SocketAddr) -> Dialer {
    let mut link = shared.link.clone();
    link.rng_seed = seed_for(link.rng_seed, peer);
    // `PipeEndpoint::start` validated the configuration, the only thing `new` checks.
    let state = LinkState::new(NodeId::from(peer), link).expect("link configuration validated");
    let (need, need_rx) = watch::channel(true);
    spawner.runtime.spawn(dial_task(
        shared.clone(),
        spawner.endpoint.clone(),
        peer.to_owned(),
        addr,
        state,
        need_rx,
        shared.stop.clone(),
        spawner.alive.clone(),
    ));
    Dialer { addr, need }
}

/// The node's side of its pipes: send and inspect. Cheap to clone.
#[derive(Clone)]
pub struct PipeHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for PipeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeHandle")
            .field("local_id", &self.shared.local_id)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl PipeHandle {
    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queues a control message on the link to `node_id`.
    pub fn send_control(&self, node_id: &str, msg: ControlMessage) -> Result<(), SendError> {
        let mut slots = self.shared.slots();
        let slot = slots
            .get_mut(node_id)
            .ok_or_else(|| SendError::UnknownPeer(node_id.to_owned()))?;
        let tx = slot
            .control
            .as_ref()
            .ok_or_else(|| SendError::LinkDown(node_id.to_owned()))?;
        match tx.try_send(msg) {
            Ok(()) => {
                slot.stats.control_out += 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(SendError::QueueFull(node_id.to_owned()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(SendError::LinkDown(node_id.to_owned()))
            }
        }
    }

    /// Sends a datagram (built with `write_datagram`) on the link to `node_id`; it is dropped
    /// (and counted) when the link is down.
    pub fn send_datagram(&self, node_id: &str, data: Bytes) -> Result<(), SendError> {
        let mut slots = self.shared.slots();
        let slot = slots
            .get_mut(node_id)
            .ok_or_else(|| SendError::UnknownPeer(node_id.to_owned()))?;
        let Some(conn) = slot.conn.as_ref() else {
            slot.stats.dropped_datagrams += 1;
            return Err(SendError::LinkDown(node_id.to_owned()));
        };
        let len = data.len() as u64;
        match conn.send_datagram(data) {
            Ok(()) => {
                slot.stats.datagrams_out += 1;
                slot.stats.bytes_out += len;
                Ok(())
            }
            Err(e) => {
                slot.stats.dropped_datagrams += 1;
                Err(SendError::Datagram {
                    node_id: node_id.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Counters and figures of the link to `node_id`, if it has a slot (see
    /// [`peers`](Self::peers)). RTT and packet totals are read from the live connection now;
    /// bitrate and loss cover the last rate window ([`crate::timing::PIPE_RATE_WINDOW`]) as of
    /// the last sample.
    pub fn stats(&self, node_id: &str) -> Option<LinkStats> {
        self.shared.with_slot(node_id, |s| s.snapshot())
    }

    /// Records the layers the worker sheds toward `node_id` (for [`LinkStats::shed_layers`]).
    pub fn set_shed_layers(&self, node_id: &str, layers: u8) {
        self.shared
            .with_slot(node_id, |s| s.stats.shed_layers = layers);
    }

    /// Every node with a slot (static, wanted or accepted, until forgotten), sorted.
    pub fn peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.shared.slots().keys().cloned().collect();
        peers.sort_unstable();
        peers
    }

    /// A room needs a link to `node_id`, reachable at `addr`. If this node dials it (our id is
    /// smaller), the link is dialed and kept up, and a changed `addr` (the node restarted
    /// elsewhere) replaces the link; otherwise the other node dials when it wants the link too.
    /// Idempotent. Static peers keep their configured address.
    pub fn want(&self, node_id: &str, addr: SocketAddr) -> Result<(), WantError> {
        let shared = &self.shared;
        if node_id == shared.local_id {
            return Err(WantError::OwnId(node_id.to_owned()));
        }
        let mut slots = shared.slots();
        let spawner = shared.spawner();
        let Some(spawner) = spawner.as_ref() else {
            return Err(WantError::Stopped);
        };
        let slot = ensure_slot(&mut slots, node_id)?;
        if slot.fixed {
            return Ok(());
        }
        slot.wanted = true;
        if shared.local_id.as_str() < node_id {
            match &slot.dialer {
                Some(d) if d.addr == addr => {
                    d.need.send_replace(true);
                }
                old => {
                    if let Some(old) = old {
                        tracing::info!(peer = node_id, old = %old.addr, new = %addr, "pipe peer moved");
                    }
                    // Replacing the old dialer drops it, which stops its task.
                    slot.dialer = Some(spawn_dialer(shared, spawner, node_id, addr));
                }
            }
        }
        Ok(())
    }

    /// No room needs the link to `node_id` any more: a link this node dialed closes after
    /// [`LinkConfig::idle_linger`] unless wanted again; a dial in progress stops. Ignored for
    /// static peers and unknown nodes; on the accepting side the other node closes the link.
    pub fn unwant(&self, node_id: &str) {
        if let Some(slot) = self.shared.slots().get_mut(node_id) {
            if slot.fixed {
                return;
            }
            slot.wanted = false;
            if let Some(d) = &slot.dialer {
                d.need.send_replace(false);
            }
        }
    }

    /// Completes once shutdown has run: every task stopped and the endpoint is idle.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        // An error means the supervisor is gone, which also means stopped.
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Starts a node's pipe endpoint.
pub struct PipeEndpoint;

/// Held by every task; the supervisor knows all stopped when the last is dropped.
type Alive = mpsc::Sender<()>;

impl PipeEndpoint {
    /// Binds `cfg.bind`, dials the static peers whose ids are greater than ours, accepts the
    /// others (and with `accept_unknown` any authenticated node), and runs until `shutdown`
    /// completes.
    pub fn start(
        cfg: EndpointConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(PipeHandle, mpsc::Receiver<PipeEvent>), EndpointError> {
        cfg.link.validate()?;
        let local_id = cfg.identity.node_id().to_owned();
        let mut slots = HashMap::new();
        for (id, _) in &cfg.peers {
            let slot = Slot {
                fixed: true,
                ..Slot::default()
            };
            if *id == local_id || slots.insert(id.clone(), slot).is_some() {
                return Err(EndpointError::InvalidPeer(id.clone()));
            }
        }
        let server = tls::server_config(&cfg.identity, &cfg.tuning)?;
        let endpoint = quinn::Endpoint::server(server, cfg.bind).map_err(EndpointError::Bind)?;
        let local_addr = endpoint.local_addr().map_err(EndpointError::Bind)?;
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let (alive, mut all_stopped) = mpsc::channel::<()>(1);
        let spawner = Spawner {
            endpoint: endpoint.clone(),
            runtime: tokio::runtime::Handle::current(),
            alive: alive.clone(),
        };
        let shared = Arc::new(Shared {
            local_id: local_id.clone(),
            cluster: cfg.cluster.clone(),
            identity: cfg.identity.clone(),
            tuning: cfg.tuning.clone(),
            link: cfg.link.clone(),
            accept_unknown: cfg.accept_unknown,
            slots: Mutex::new(slots),
            spawner: Mutex::new(None),
            stop: stop_rx.clone(),
            events,
        });
        {
            let mut slots = shared.slots();
            for (peer, addr) in &cfg.peers {
                if local_id.as_str() < peer.as_str() {
                    let dialer = spawn_dialer(&shared, &spawner, peer, *addr);
                    if let Some(slot) = slots.get_mut(peer) {
                        slot.dialer = Some(dialer);
                    }
                }
            }
        }
        *shared.spawner() = Some(spawner);
        tokio::spawn(rate_task(shared.clone(), stop_rx.clone(), alive.clone()));
        tokio::spawn(accept_task(
            shared.clone(),
            endpoint.clone(),
            cfg.link.handshake_timeout,
            stop_rx,
            alive,
        ));

        let supervised = shared.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            // No dial task starts after this; the spawner's `Alive` goes with it.
            drop(supervised.spawner().take());
            drop(supervised);
            endpoint.close(0u32.into(), b"shutdown");
            // Returns None once every task has dropped its `Alive`.
            let _ = all_stopped.recv().await;
            endpoint.wait_idle().await;
            drop(endpoint);
            let _ = done_tx.send(true);
        });

        Ok((
            PipeHandle {
                shared,
                local_addr,
                done: done_rx,
            },
            events_rx,
        ))
    }
}

fn seed_for(seed: u64, peer: &str) -> u64 {
    // FNV-1a: stable across runs, so a seeded simulation replays.
    peer.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Samples every link's counters each [`PIPE_RATE_SAMPLE_INTERVAL`] until shutdown.
async fn rate_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>, _alive: Alive) {
    let mut tick = tokio::time::interval(PIPE_RATE_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop_requested(&mut stop) => return,
        }
        let now = Instant::now();
        // At most MAX_PEERS slots, each a few additions: short enough to hold the lock.
        for slot in shared.slots().values_mut() {
            slot.sample(now);
        }
    }
}

fn unix_ms() -> u64 {
    // A clock before 1970 reads as 0: the figure is informative only.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means the supervisor is gone: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

/// Sends an event, waiting for room unless shutdown comes first.
async fn emit(shared: &Shared, stop: &mut watch::Receiver<bool>, event: PipeEvent) {
    tokio::select! {
        _ = shared.events.send(event) => {}
        _ = stop_requested(stop) => {}
    }
}

fn hello(shared: &Shared) -> ControlMessage {
    ControlMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        node_id: NodeId::from(shared.local_id.as_str()),
        cluster: shared.cluster.clone(),
        software: concat!("pipemesh ", env!("CARGO_PKG_VERSION")).to_owned(),
    })
}

async fn write_msg(send: &mut SendStream, msg: &ControlMessage) -> Result<(), String> {
    let mut buf = Vec::new();
    encode_control(msg, &mut buf).map_err(|e| e.to_string())?;
    send.write_all(&buf).await.map_err(|e| e.to_string())
}

/// Reads the next control message, skipping (and counting) skippable errors. Cancel-safe:
/// the only await is `RecvStream::read`, and bytes read are in `decoder` before the next one.
async fn read_msg(
    recv: &mut RecvStream,
    decoder: &mut ControlDecoder,
    skipped: &mut u64,
) -> Result<ControlMessage, String> {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        match decoder.next() {
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => {}
            Err(e) if e.is_skippable() => {
                *skipped += 1;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        // Never read more than the decoder can take, so no bytes are left over.
        let room = (4 + decoder.max_message()).saturating_sub(decoder.buffered());
        let want = room.min(READ_CHUNK);
        if want == 0 {
            return Err("control decoder full".into());
        }
        match recv.read(&mut buf[..want]).await {
            Ok(Some(n)) => {
                decoder.push(&buf[..n]);
            }
            Ok(None) => return Err("control stream finished".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn permanent(code: RefuseCode) -> bool {
    matches!(
        code,
        RefuseCode::UnsupportedVersion | RefuseCode::WrongCluster | RefuseCode::WrongNodeId
    )
}

type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The I/O a dial task waits on besides timers and commands; at most one at a time, held
/// across wake-ups so a command or timeout never cancels it by accident.
enum Io {
    None,
    Dialing(Task<Result<Connection, String>>),
    Handshaking(Connection, Task<Result<HandshakeOutcome, String>>),
    Up(Connection, Task<()>),
}

enum IoDone {
    Dialed(Result<Connection, String>),
    Handshaken(Connection, Result<HandshakeOutcome, String>),
    Down,
}

impl Io {
    /// Completes when the I/O in progress does (never while there is none). Cancel-safe: the
    /// future stays in `self` until it completes.
    async fn next(&mut self) -> IoDone {
        let done = match self {
            Io::None => std::future::pending().await,
            Io::Dialing(f) => IoDone::Dialed(f.await),
            Io::Handshaking(c, f) => IoDone::Handshaken(c.clone(), f.await),
            Io::Up(_, f) => {
                f.await;
                IoDone::Down
            }
        };
        *self = Io::None;
        done
    }

    /// Abandons the I/O in progress: a dial is dropped (quinn abandons it), a connection is
    /// closed; an up link is run to its end so it clears its slot and reports LinkDown.
    async fn close(&mut self, reason: &'static [u8]) {
        match std::mem::replace(self, Io::None) {
            Io::None | Io::Dialing(_) => {}
            Io::Handshaking(c, _) => c.close(0u32.into(), reason),
            Io::Up(c, f) => {
                c.close(0u32.into(), reason);
                f.await;
            }
        }
    }
}

/// The dialing side of the link to `peer` at `addr`, driven by its [`LinkState`]. `need` says
/// whether the link is needed; the task stops (closing its connection) when it is dropped, or
/// on shutdown.
// Each argument is one task-owned resource; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
async fn dial_task(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    peer: String,
    addr: SocketAddr,
    mut state: LinkState,
    mut need: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    _alive: Alive,
) {
    if *need.borrow_and_update() {
        state.need(Instant::now());
    }
    let mut io = Io::None;
    // Results handed from one step of the state to the next action it asks for.
    let mut connected: Option<Connection> = None;
    let mut acked: Option<(Connection, SendStream, RecvStream, ControlDecoder)> = None;
    loop {
        while let Some(action) = state.poll_action() {
            match action {
                LinkAction::Dial { attempt } => {
                    tracing::debug!(peer = %peer, %addr, attempt, "dialing pipe peer");
                    shared.with_slot(&peer, |s| s.stats.dials += 1);
                    let dialing = dial(shared.clone(), endpoint.clone(), peer.clone(), addr);
                    io = Io::Dialing(Box::pin(dialing));
                }
                LinkAction::SendHello => match connected.take() {
                    Some(c) => {
                        io = Io::Handshaking(c.clone(), Box::pin(handshake(shared.clone(), c)));
                    }
                    None => {
                        let _ = state.on_connection_lost(Instant::now());
                    }
                },
                LinkAction::LinkUp => match acked.take() {
                    Some((c, send, recv, decoder)) => {
                        let link = run_link(
                            shared.clone(),
                            peer.clone(),
                            c.clone(),
                            send,
                            recv,
                            decoder,
                            stop.clone(),
                        );
                        io = Io::Up(c, Box::pin(link));
                    }
                    None => {
                        let _ = state.on_connection_lost(Instant::now());
                    }
                },
                LinkAction::Refused { reason, .. } => {
                    let event = PipeEvent::Refused {
                        node_id: peer.clone(),
                        reason,
                    };
                    emit(&shared, &mut stop, event).await;
                }
                LinkAction::Close => {
                    for c in connected
                        .take()
                        .into_iter()
                        .chain(acked.take().map(|a| a.0))
                    {
                        c.close(0u32.into(), b"closed");
                    }
                    io.close(b"closed").await;
                }
                // run_link reports LinkDown; grace is the node's business.
                LinkAction::LinkDown { .. } | LinkAction::GraceExpired => {}
            }
        }
        let sleep = async {
            match state.poll_timeout() {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = io.next() => {
                let now = Instant::now();
                match done {
                    IoDone::Dialed(Ok(c)) => match state.on_connected(now) {
                        Ok(()) => connected = Some(c),
                        Err(_) => c.close(0u32.into(), b"unexpected"),
                    },
                    IoDone::Dialed(Err(error)) => {
                        tracing::debug!(peer = %peer, %addr, %error, "pipe dial failed");
                        let _ = state.on_connection_lost(now);
                    }
                    IoDone::Handshaken(c, Ok(HandshakeOutcome::Ack(send, recv, decoder))) => {
                        match state.on_hello_ack(now) {
                            Ok(()) => acked = Some((c, send, recv, decoder)),
                            Err(_) => c.close(0u32.into(), b"unexpected"),
                        }
                    }
                    IoDone::Handshaken(c, Ok(HandshakeOutcome::Refused(refusal))) => {
                        c.close(0u32.into(), b"refused");
                        let _ = state.on_refused(now, permanent(refusal.code), refusal.reason);
                    }
                    IoDone::Handshaken(c, Err(error)) => {
                        tracing::debug!(peer = %peer, %addr, %error, "pipe handshake failed");
                        c.close(0u32.into(), b"handshake failed");
                        let _ = state.on_connection_lost(now);
                    }
                    IoDone::Down => {
                        let _ = state.on_connection_lost(now);
                    }
                }
            }
            _ = sleep => state.handle_timeout(Instant::now()),
            changed = need.changed() => {
                if changed.is_err() {
                    // The dialer was dropped: the node moved, or was forgotten.
                    io.close(b"stopped").await;
                    return;
                }
                if *need.borrow_and_update() {
                    state.need(Instant::now());
                } else {
                    state.no_longer_needed(Instant::now());
                }
            }
            _ = stop_requested(&mut stop) => {
                io.close(b"shutdown").await;
                return;
            }
        }
    }
}

async fn dial(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    peer: String,
    addr: SocketAddr,
) -> Result<Connection, String> {
    let connecting = tls::connect(&endpoint, &shared.identity, &peer, &shared.tuning, addr)
        .map_err(|e| e.to_string())?;
    connecting.await.map_err(|e| e.to_string())
}

enum HandshakeOutcome {
    Ack(SendStream, RecvStream, ControlDecoder),
    Refused(Refusal),
}

async fn handshake(shared: Arc<Shared>, conn: Connection) -> Result<HandshakeOutcome, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_msg(&mut send, &hello(&shared)).await?;
    let mut decoder = ControlDecoder::default();
    let mut skipped = 0;
    match read_msg(&mut recv, &mut decoder, &mut skipped).await? {
        ControlMessage::HelloAck { .. } => Ok(HandshakeOutcome::Ack(send, recv, decoder)),
        ControlMessage::Refuse { code, reason } => {
            Ok(HandshakeOutcome::Refused(Refusal { code, reason }))
        }
        other => Err(format!("expected HelloAck, got {}", other.type_name())),
    }
}

async fn accept_task(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    alive: Alive,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_ACCEPTS));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop_requested(&mut stop) => return,
        };
        // None: the endpoint was closed.
        let Some(incoming) = incoming else { return };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        let mut stop = stop.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let accepted = tokio::select! {
                r = tokio::time::timeout(handshake_timeout, accept_one(&shared, incoming)) => r,
                _ = stop_requested(&mut stop) => return,
            };
            drop(permit);
            if let Ok(Some((peer, conn, send, recv, decoder))) = accepted {
                run_link(shared, peer, conn, send, recv, decoder, stop).await;
            }
        });
    }
}

/// Handshakes an incoming connection; `None` if it was refused or failed.
async fn accept_one(
    shared: &Shared,
    incoming: quinn::Incoming,
) -> Option<(String, Connection, SendStream, RecvStream, ControlDecoder)> {
    let conn = incoming.await.ok()?;
    let cert_id = tls::peer_node_id(&conn).ok();
    if cert_id.is_none() && !shared.identity.is_insecure() {
        conn.close(0u32.into(), b"no certificate");
        return None;
    }
    let (mut send, mut recv) = conn.accept_bi().await.ok()?;
    let mut decoder = ControlDecoder::default();
    let mut skipped = 0;
    let msg = read_msg(&mut recv, &mut decoder, &mut skipped).await.ok()?;
    let ControlMessage::Hello(hello) = msg else {
        conn.close(0u32.into(), b"expected hello");
        return None;
    };
    let peer = cert_id.unwrap_or_else(|| hello.node_id.as_str().to_owned());
    let verdict = check_hello(PROTOCOL_VERSION, &shared.cluster, Some(&peer), &hello)
        .and_then(|()| admit(shared, &peer));
    match verdict {
        Ok(()) => {
            let ack = ControlMessage::HelloAck {
                protocol_version: negotiated_version(PROTOCOL_VERSION, hello.protocol_version),
                node_id: NodeId::from(shared.local_id.as_str()),
            };
            write_msg(&mut send, &ack).await.ok()?;
            Some((peer, conn, send, recv, decoder))
        }
        Err(refusal) => {
            tracing::warn!(peer = %peer, %refusal, "refusing pipe link");
            let _ = write_msg(&mut send, &refusal.into()).await;
            let _ = send.finish();
            // Give the dialer a moment to read the Refuse and close first.
            let _ = tokio::time::timeout(REFUSE_LINGER, conn.closed()).await;
            conn.close(0u32.into(), b"refused");
            None
        }
    }
}

/// Whether `peer`, authenticated, may link with us; gives an unknown node a slot if allowed.
fn admit(shared: &Shared, peer: &str) -> Result<(), Refusal> {
    let refuse = |code, reason| Err(Refusal { code, reason });
    let local = shared.local_id.as_str();
    let mut slots = shared.slots();
    let known = slots.contains_key(peer);
    if !known && !shared.accept_unknown {
        refuse(
            RefuseCode::WrongNodeId,
            format!("node {peer:?} is not a configured peer"),
        )
    } else if peer == local {
        refuse(RefuseCode::WrongNodeId, format!("{peer:?} is this node"))
    } else if peer > local {
        refuse(
            RefuseCode::DuplicateLink,
            format!("{local:?} dials {peer:?}, not the other way"),
        )
    } else {
        match ensure_slot(&mut slots, peer) {
            Ok(_) => Ok(()),
            Err(e) => refuse(RefuseCode::WrongNodeId, e.to_string()),
        }
    }
}

/// Runs an up link until it is lost or shutdown; reports LinkUp and LinkDown.
async fn run_link(
    shared: Arc<Shared>,
    peer: String,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    mut decoder: ControlDecoder,
    mut stop: watch::Receiver<bool>,
) {
    let (shared, peer, stop) = (&*shared, peer.as_str(), &mut stop);
    let (control_tx, mut control_rx) = mpsc::channel(CONTROL_QUEUE);
    let mut superseded = false;
    let generation = shared.with_slot(peer, |slot| {
        if let Some(old) = slot.retire_conn() {
            old.close(0u32.into(), b"superseded");
            superseded = true;
        }
        slot.conn = Some(conn.clone());
        slot.control = Some(control_tx);
        slot.generation += 1;
        slot.stats.up = true;
        slot.stats.up_since_ms = Some(unix_ms());
        slot.generation
    });
    let Some(generation) = generation else {
        conn.close(0u32.into(), b"unknown peer");
        return;
    };
    if superseded {
        let event = PipeEvent::LinkDown {
            node_id: peer.to_owned(),
        };
        emit(shared, stop, event).await;
    }
    emit(
        shared,
        stop,
        PipeEvent::LinkUp {
            node_id: peer.to_owned(),
        },
    )
    .await;

    let mut skipped = 0u64;
    loop {
        tokio::select! {
            _ = stop_requested(stop) => break,
            msg = control_rx.recv() => {
                // None cannot happen while the slot holds the sender; treat it as loss.
                let Some(msg) = msg else { break };
                if write_msg(&mut send, &msg).await.is_err() {
                    break;
                }
            }
            msg = read_msg(&mut recv, &mut decoder, &mut skipped) => {
                let before = skipped;
                let Ok(msg) = msg else { break };
                let goodbye = matches!(msg, ControlMessage::Goodbye { .. } | ControlMessage::Refuse { .. });
                shared.with_slot(peer, |s| {
                    s.stats.control_in += 1;
                    s.stats.skipped_control += skipped - before;
                });
                match msg {
                    ControlMessage::Hello(_) | ControlMessage::HelloAck { .. } => {}
                    msg => {
                        let event = PipeEvent::Control { node_id: peer.to_owned(), msg };
                        emit(shared, stop, event).await;
                    }
                }
                if goodbye {
                    break;
                }
            }
            dgram = conn.read_datagram() => {
                let Ok(data) = dgram else { break };
                let valid = parse_datagram(&data).is_ok();
                let len = data.len() as u64;
                let delivered = valid && shared
                    .events
                    .try_send(PipeEvent::Datagram { node_id: peer.to_owned(), data })
                    .is_ok();
                shared.with_slot(peer, |s| {
                    if !valid {
                        s.stats.garbage_datagrams += 1;
                    } else if delivered {
                        s.stats.datagrams_in += 1;
                        s.stats.bytes_in += len;
                    } else {
                        s.stats.dropped_datagrams += 1;
                    }
                });
            }
        }
    }
    conn.close(0u32.into(), b"link closed");
    let current = shared
        .with_slot(peer, |slot| {
            if slot.generation == generation {
                slot.retire_conn();
                slot.control = None;
                slot.stats.up = false;
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if current && !*stop.borrow() {
        let event = PipeEvent::LinkDown {
            node_id: peer.to_owned(),
        };
        emit(shared, stop, event).await;
    }
}
