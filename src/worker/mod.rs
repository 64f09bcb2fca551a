//! The worker core: every Room, Peer, WebRtcTransport, Producer and Consumer of a node,
//! owned by one struct and driven sans-IO, as mediasoup's worker process is.
//!
//! Inputs: signaling sessions and requests, packets from the shared UDP/TCP port (already
//! framed), DTLS handshake events, timeouts. Outputs ([`Output`], drained with
//! [`Worker::poll_output`]): packets to send on a tuple, messages to peers, DTLS session
//! control. The worker never reads the clock and owns no socket; `node` is its glue.
//!
//! Ownership follows mediasoup: a Room (one per room id, i.e. the Router) owns the fan-out
//! from each producer to its consumers; transports own nothing but their network state and
//! the ids of the producers/consumers that use them.

mod media;
mod pipe;
pub mod report;
mod room;
mod shed;
mod transport;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use crate::discovery::directory::{LocalDirectory, RoomDirectory};
use crate::edge::dtls::{DtlsEvent, DtlsRole, Fingerprint};
use crate::edge::ice::Tuple;
use crate::ids::{ConsumerId, NodeId, PeerId, ProducerId, RoomId, TransportId};
use crate::metrics::{Direction, Kind};
use crate::pipe::wire::ControlMessage;
use crate::router::ortc;
use crate::router::rtp_parameters::RtpCapabilities;
use crate::signaling::admission::Admission;
use crate::signaling::protoo::ClientRequest;
use crate::signaling::server::{SessionId, ToPeer};
use crate::timing::WORKER_TICK;

pub use room::Room;
pub use transport::Transport;

/// Settings the worker needs from the node configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Address advertised in ICE candidates.
    pub announced_address: String,
    /// The shared UDP/TCP port.
    pub rtc_port: u16,
    /// ICE consent timeout.
    pub consent_timeout: Duration,
    /// Upper bound on peers per room.
    pub max_peers_per_room: usize,
}

/// Something the glue must do.
#[derive(Debug)]
pub enum Output {
    /// Send a packet on a tuple.
    Transmit {
        /// Where.
        tuple: Tuple,
        /// The bytes (already SRTP-protected where applicable).
        data: bytes::Bytes,
    },
    /// Deliver a message to a signaling session.
    ToPeer {
        /// Session.
        session: SessionId,
        /// Message.
        msg: ToPeer,
    },
    /// Start a DTLS session for a transport.
    DtlsStart {
        /// Transport.
        transport: TransportId,
        /// Our role.
        role: DtlsRole,
        /// Fingerprints the remote certificate must match.
        fingerprints: Vec<Fingerprint>,
    },
    /// Feed a DTLS record received on the transport's selected tuple.
    DtlsFeed {
        /// Transport.
        transport: TransportId,
        /// The record.
        data: Vec<u8>,
    },
    /// Drop a transport's DTLS session.
    DtlsStop {
        /// Transport.
        transport: TransportId,
    },
    /// Close a TCP connection.
    CloseTcp {
        /// Its remote address.
        remote: SocketAddr,
    },
    /// Send a control message on the pipe link to a node.
    PipeControl {
        /// The node.
        node: NodeId,
        /// The message.
        msg: ControlMessage,
    },
    /// Send a datagram (pipe header included) on the pipe link to a node.
    PipeDatagram {
        /// The node.
        node: NodeId,
        /// The datagram.
        data: bytes::Bytes,
    },
    /// A room needs a pipe link to this node (at this `HOST:PORT`).
    PipeWanted {
        /// The node.
        node: NodeId,
        /// Its pipe address as published in the registry.
        addr: String,
    },
    /// No room needs the pipe link to this node any more.
    PipeUnwanted {
        /// The node.
        node: NodeId,
    },
    /// A write this node owes the cluster registry.
    Registry(crate::discovery::registry::RegistryOp),
    /// The node drains (takes no new peers; not ready) or serves again. At `deadline_ms`
    /// (Unix milliseconds), if set, the glue closes the sessions still open.
    Drain {
        /// Draining or serving.
        draining: bool,
        /// When to close what is left.
        deadline_ms: Option<u64>,
    },
}

/// Something a room did that the worker must act on beyond the room (directory, pipe
/// subscriptions). Rooms queue notes next to their outputs; the worker applies them before
/// returning from each input.
#[derive(Debug)]
pub(crate) enum Note {
    /// A local producer closed.
    LocalProducerClosed {
        room: RoomId,
        peer: PeerId,
        producer: ProducerId,
        /// Nodes it was piped to.
        piped_to: Vec<NodeId>,
        /// Its pipe stream ids.
        stream_ids: Vec<u64>,
    },
    /// A local peer changed its display name.
    LocalPeerRenamed {
        room: RoomId,
        peer: PeerId,
        display_name: String,
    },
    /// A local producer was paused or resumed by its owner.
    LocalProducerPaused {
        room: RoomId,
        peer: PeerId,
        producer: ProducerId,
        paused: bool,
    },
    /// A piped producer closed (its origin closed it, or the origin node is gone); it was
    /// relayed to `piped_to` on `stream_ids`.
    PipeProducerClosed {
        node: NodeId,
        producer: ProducerId,
        piped_to: Vec<NodeId>,
        stream_ids: Vec<u64>,
    },
    /// A consumer of a remote (piped) producer was created.
    PipeConsumerAdded { node: NodeId, producer: ProducerId },
    /// A consumer of a remote (piped) producer closed.
    PipeConsumerRemoved { node: NodeId, producer: ProducerId },
}

/// The worker's output queue plus its internal notes, and the counters (so that code that
/// emits feedback can count it wherever it runs).
#[derive(Debug, Default)]
pub struct Outputs {
    queue: VecDeque<Output>,
    notes: VecDeque<Note>,
    pub(crate) counters: Arc<WorkerCounters>,
}

impl Outputs {
    /// Queues an output for the glue.
    pub(crate) fn push_back(&mut self, o: Output) {
        self.queue.push_back(o);
    }
    /// Queues a note for the worker.
    pub(crate) fn note(&mut self, n: Note) {
        self.notes.push_back(n);
    }
}

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Counters of dropped and handled traffic; exported on `/metrics` (see
        /// [`crate::metrics`]). Everything is a relaxed atomic: the worker and the signaling
        /// sessions write, scrapes read, nobody locks.
        #[derive(Default, Debug)]
        pub struct WorkerCounters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            /// Traffic, RTCP feedback, retransmissions and state gauges.
            pub media: crate::metrics::MediaMetrics,
            /// Signaling requests by method and result, and their durations.
            pub signaling: crate::metrics::SignalingMetrics,
        }
        impl WorkerCounters {
            /// Name/value pairs for export.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((concat!(stringify!($name), "_total"), self.$name.load(Ordering::Relaxed)),)*]
            }
            /// The flat counters as (name without `_total`, help, value).
            pub fn described(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $doc, self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    stun_dropped: "STUN packets dropped or refused (malformed, unknown username, failed integrity, role conflict).",
    unknown_tuple_dropped: "Non-STUN packets from a tuple no transport has selected.",
    unclassified_dropped: "Packets whose first byte matches no RFC 7983 class.",
    srtp_failures: "SRTP/SRTCP packets that failed authentication or decryption.",
    rtp_malformed: "Decrypted RTP packets that did not parse.",
    rtcp_malformed: "Decrypted RTCP packets that did not parse.",
    rtp_unknown_ssrc: "RTP packets matching no producer stream.",
    rtp_received: "RTP packets received from producers.",
    rtp_sent: "RTP packets sent to consumers.",
    dtls_failures: "DTLS handshakes that failed.",
    requests_failed: "Signaling requests answered with an error.",
    pipe_rtp_sent: "RTP packets sent into pipes (one per packet per subscribed node).",
    pipe_rtp_received: "RTP packets received from pipes.",
    pipe_rtp_retransmitted: "RTP packets resent into pipes on a far node's NACK.",
    pipe_shed_packets: "RTP packets not piped to a node because its congested link sheds their simulcast layer (one per packet per node).",
    pipe_unknown_stream: "Pipe datagrams naming no stream subscribed (late or stray).",
    pipe_malformed: "Pipe datagrams or RTCP in them that did not parse.",
    pipe_control_refused: "Pipe control messages refused (unknown room, producer or request).",
    sessions_opened: "Signaling sessions opened (admitted peers).",
    signaling_refused: "Signaling connections refused before the upgrade (no, invalid or foreign token; anonymous non-loopback client).",
    signaling_rate_limited: "Signaling requests refused by the per-peer rate limit.",
}

/// Error answer to a signaling request: protoo `errorCode` and `errorReason`.
pub type RequestFailure = (u16, String);

fn bad_request(reason: impl Into<String>) -> RequestFailure {
    (400, reason.into())
}
fn not_found(what: &str, id: &str) -> RequestFailure {
    (404, format!("{what} {id:?} not found"))
}

/// The worker core. See the module docs.
pub struct Worker {
    cfg: WorkerConfig,
    fingerprints: Vec<Fingerprint>,
    rng: StdRng,
    router_caps: RtpCapabilities,
    router_caps_json: Value,
    sessions: HashMap<SessionId, (RoomId, PeerId)>,
    rooms: HashMap<RoomId, Room>,
    transports: HashMap<TransportId, Transport>,
    by_ufrag: HashMap<String, TransportId>,
    by_tuple: HashMap<Tuple, TransportId>,
    outputs: Outputs,
    counters: Arc<WorkerCounters>,
    scratch: Vec<u8>,
    /// Instant and NTP time (RFC 3550 format) of one moment, given by the glue; when absent
    /// the NTP timeline starts at 0 on first use (consistent, which is all reports need).
    ntp_origin: Option<(Instant, u64)>,
    /// Where remote peers and producers are learnt (a no-op on a single node).
    directory: Box<dyn RoomDirectory + Send>,
    /// Pipe subscriptions and streams (empty on a single node).
    pipes: pipe::Pipes,
    /// Earliest timer as of the last [`Worker::handle_timeout`], and when that ran.
    next_deadline: Option<Instant>,
    last_timeout: Option<Instant>,
}

impl Worker {
    /// A worker with no rooms. `seed` drives ids-independent randomness (ICE credentials,
    /// SSRCs), so tests are repeatable.
    pub fn new(cfg: WorkerConfig, fingerprints: Vec<Fingerprint>, seed: u64) -> Self {
        // The default codecs are a compile-time constant list; failing to build capabilities
        // from them is a programming error caught by the unit tests.
        let router_caps = ortc::generate_router_rtp_capabilities(&ortc::default_media_codecs())
            .expect("default media codecs are valid");
        let router_caps_json = serde_json::to_value(&router_caps).unwrap_or(Value::Null);
        let counters = Arc::new(WorkerCounters::default());
        Self {
            cfg,
            fingerprints,
            rng: StdRng::seed_from_u64(seed),
            router_caps,
            router_caps_json,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            transports: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_tuple: HashMap::new(),
            outputs: Outputs {
                counters: counters.clone(),
                ..Outputs::default()
            },
            counters,
            scratch: Vec::with_capacity(1500),
            ntp_origin: None,
            directory: Box::new(LocalDirectory::new()),
            pipes: pipe::Pipes::default(),
            next_deadline: None,
            last_timeout: None,
        }
    }

    /// Anchors the NTP timeline of RTCP sender reports to the wall clock: `ntp` is the NTP time
    /// (seconds since 1900 in the high 32 bits, fraction in the low 32) at `at`.
    pub fn set_ntp_origin(&mut self, at: Instant, ntp: u64) {
        self.ntp_origin = Some((at, ntp));
    }

    fn ntp_origin(&mut self, now: Instant) -> (Instant, u64) {
        *self.ntp_origin.get_or_insert((now, 0))
    }

    /// Shared counters (for the admin endpoint).
    pub fn counters(&self) -> Arc<WorkerCounters> {
        self.counters.clone()
    }

    /// Next output for the glue. Packets are counted out here (`packets_total`,
    /// `bytes_total` and `packet_size_bytes` with `direction="out"`).
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.queue.pop_front()?;
        let traffic = &self.counters.media.traffic;
        match &out {
            Output::Transmit { tuple, data } => {
                traffic.observe(Kind::of(tuple.protocol), Direction::Out, data.len())
            }
            Output::PipeDatagram { data, .. } => {
                traffic.observe(Kind::Pipe, Direction::Out, data.len())
            }
            _ => {}
        }
        Some(out)
    }

    /// Stores the state gauges of `/metrics` (O(rooms): map sizes only).
    fn publish_gauges(&self) {
        let (mut peers, mut producers, mut consumers) = (0, 0, 0);
        for r in self.rooms.values() {
            peers += r.peers.len();
            producers += r.producers.len();
            consumers += r.consumers.len();
        }
        let g = &self.counters.media.gauges;
        for (gauge, v) in [
            (&g.rooms, self.rooms.len()),
            (&g.peers, peers),
            (&g.sessions, self.sessions.len()),
            (&g.transports, self.transports.len()),
            (&g.producers, producers),
            (&g.consumers, consumers),
        ] {
            gauge.store(v as u64, Ordering::Relaxed);
        }
    }

    /// When [`Worker::handle_timeout`] should run next: the earliest timer known at its last
    /// run, and no later than [`WORKER_TICK`] after it while the worker holds any state
    /// (packets handled since may have created earlier timers). Cheap: the glue calls it after
    /// every input, so it must not scan every transport and consumer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pipes = self.pipes.poll_timeout();
        if self.transports.is_empty() && self.rooms.is_empty() {
            return pipes;
        }
        let tick = self.last_timeout.map(|t| t + WORKER_TICK);
        [self.next_deadline, tick, pipes]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest timer of every transport and room (a full scan).
    fn earliest_timer(&self) -> Option<Instant> {
        let t = self
            .transports
            .values()
            .filter_map(|t| t.poll_timeout())
            .min();
        let m = self.rooms.values().filter_map(|r| r.poll_timeout()).min();
        match (t, m) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Rooms currently open (for tests and admin).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A signaling session opened for (room, peer). A previous session of the same peer is
    /// closed and the peer replaced, as mediasoup-demo does. `peer` carries the peer's grants
    /// and limits (a bare [`PeerId`] gets every grant and the default limits).
    pub fn handle_session_open(
        &mut self,
        now: Instant,
        session: SessionId,
        room_id: RoomId,
        peer: impl Into<Admission>,
    ) {
        let admission = peer.into();
        let peer_id = admission.peer.clone();
        self.counters
            .sessions_opened
            .fetch_add(1, Ordering::Relaxed);
        let old_session = self
            .rooms
            .get(&room_id)
            .and_then(|r| r.peers.get(&peer_id))
            .map(|p| p.session);
        if let Some(old) = old_session {
            tracing::info!(room = %room_id, peer = %peer_id, "peer reconnected; replacing old session");
            self.outputs.push_back(Output::ToPeer {
                session: old,
                msg: ToPeer::Close,
            });
            self.sessions.remove(&old);
            self.remove_peer(&room_id, &peer_id);
        }
        if !self.rooms.contains_key(&room_id) {
            if let Err(e) = self.directory.watch_room(&room_id) {
                tracing::warn!(room = %room_id, error = %e, "room not followed on other nodes");
            }
        }
        let room = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| Room::new(room_id.clone()));
        if room.peers.len() >= self.cfg.max_peers_per_room {
            tracing::warn!(room = %room_id, "room full; refusing peer");
            self.outputs.push_back(Output::ToPeer {
                session,
                msg: ToPeer::Close,
            });
            return;
        }
        room.add_peer(admission, session);
        self.sessions.insert(session, (room_id, peer_id));
        self.settle(now);
    }

    /// A signaling session ended: the peer leaves its room.
    pub fn handle_session_closed(&mut self, now: Instant, session: SessionId) {
        if let Some((room, peer)) = self.sessions.remove(&session) {
            self.remove_peer(&room, &peer);
        }
        self.settle(now);
    }

    /// Removes a peer with its transports, producers and consumers; tells the others.
    fn remove_peer(&mut self, room_id: &RoomId, peer_id: &PeerId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(peer) = room.peers.get(peer_id) else {
            return;
        };
        let transports = peer.transports.clone();
        let joined = peer.joined;
        for t in transports {
            self.close_transport(&t);
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.peers.remove(peer_id);
        if joined {
            self.directory.local_peer_left(room_id, peer_id);
            for other in room.peers.values().filter(|p| p.joined) {
                self.outputs.push_back(Output::ToPeer {
                    session: other.session,
                    msg: ToPeer::Notify {
                        method: "peerClosed",
                        data: serde_json::json!({ "peerId": peer_id }),
                    },
                });
            }
        }
        if room.peers.is_empty() {
            tracing::info!(room = %room_id, "last peer left; closing room");
            self.rooms.remove(room_id);
            self.pipe_room_closed(room_id);
        }
    }

    /// Closes a transport: its producers and consumers close too.
    fn close_transport(&mut self, id: &TransportId) {
        let Some(t) = self.transports.remove(id) else {
            return;
        };
        // Its TCP connections go with it.
        for tuple in t.ice.tuples() {
            if tuple.protocol == crate::edge::ice::Protocol::Tcp {
                self.outputs.push_back(Output::CloseTcp {
                    remote: tuple.remote,
                });
            }
        }
        self.by_ufrag.retain(|_, v| v != id);
        self.by_tuple.retain(|_, v| v != id);
        self.outputs.push_back(Output::DtlsStop {
            transport: id.clone(),
        });
        if let Some(room) = self.rooms.get_mut(&t.room) {
            let producers: Vec<_> = t.producers.iter().cloned().collect();
            let consumers: Vec<_> = t.consumers.iter().cloned().collect();
            for p in producers {
                room.close_producer(&p, &mut self.outputs, &mut self.transports);
            }
            for c in consumers {
                room.close_consumer(&c, false, &mut self.outputs, &mut self.transports);
            }
            if let Some(peer) = room.peers.get_mut(&t.peer) {
                peer.transports.retain(|x| x != id);
            }
        }
    }

    /// A peer answered a `newConsumer` request.
    pub fn handle_consumer_answer(
        &mut self,
        now: Instant,
        session: SessionId,
        consumer: &ConsumerId,
        accepted: bool,
    ) {
        let Some((room_id, peer_id)) = self.sessions.get(&session) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        // Only the consumer's own peer may accept or refuse it.
        if room
            .consumers
            .get(consumer)
            .is_none_or(|c| &c.peer != peer_id)
        {
            return;
        }
        if accepted {
            room.resume_consumer(now, consumer, &mut self.outputs, &mut self.transports);
        } else {
            room.close_consumer(consumer, false, &mut self.outputs, &mut self.transports);
        }
        self.settle(now);
    }

    /// Handles one typed signaling request.
    pub fn handle_request(
        &mut self,
        now: Instant,
        session: SessionId,
        req: ClientRequest,
    ) -> Result<Value, RequestFailure> {
        let r = self.dispatch(now, session, req);
        self.settle(now);
        if r.is_err() {
            self.counters
                .requests_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn dispatch(
        &mut self,
        now: Instant,
        session: SessionId,
        req: ClientRequest,
    ) -> Result<Value, RequestFailure> {
        // Timers start running with the first request (the tick is relative to the last run).
        self.last_timeout.get_or_insert(now);
        let (room_id, peer_id) = self
            .sessions
            .get(&session)
            .cloned()
            .ok_or_else(|| (403, "session is not attached to a room".to_owned()))?;
        use ClientRequest as R;
        match req {
            R::GetRouterRtpCapabilities => Ok(self.router_caps_json.clone()),
            R::Join(j) => self.join(now, &room_id, &peer_id, j),
            R::CreateWebRtcTransport(d) => self.create_transport(&room_id, &peer_id, d),
            R::ConnectWebRtcTransport {
                transport_id,
                dtls_parameters,
            } => {
                self.connect_transport(&peer_id, &TransportId::from(transport_id), &dtls_parameters)
            }
            R::RestartIce { transport_id } => {
                self.restart_ice(&peer_id, &TransportId::from(transport_id))
            }
            R::Produce {
                transport_id,
                kind,
                rtp_parameters,
                app_data,
            } => self.produce(
                now,
                &room_id,
                &peer_id,
                &TransportId::from(transport_id),
                &kind,
                rtp_parameters,
                app_data,
            ),
            R::DataChannel(m) => Err((501, format!("{m}: data channels are not supported yet"))),
            other => {
                let room = self
                    .rooms
                    .get_mut(&room_id)
                    .ok_or_else(|| not_found("room", room_id.as_str()))?;
                room.handle_peer_request(
                    now,
                    &peer_id,
                    other,
                    &mut self.outputs,
                    &mut self.transports,
                )
            }
        }
    }

    fn join(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        peer_id: &PeerId,
        j: crate::signaling::protoo::JoinData,
    ) -> Result<Value, RequestFailure> {
        let caps = match &j.rtp_capabilities {
            Some(v) => {
                let caps: RtpCapabilities = serde_json::from_value(v.clone())
                    .map_err(|e| bad_request(format!("invalid rtpCapabilities: {e}")))?;
                ortc::validate_rtp_capabilities(&caps)
                    .map_err(|e| bad_request(format!("invalid rtpCapabilities: {e}")))?;
                Some(caps)
            }
            None => None,
        };
        let room = self
            .rooms
            .get_mut(room_id)
            .ok_or_else(|| not_found("room", room_id.as_str()))?;
        let info = pipe::peer_info(peer_id, &j.display_name, &j.device);
        let mut answer = room.join(
            now,
            peer_id,
            j.display_name,
            j.device,
            caps,
            &mut self.rng,
            &mut self.outputs,
            &mut self.transports,
        )?;
        // Rooms are global: the peers of this room on other nodes too.
        if let Some(Value::Array(peers)) = answer.get_mut("peers") {
            for (_, p) in self.directory.remote_peers(room_id) {
                peers.push(pipe::remote_peer_json(&p));
            }
        }
        if let Err(e) = self.directory.local_peer_joined(room_id, info) {
            tracing::warn!(room = %room_id, peer = %peer_id, error = %e, "peer not announced to other nodes");
        }
        Ok(answer)
    }

    fn create_transport(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        d: crate::signaling::protoo::CreateTransportData,
    ) -> Result<Value, RequestFailure> {
        let room = self
            .rooms
            .get_mut(room_id)
            .ok_or_else(|| not_found("room", room_id.as_str()))?;
        let peer = room
            .peers
            .get_mut(peer_id)
            .ok_or_else(|| not_found("peer", peer_id.as_str()))?;
        if d.producing && !peer.grants.can_publish {
            return Err((403, "not allowed to publish (no canPublish grant)".into()));
        }
        if d.consuming && !peer.grants.can_subscribe {
            return Err((
                403,
                "not allowed to subscribe (no canSubscribe grant)".into(),
            ));
        }
        let max = peer.limits.max_transports;
        if peer.transports.len() >= max {
            return Err(bad_request(format!(
                "too many transports for this peer (limit {max})"
            )));
        }
        let id = TransportId::random();
        let t = Transport::new(
            id.clone(),
            room_id.clone(),
            peer_id.clone(),
            d.producing,
            d.consuming,
            self.cfg.consent_timeout,
            &mut self.rng,
        );
        let answer = t.describe(
            &self.cfg.announced_address,
            self.cfg.rtc_port,
            d.force_tcp,
            &self.fingerprints,
        );
        self.by_ufrag
            .insert(t.ice.local_ufrag().to_owned(), id.clone());
        peer.transports.push(id.clone());
        self.transports.insert(id, t);
        Ok(answer)
    }

    fn owned_transport(
        &mut self,
        peer_id: &PeerId,
        id: &TransportId,
    ) -> Result<&mut Transport, RequestFailure> {
        match self.transports.get_mut(id) {
            Some(t) if &t.peer == peer_id => Ok(t),
            _ => Err(not_found("transport", id.as_str())),
        }
    }

    fn connect_transport(
        &mut self,
        peer_id: &PeerId,
        id: &TransportId,
        dtls: &Value,
    ) -> Result<Value, RequestFailure> {
        let params = crate::edge::dtls::DtlsParameters::from_json(dtls)
            .map_err(|e| bad_request(e.to_string()))?;
        let t = self.owned_transport(peer_id, id)?;
        let role = t.connect(&params).map_err(bad_request)?;
        self.outputs.push_back(Output::DtlsStart {
            transport: id.clone(),
            role,
            fingerprints: params.fingerprints,
        });
        Ok(Value::Object(Default::default()))
    }

    fn restart_ice(&mut self, peer_id: &PeerId, id: &TransportId) -> Result<Value, RequestFailure> {
        let mut rng = StdRng::seed_from_u64(rand::RngCore::next_u64(&mut self.rng));
        let t = self.owned_transport(peer_id, id)?;
        let old = t.ice.local_ufrag().to_owned();
        let answer = t.restart_ice(&mut rng);
        let new = t.ice.local_ufrag().to_owned();
        self.by_ufrag.remove(&old);
        self.by_ufrag.insert(new, id.clone());
        Ok(answer)
    }

    #[allow(clippy::too_many_arguments)]
    fn produce(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        peer_id: &PeerId,
        transport_id: &TransportId,
        kind: &str,
        rtp_parameters: Value,
        app_data: Value,
    ) -> Result<Value, RequestFailure> {
        let may_publish = self
            .rooms
            .get(room_id)
            .and_then(|r| r.peers.get(peer_id))
            .is_some_and(|p| p.grants.can_publish);
        if !may_publish {
            return Err((403, "not allowed to publish (no canPublish grant)".into()));
        }
        let t = self.owned_transport(peer_id, transport_id)?;
        if !t.producing {
            return Err(bad_request("transport was not created for producing"));
        }
        let room = self
            .rooms
            .get_mut(room_id)
            .ok_or_else(|| not_found("room", room_id.as_str()))?;
        let answer = room.produce(
            now,
            peer_id,
            transport_id,
            kind,
            rtp_parameters,
            app_data,
            &self.router_caps,
            &mut self.rng,
            &mut self.outputs,
            &mut self.transports,
        )?;
        let info = answer
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| room.producers.get(id))
            .map(pipe::producer_info);
        if let Some(info) = info {
            if let Err(e) = self.directory.local_producer_added(room_id, peer_id, info) {
                tracing::warn!(room = %room_id, peer = %peer_id, error = %e, "producer not announced to other nodes");
            }
        }
        Ok(answer)
    }

    /// A packet arrived on the shared port (a UDP datagram or one RFC 4571 frame).
    pub fn handle_packet(&mut self, now: Instant, tuple: Tuple, data: &[u8]) {
        self.counters
            .media
            .traffic
            .observe(Kind::of(tuple.protocol), Direction::In, data.len());
        media::handle_packet(self, now, tuple, data);
        if !self.outputs.notes.is_empty() {
            self.settle(now);
        }
    }

    /// A TCP connection closed: its tuple is gone.
    pub fn handle_tcp_closed(&mut self, now: Instant, remote: SocketAddr) {
        let tuple = Tuple {
            protocol: crate::edge::ice::Protocol::Tcp,
            remote,
        };
        if let Some(id) = self.by_tuple.remove(&tuple) {
            if let Some(t) = self.transports.get_mut(&id) {
                t.ice.remove_tuple(&tuple);
                self.after_ice(now, &id);
            }
        }
        self.settle(now);
    }

    /// An event from a transport's DTLS session.
    pub fn handle_dtls(&mut self, now: Instant, id: &TransportId, ev: DtlsEvent) {
        self.handle_dtls_inner(now, id, ev);
        self.settle(now);
    }

    fn handle_dtls_inner(&mut self, now: Instant, id: &TransportId, ev: DtlsEvent) {
        let Some(t) = self.transports.get_mut(id) else {
            return;
        };
        match ev {
            DtlsEvent::Transmit(data) => {
                if let Some(tuple) = t.ice.selected_tuple() {
                    self.outputs.push_back(Output::Transmit {
                        tuple,
                        data: data.into(),
                    });
                }
            }
            DtlsEvent::Connected(keys) => {
                if let Err(e) = t.on_dtls_connected(&keys) {
                    tracing::warn!(transport = %id, error = %e, "SRTP setup failed; closing transport");
                    self.close_transport(id);
                    return;
                }
                tracing::debug!(transport = %id, "DTLS connected");
                if let Some(room) = self.rooms.get_mut(&t.room.clone()) {
                    room.on_transport_connected(now, id, &mut self.outputs, &mut self.transports);
                }
            }
            DtlsEvent::Failed(reason) => {
                self.counters.dtls_failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(transport = %id, %reason, "DTLS failed; closing transport");
                self.close_transport(id);
            }
            DtlsEvent::Closed => {
                tracing::info!(transport = %id, "DTLS closed by remote; closing transport");
                self.close_transport(id);
            }
        }
    }

    /// Drains a transport's ICE events (tuple changes, consent expiry).
    fn after_ice(&mut self, _now: Instant, id: &TransportId) {
        use crate::edge::ice::IceEvent;
        let mut close = false;
        if let Some(t) = self.transports.get_mut(id) {
            while let Some(ev) = t.ice.poll_event() {
                match ev {
                    IceEvent::TupleAdded(tuple) | IceEvent::SelectedTupleChanged(tuple) => {
                        self.by_tuple.insert(tuple, id.clone());
                    }
                    IceEvent::TupleRemoved(tuple) => {
                        self.by_tuple.remove(&tuple);
                        if tuple.protocol == crate::edge::ice::Protocol::Tcp {
                            self.outputs.push_back(Output::CloseTcp {
                                remote: tuple.remote,
                            });
                        }
                    }
                    IceEvent::ConsentExpired => close = true,
                    _ => {}
                }
            }
        }
        if close {
            tracing::info!(transport = %id, "ICE consent expired; closing transport");
            self.close_transport(id);
        }
    }

    /// Runs due timers: ICE consent, RTCP reports, NACK retries, feedback.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ntp_origin = self.ntp_origin(now);
        let ids: Vec<TransportId> = self
            .transports
            .iter()
            .filter(|(_, t)| t.poll_timeout().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(t) = self.transports.get_mut(&id) {
                t.ice.handle_timeout(now);
                media::send_twcc_feedback(t, now, &mut self.scratch, &mut self.outputs);
            }
            self.after_ice(now, &id);
        }
        for room in self.rooms.values_mut() {
            room.handle_timeout(now, ntp_origin, &mut self.outputs, &mut self.transports);
        }
        self.settle(now);
        self.pipe_timeout(now);
        self.last_timeout = Some(now);
        self.next_deadline = self.earliest_timer();
    }
}
#[cfg(test)]
mod tests;
