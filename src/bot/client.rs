//! The bot's networking: a protoo signaling client, a WebRTC transport (ICE controlling agent,
//! DTLS client, SRTP) and [`Bot`], one mediasoup-demo peer that produces synthetic Opus/VP8 and
//! consumes what the room sends.
//!
//! Sans-IO cores, unit-tested without sockets:
//! - [`ProtooClientCore`]: request ids, matching responses to waiters, typing incoming messages.
//! - [`IceController`]: ICE controlling checks against an ICE-lite node (RFC 8445 §7.2.5 with
//!   aggressive nomination) and consent freshness (RFC 7675).
//! - [`producer_rtp_parameters`], [`bot_rtp_capabilities`], [`ConsumerStream::from_request`]:
//!   mediasoup ORTC objects built from the router's capabilities.
//!
//! Glue: [`SignalingClient`] (one reader and one writer task per WebSocket) and
//! [`BotTransport`] (one driver task per transport owning its socket, the ICE core, the DTLS
//! session, both SRTP contexts, the media sources and the receive statistics).
//!
//! Everything queued is bounded; nothing here panics on what the node sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webrtc_srtp::context::Context as SrtpContext;

use super::media::{
    AudioConfig, AudioSource, HeaderExtensions, MediaError, TransportSeq, VideoConfig, VideoSource,
};
use super::stats::{Codec, RecvStats, RtpView};
use crate::edge::demux::{classify, encode_frame, FrameDecoder, PacketClass};
use crate::edge::dtls::{DtlsEvent, DtlsIdentity, DtlsRole, DtlsSession, Fingerprint};
use crate::edge::stun::{
    write_binding_request, BindingRequest, Class, IntegrityKey, StunMessage, TransactionId,
    METHOD_BINDING,
};
use crate::router::rtcp_core::{parse_compound, RtcpItem};
use crate::router::rtp_parameters::{
    uri, MediaKind, RtcpParameters, RtpCapabilities, RtpCodecParameters, RtpEncodingParameters,
    RtpHeaderExtensionParameters, RtpParameters,
};
use crate::signaling::protoo::Message;

/// Requests awaiting a response on one signaling connection before new ones are refused.
pub const MAX_PENDING_REQUESTS: usize = 256;
/// How long a signaling request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between connectivity checks until the first success.
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Interval between consent-freshness checks once connected (the node expires consent after
/// 30 s without a valid check).
pub const ICE_CONSENT_INTERVAL: Duration = Duration::from_secs(1);
/// Outstanding connectivity checks remembered (older responses are ignored).
pub const ICE_MAX_PENDING: usize = 16;
/// DTLS handshake deadline.
pub const DTLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued between the signaling tasks and their owner.
const SIGNALING_QUEUE: usize = 1024;
/// Commands queued towards one transport driver.
const TRANSPORT_QUEUE: usize = 256;
/// Events queued towards a [`Bot`]'s owner before further ones are dropped.
const BOT_EVENT_QUEUE: usize = 1024;
/// Largest packet the bot sends or receives.
const MTU: usize = 1500;
/// PRIORITY of our checks (a peer-reflexive host candidate, RFC 8445 §5.1.2).
const CHECK_PRIORITY: u32 = 0x6E00_01FF;

/// Errors of the bot's networking.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BotError {
    /// The WebSocket connection could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The signaling connection closed while a request was outstanding or being sent.
    #[error("signaling connection closed")]
    SignalingClosed,
    /// A request got no response within [`REQUEST_TIMEOUT`].
    #[error("request {0} timed out")]
    Timeout(String),
    /// More than [`MAX_PENDING_REQUESTS`] requests are outstanding.
    #[error("too many outstanding signaling requests")]
    TooManyPending,
    /// The node answered a request with a protoo error.
    #[error("{method} rejected: {code} {reason}")]
    Rejected {
        /// Method of the request.
        method: String,
        /// protoo errorCode.
        code: u16,
        /// protoo errorReason.
        reason: String,
    },
    /// A message from the node does not have the shape mediasoup-demo gives it.
    #[error("unexpected {what} from the node: {reason}")]
    Protocol {
        /// Which message.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The router does not offer a codec the bot needs.
    #[error("router capabilities lack {0}")]
    MissingCodec(&'static str),
    /// The transport offers no candidate of the wanted protocol.
    #[error("no {0} ICE candidate offered")]
    NoCandidate(&'static str),
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The DTLS identity could not be created.
    #[error(transparent)]
    Dtls(#[from] crate::edge::dtls::DtlsError),
    /// A media source rejected its configuration.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The transport driver has stopped.
    #[error("transport closed")]
    TransportClosed,
    /// An event did not come before its deadline.
    #[error("timed out waiting for {0}")]
    WaitTimeout(String),
    /// An option or argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

// ------------------------------------------------------------------------------------------
// protoo client core (sans-IO)
// ------------------------------------------------------------------------------------------

/// What an incoming text frame means to the client, with the waiter of a matched response.
#[derive(Debug)]
pub enum Incoming<W> {
    /// A response to one of our requests.
    Response {
        /// Method of the request answered.
        method: String,
        /// Whoever waits for it.
        waiter: W,
        /// Data, or (errorCode, errorReason).
        result: Result<Value, (u16, String)>,
    },
    /// A response whose id we do not (or no longer) wait for.
    Unmatched(u64),
    /// A request from the node, to be answered with [`ProtooClientCore::response`].
    Request {
        /// Request id.
        id: u64,
        /// Method.
        method: String,
        /// Arguments.
        data: Value,
    },
    /// A notification from the node.
    Notification {
        /// Method.
        method: String,
        /// Arguments.
        data: Value,
    },
    /// The frame is not a protoo message.
    Invalid(String),
}

/// Client side of protoo: allocates request ids and matches responses to waiters of type `W`.
#[derive(Debug)]
pub struct ProtooClientCore<W> {
    next_id: u64,
    pending: HashMap<u64, (String, W)>,
}

impl<W> Default for ProtooClientCore<W> {
    fn default() -> Self {
        Self::new(1)
    }
}

impl<W> ProtooClientCore<W> {
    /// A core whose first request id is `first_id` (protoo-client uses random ids; any
    /// unique id works).
    pub fn new(first_id: u64) -> Self {
        Self {
            next_id: first_id.max(1),
            pending: HashMap::new(),
        }
    }

    /// Registers a request and returns its id and wire text.
    pub fn request(
        &mut self,
        method: &str,
        data: Value,
        waiter: W,
    ) -> Result<(u64, String), BotError> {
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            return Err(BotError::TooManyPending);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let text = Message::Request {
            id,
            method: method.to_owned(),
            data,
        }
        .to_text();
        self.pending.insert(id, (method.to_owned(), waiter));
        Ok((id, text))
    }

    /// Forgets a request (timed out or abandoned), returning its waiter.
    pub fn cancel(&mut self, id: u64) -> Option<W> {
        self.pending.remove(&id).map(|(_, w)| w)
    }

    /// Requests still waiting for a response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drops every waiter (the connection closed).
    pub fn drain(&mut self) -> Vec<W> {
        self.pending.drain().map(|(_, (_, w))| w).collect()
    }

    /// Types one incoming text frame.
    pub fn handle_text(&mut self, text: &str) -> Incoming<W> {
        let msg = match Message::parse(text) {
            Ok(m) => m,
            Err(e) => return Incoming::Invalid(e.to_string()),
        };
        let (id, result) = match msg {
            Message::Request { id, method, data } => return Incoming::Request { id, method, data },
            Message::Notification { method, data } => {
                return Incoming::Notification { method, data }
            }
            Message::Success { id, data } => (id, Ok(data)),
            Message::Error { id, code, reason } => (id, Err((code, reason))),
        };
        match self.pending.remove(&id) {
            Some((method, waiter)) => Incoming::Response {
                method,
                waiter,
                result,
            },
            None => Incoming::Unmatched(id),
        }
    }

    /// Wire text of our response to a node request.
    pub fn response(id: u64, result: Result<Value, (u16, String)>) -> String {
        match result {
            Ok(data) => Message::Success { id, data },
            Err((code, reason)) => Message::Error { id, code, reason },
        }
        .to_text()
    }
}

// ------------------------------------------------------------------------------------------
// Signaling glue
// ------------------------------------------------------------------------------------------

/// A request or notification from the node, or the end of the connection.
#[derive(Debug, Clone)]
pub enum ServerMessage {
    /// A request; answer it with [`SignalingClient::respond`].
    Request {
        /// Request id.
        id: u64,
        /// Method.
        method: String,
        /// Arguments.
        data: Value,
    },
    /// A notification.
    Notification {
        /// Method.
        method: String,
        /// Arguments.
        data: Value,
    },
    /// The connection closed; nothing follows.
    Closed,
}

type Waiter = oneshot::Sender<Result<Value, (u16, String)>>;

/// A protoo WebSocket client. Cheap to clone; the connection closes when every clone and the
/// reader task are gone, or on [`SignalingClient::close`].
#[derive(Clone)]
pub struct SignalingClient {
    core: Arc<Mutex<ProtooClientCore<Waiter>>>,
    out: mpsc::Sender<WsMessage>,
}

/// `ws://HOST:PORT` plus the mediasoup-demo query string.
pub fn signaling_url(server: &str, room: &str, peer: &str) -> String {
    let base = server.trim_end_matches('/');
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!("{base}/?roomId={}&peerId={}", enc(room), enc(peer))
}

impl SignalingClient {
    /// Connects to `ws://…/?roomId=room&peerId=peer` with the `protoo` subprotocol. Requests
    /// and notifications from the node arrive on the returned receiver.
    pub async fn connect(
        server: &str,
        room: &str,
        peer: &str,
    ) -> Result<(Self, mpsc::Receiver<ServerMessage>), BotError> {
        let url = signaling_url(server, room, peer);
        let connect_err = |reason: String| BotError::Connect {
            url: url.clone(),
            reason,
        };
        let uri =
            url.parse()
                .map_err(|e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| {
                    connect_err(e.to_string())
                })?;
        let req = ClientRequestBuilder::new(uri).with_sub_protocol("protoo");
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<WsMessage>(SIGNALING_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(SIGNALING_QUEUE);
        let core = Arc::new(Mutex::new(ProtooClientCore::<Waiter>::new(
            rand::rng().random_range(1..1u64 << 40),
        )));
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, WsMessage::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader_core = core.clone();
        let pong = out.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let text = match frame {
                    WsMessage::Text(t) => t,
                    WsMessage::Ping(p) => {
                        let _ = pong.try_send(WsMessage::Pong(p));
                        continue;
                    }
                    WsMessage::Close(_) => break,
                    _ => continue,
                };
                // The lock is never held across an await.
                let incoming = match reader_core.lock() {
                    Ok(mut c) => c.handle_text(text.as_str()),
                    Err(_) => break,
                };
                let ev = match incoming {
                    Incoming::Response { waiter, result, .. } => {
                        let _ = waiter.send(result);
                        continue;
                    }
                    Incoming::Request { id, method, data } => {
                        ServerMessage::Request { id, method, data }
                    }
                    Incoming::Notification { method, data } => {
                        ServerMessage::Notification { method, data }
                    }
                    Incoming::Unmatched(id) => {
                        tracing::debug!(id, "response to an unknown request");
                        continue;
                    }
                    Incoming::Invalid(e) => {
                        tracing::debug!(error = %e, "invalid protoo frame from the node");
                        continue;
                    }
                };
                if ev_tx.send(ev).await.is_err() {
                    // Nobody listens: keep serving responses anyway.
                    continue;
                }
            }
            if let Ok(mut c) = reader_core.lock() {
                c.drain();
            }
            let _ = ev_tx.send(ServerMessage::Closed).await;
        });
        Ok((Self { core, out }, ev_rx))
    }

    /// Sends a request and waits (at most [`REQUEST_TIMEOUT`]) for its response data.
    pub async fn request(&self, method: &str, data: Value) -> Result<Value, BotError> {
        match self.request_raw(method, data).await? {
            Ok(v) => Ok(v),
            Err((code, reason)) => Err(BotError::Rejected {
                method: method.to_owned(),
                code,
                reason,
            }),
        }
    }

    /// Like [`Self::request`] but returns a protoo error response as `Ok(Err((code, reason)))`.
    pub async fn request_raw(
        &self,
        method: &str,
        data: Value,
    ) -> Result<Result<Value, (u16, String)>, BotError> {
        let (tx, rx) = oneshot::channel();
        let (id, text) = self
            .core
            .lock()
            .map_err(|_| BotError::SignalingClosed)?
            .request(method, data, tx)?;
        if self.out.send(WsMessage::text(text)).await.is_err() {
            self.cancel(id);
            return Err(BotError::SignalingClosed);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(BotError::SignalingClosed),
            Err(_) => {
                self.cancel(id);
                Err(BotError::Timeout(method.to_owned()))
            }
        }
    }

    fn cancel(&self, id: u64) {
        if let Ok(mut c) = self.core.lock() {
            c.cancel(id);
        }
    }

    /// Answers a request from the node.
    pub async fn respond(
        &self,
        id: u64,
        result: Result<Value, (u16, String)>,
    ) -> Result<(), BotError> {
        let text = ProtooClientCore::<Waiter>::response(id, result);
        self.send_text(text).await
    }

    /// Sends an arbitrary text frame (for testing how the node handles malformed messages).
    pub async fn send_text(&self, text: String) -> Result<(), BotError> {
        self.out
            .send(WsMessage::text(text))
            .await
            .map_err(|_| BotError::SignalingClosed)
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str, data: Value) -> Result<(), BotError> {
        let text = Message::Notification {
            method: method.to_owned(),
            data,
        }
        .to_text();
        self.send_text(text).await
    }

    /// Closes the WebSocket.
    pub async fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None)).await;
    }
}

// ------------------------------------------------------------------------------------------
// ICE controlling core (sans-IO)
// ------------------------------------------------------------------------------------------

/// `iceParameters` of a WebRtcTransport.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    /// The node's ufrag.
    pub username_fragment: String,
    /// The node's password.
    pub password: String,
    /// Whether the node is ICE-lite (pipemesh always is).
    #[serde(default)]
    pub ice_lite: bool,
}

/// One of the node's ICE candidates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceCandidate {
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
}

/// The `createWebRtcTransport` response fields the bot uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportInfo {
    /// Transport id.
    pub id: String,
    /// ICE credentials of the node.
    pub ice_parameters: IceParameters,
    /// The node's candidates.
    pub ice_candidates: Vec<IceCandidate>,
    /// The node's DTLS fingerprints.
    pub dtls_parameters: crate::edge::dtls::DtlsParameters,
}

impl TransportInfo {
    /// Parses a `createWebRtcTransport` response.
    pub fn from_json(v: &Value) -> Result<Self, BotError> {
        serde_json::from_value(v.clone()).map_err(|e| BotError::Protocol {
            what: "createWebRtcTransport response",
            reason: e.to_string(),
        })
    }

    /// The address of the first candidate of `protocol` (`udp` or `tcp`).
    pub fn candidate(&self, tcp: bool) -> Result<SocketAddr, BotError> {
        let want = if tcp { "tcp" } else { "udp" };
        self.ice_candidates
            .iter()
            .filter(|c| c.protocol.eq_ignore_ascii_case(want))
            .find_map(|c| Some(SocketAddr::new(c.ip.parse::<IpAddr>().ok()?, c.port)))
            .ok_or(BotError::NoCandidate(want))
    }
}

/// Connectivity state of an [`IceController`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceState {
    /// No check has succeeded with the current credentials.
    Checking,
    /// A nominating check succeeded; consent is being refreshed.
    Connected,
}

/// What an incoming STUN message did to the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceInput {
    /// A success response to a pending check; `true` if it moved us to [`IceState::Connected`].
    Success(bool),
    /// An error response to a pending check, with its code.
    Error(u16),
    /// Not a response to one of our pending checks, or it failed integrity: ignored.
    Ignored,
}

/// The controlling side of ICE towards one ICE-lite candidate. Sends a nominating Binding
/// request every [`ICE_CHECK_INTERVAL`] until one succeeds, then one every
/// [`ICE_CONSENT_INTERVAL`] as consent freshness.
///
/// Drive rule: call [`Self::poll_transmit`] when [`Self::poll_timeout`] is due, and feed every
/// STUN message from the node to [`Self::handle_stun`].
#[derive(Debug)]
pub struct IceController {
    local_ufrag: String,
    username: String,
    key: IntegrityKey,
    tie_breaker: u64,
    rng: StdRng,
    pending: VecDeque<TransactionId>,
    state: IceState,
    next_check: Instant,
    last_success: Option<Instant>,
    checks_sent: u64,
}

impl IceController {
    /// A controller with a random local ufrag drawn from `seed`, checking from `now`.
    pub fn new(now: Instant, remote: &IceParameters, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let local_ufrag: String = (0..8)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let tie_breaker = rng.random();
        Self {
            username: format!("{}:{local_ufrag}", remote.username_fragment),
            key: IntegrityKey::new(remote.password.as_bytes()),
            local_ufrag,
            tie_breaker,
            rng,
            pending: VecDeque::new(),
            state: IceState::Checking,
            next_check: now,
            last_success: None,
            checks_sent: 0,
        }
    }

    /// Our ufrag.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// Current state.
    pub fn state(&self) -> IceState {
        self.state
    }

    /// When the last check succeeded.
    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// Checks sent so far.
    pub fn checks_sent(&self) -> u64 {
        self.checks_sent
    }

    /// Switches to new remote credentials (after `restartIce`): checks restart at once.
    pub fn restart(&mut self, now: Instant, remote: &IceParameters) {
        self.username = format!("{}:{}", remote.username_fragment, self.local_ufrag);
        self.key = IntegrityKey::new(remote.password.as_bytes());
        self.pending.clear();
        self.state = IceState::Checking;
        self.next_check = now;
    }

    /// When the next check is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_check
    }

    /// Writes the next check into `out` if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if now < self.next_check {
            return false;
        }
        let transaction_id: TransactionId = self.rng.random();
        let req = BindingRequest {
            transaction_id,
            username: &self.username,
            priority: CHECK_PRIORITY,
            tie_breaker: self.tie_breaker,
            use_candidate: true,
        };
        if write_binding_request(out, &req, &self.key).is_err() {
            // Only an over-long username fails, which the node's ufrag cannot make: stop trying.
            self.next_check = now + ICE_CONSENT_INTERVAL;
            return false;
        }
        if self.pending.len() >= ICE_MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(transaction_id);
        self.checks_sent += 1;
        self.next_check = now
            + match self.state {
                IceState::Checking => ICE_CHECK_INTERVAL,
                IceState::Connected => ICE_CONSENT_INTERVAL,
            };
        true
    }

    /// Handles a STUN message from the node.
    pub fn handle_stun(&mut self, now: Instant, msg: &StunMessage<'_>) -> IceInput {
        if msg.method() != METHOD_BINDING {
            return IceInput::Ignored;
        }
        let Some(pos) = self.pending.iter().position(|t| t == msg.transaction_id()) else {
            return IceInput::Ignored;
        };
        match msg.class() {
            Class::SuccessResponse => {
                if !msg.verify_integrity_with(&self.key) {
                    return IceInput::Ignored;
                }
                self.pending.remove(pos);
                self.last_success = Some(now);
                let became = self.state == IceState::Checking;
                if became {
                    self.state = IceState::Connected;
                    self.next_check = now + ICE_CONSENT_INTERVAL;
                }
                IceInput::Success(became)
            }
            Class::ErrorResponse => {
                self.pending.remove(pos);
                IceInput::Error(msg.error_code().map_or(0, |e| e.code))
            }
            Class::Request | Class::Indication => IceInput::Ignored,
        }
    }
}

// ------------------------------------------------------------------------------------------
// ORTC helpers (sans-IO)
// ------------------------------------------------------------------------------------------

fn is_bot_codec(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("audio/opus") || mime.eq_ignore_ascii_case("video/VP8")
}

/// The capabilities the bot announces in `join`: the router's Opus and VP8 (with VP8's RTX)
/// and all its header extensions.
pub fn bot_rtp_capabilities(router: &RtpCapabilities) -> RtpCapabilities {
    let kept: Vec<u8> = router
        .codecs
        .iter()
        .filter(|c| is_bot_codec(&c.mime_type))
        .filter_map(|c| c.preferred_payload_type)
        .collect();
    RtpCapabilities {
        codecs: router
            .codecs
            .iter()
            .filter(|c| {
                is_bot_codec(&c.mime_type)
                    || (c.is_rtx() && c.apt().is_some_and(|apt| kept.contains(&apt)))
            })
            .cloned()
            .collect(),
        header_extensions: router.header_extensions.clone(),
    }
}

/// A producer's `rtpParameters` and the header extensions its source must write.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerParameters {
    /// What `produce` carries.
    pub rtp_parameters: RtpParameters,
    /// Extension ids for [`super::media`].
    pub extensions: HeaderExtensions,
}

/// Builds the `rtpParameters` of an Opus (audio) or VP8 (video) producer sending `ssrc` with
/// `mid`, using the router's payload type and preferred extension ids (mid, abs-send-time,
/// transport-wide-cc when the router offers them for the kind with a one-byte id).
pub fn producer_rtp_parameters(
    router: &RtpCapabilities,
    kind: MediaKind,
    mid: &str,
    ssrc: u32,
    cname: &str,
) -> Result<ProducerParameters, BotError> {
    let (mime, name) = match kind {
        MediaKind::Audio => ("audio/opus", "audio/opus"),
        MediaKind::Video => ("video/VP8", "video/VP8"),
    };
    let cap = router
        .codecs
        .iter()
        .find(|c| c.mime_type.eq_ignore_ascii_case(mime))
        .ok_or(BotError::MissingCodec(name))?;
    let payload_type = cap
        .preferred_payload_type
        .ok_or(BotError::MissingCodec(name))?;
    let mut parameters = crate::router::rtp_parameters::CodecParameters::new();
    if kind == MediaKind::Audio {
        parameters.insert("minptime", 10);
        parameters.insert("useinbandfec", 1);
    }
    let codec = RtpCodecParameters {
        mime_type: cap.mime_type.clone(),
        payload_type,
        clock_rate: cap.clock_rate,
        channels: cap.channels,
        parameters,
        rtcp_feedback: cap.rtcp_feedback.clone(),
    };
    let id_of = |u: &str| {
        router
            .header_extensions
            .iter()
            .find(|e| e.kind == kind && e.uri == u && (1..=14).contains(&e.preferred_id))
            .map(|e| e.preferred_id)
    };
    let mut header_extensions = Vec::new();
    let mut extensions = HeaderExtensions::default();
    let mut add = |u: &str, id: u8| {
        header_extensions.push(RtpHeaderExtensionParameters {
            uri: u.to_owned(),
            id,
            encrypt: false,
            parameters: Default::default(),
        })
    };
    if let Some(id) = id_of(uri::MID) {
        add(uri::MID, id);
        extensions.mid = Some((id, mid.to_owned()));
    }
    if let Some(id) = id_of(uri::ABS_SEND_TIME) {
        add(uri::ABS_SEND_TIME, id);
        extensions.abs_send_time = Some(id);
    }
    if let Some(id) = id_of(uri::TRANSPORT_WIDE_CC_01) {
        add(uri::TRANSPORT_WIDE_CC_01, id);
        extensions.transport_cc = Some(id);
    }
    Ok(ProducerParameters {
        rtp_parameters: RtpParameters {
            mid: Some(mid.to_owned()),
            codecs: vec![codec],
            header_extensions,
            encodings: vec![RtpEncodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            }],
            rtcp: RtcpParameters {
                cname: Some(cname.to_owned()),
                reduced_size: true,
                mux: None,
            },
        },
        extensions,
    })
}

/// A consumer offered by `newConsumer`, reduced to what the receiver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStream {
    /// Consumer id.
    pub id: String,
    /// Producer id.
    pub producer_id: String,
    /// Producing peer.
    pub peer_id: String,
    /// `audio` or `video`.
    pub kind: MediaKind,
    /// Media SSRC the node sends.
    pub ssrc: u32,
    /// RTX SSRC, if any.
    pub rtx_ssrc: Option<u32>,
    /// Media codec.
    pub codec: Codec,
    /// Its clock rate.
    pub clock_rate: u32,
    /// The producer was paused when the consumer was created.
    pub producer_paused: bool,
}

impl ConsumerStream {
    /// Parses `newConsumer` data.
    pub fn from_request(data: &Value) -> Result<Self, BotError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct NewConsumer {
            id: String,
            producer_id: String,
            #[serde(default)]
            peer_id: String,
            kind: MediaKind,
            rtp_parameters: RtpParameters,
            #[serde(default)]
            producer_paused: bool,
        }
        let bad = |reason: String| BotError::Protocol {
            what: "newConsumer",
            reason,
        };
        let nc: NewConsumer =
            serde_json::from_value(data.clone()).map_err(|e| bad(e.to_string()))?;
        let enc = nc
            .rtp_parameters
            .encodings
            .first()
            .ok_or_else(|| bad("no encoding".into()))?;
        let ssrc = enc
            .ssrc
            .ok_or_else(|| bad("encoding without ssrc".into()))?;
        let media = nc
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| !c.is_rtx())
            .ok_or_else(|| bad("no media codec".into()))?;
        let codec = if media.mime_type.eq_ignore_ascii_case("audio/opus") {
            Codec::Opus
        } else if media.mime_type.eq_ignore_ascii_case("video/VP8") {
            Codec::Vp8
        } else if nc.kind == MediaKind::Audio {
            Codec::OtherAudio
        } else {
            Codec::OtherVideo
        };
        Ok(Self {
            id: nc.id,
            producer_id: nc.producer_id,
            peer_id: nc.peer_id,
            kind: nc.kind,
            ssrc,
            rtx_ssrc: enc.rtx.map(|r| r.ssrc),
            codec,
            clock_rate: media.clock_rate,
            producer_paused: nc.producer_paused,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Transport glue
// ------------------------------------------------------------------------------------------

/// Configuration of a media source to start once SRTP is ready.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Opus audio.
    Audio(AudioConfig),
    /// VP8 video.
    Video(VideoConfig),
}

enum Source {
    Audio(AudioSource),
    Video(VideoSource),
}

impl Source {
    fn next_packet_time(&self) -> Instant {
        match self {
            Source::Audio(a) => a.next_packet_time(),
            Source::Video(v) => v.next_packet_time(),
        }
    }
    fn poll(
        &mut self,
        now: Instant,
        wall: u64,
        tcc: &mut TransportSeq,
        buf: &mut [u8],
    ) -> Result<Option<usize>, MediaError> {
        match self {
            Source::Audio(a) => a.poll(now, wall, tcc, buf),
            Source::Video(v) => v.poll(now, wall, tcc, buf),
        }
    }
}

/// Counters and state of a transport, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportState {
    /// A connectivity check has succeeded (with the current or an earlier credential set).
    pub ice_connected: bool,
    /// Successful connectivity checks.
    pub ice_successes: u64,
    /// Error responses to our checks.
    pub ice_errors: u64,
    /// DTLS is done and SRTP is keyed.
    pub dtls_connected: bool,
    /// Set when the driver stopped, with the reason.
    pub closed: Option<String>,
    /// SRTP packets sent.
    pub rtp_sent: u64,
    /// SRTCP packets sent.
    pub rtcp_sent: u64,
    /// Raw datagrams/frames sent with [`BotTransport::send_raw`].
    pub raw_sent: u64,
    /// RTP packets received and decrypted.
    pub rtp_received: u64,
    /// RTCP compound packets received and decrypted.
    pub rtcp_received: u64,
    /// PLI/FIR items addressed to one of our sources.
    pub keyframe_requests: u64,
    /// Packets that failed SRTP/SRTCP authentication or decryption.
    pub srtp_errors: u64,
    /// Decrypted RTP of an SSRC no consumer announced.
    pub unknown_ssrc: u64,
    /// Send failures (full socket buffer, ICMP unreachable...).
    pub send_errors: u64,
    /// RTP packets received per SSRC.
    pub received_by_ssrc: BTreeMap<u32, u64>,
}

impl TransportState {
    /// Packets received for `ssrc`.
    pub fn received(&self, ssrc: u32) -> u64 {
        self.received_by_ssrc.get(&ssrc).copied().unwrap_or(0)
    }
}

/// Statistics of one received stream.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// The consumer.
    pub consumer: ConsumerStream,
    /// Its receive statistics.
    pub stats: RecvStats,
}

enum Command {
    AddSource(SourceConfig),
    AddReceiver(ConsumerStream),
    RemoveReceiver(u32),
    RestartIce(IceParameters),
    SendRaw(Vec<u8>),
    SendRtcp(Vec<u8>),
    Stats(oneshot::Sender<Vec<StreamStats>>),
}

/// Handle to one transport towards the node. Dropping it stops the driver.
pub struct BotTransport {
    id: String,
    remote: SocketAddr,
    cmd: mpsc::Sender<Command>,
    state: watch::Receiver<TransportState>,
    task: JoinHandle<()>,
}

impl Drop for BotTransport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Io {
    Udp(UdpSocket),
    Tcp(TcpStream, Box<FrameDecoder>),
}

impl Io {
    /// Reads one datagram or RFC 4571 frame. Cancel-safe: a frame read but not returned stays
    /// in the decoder.
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Udp(s) => s.recv(buf).await,
            Io::Tcp(s, dec) => loop {
                match dec.next_frame() {
                    Ok(Some(f)) => {
                        let n = f.len().min(buf.len());
                        buf[..n].copy_from_slice(&f[..n]);
                        return Ok(n);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                }
                let n = s.read(dec.read_buf()).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                dec.commit(n);
            },
        }
    }

    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Udp(s) => s.send(data).await.map(|_| ()),
            Io::Tcp(s, _) => {
                let mut framed = Vec::with_capacity(data.len() + 2);
                encode_frame(data, &mut framed)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                s.write_all(&framed).await
            }
        }
    }
}

impl BotTransport {
    /// Opens a socket to the node's UDP (or TCP) candidate and starts the driver: ICE checks
    /// at once, the DTLS client handshake once a check succeeds, media once SRTP is keyed.
    /// Send `connectWebRtcTransport` (role `client`) before calling this.
    pub async fn open(
        info: &TransportInfo,
        tcp: bool,
        identity: &DtlsIdentity,
        seed: u64,
    ) -> Result<Self, BotError> {
        let remote = info.candidate(tcp)?;
        let io = if tcp {
            let s = TcpStream::connect(remote).await?;
            s.set_nodelay(true)?;
            Io::Tcp(s, Box::new(FrameDecoder::new(MTU * 2)))
        } else {
            let local: SocketAddr = if remote.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .map_err(|_| BotError::InvalidArgument("local address".into()))?;
            let s = UdpSocket::bind(local).await?;
            s.connect(remote).await?;
            Io::Udp(s)
        };
        let (cmd, cmd_rx) = mpsc::channel(TRANSPORT_QUEUE);
        let (state_tx, state) = watch::channel(TransportState::default());
        let (dtls_tx, dtls_rx) = mpsc::channel(64);
        let now = Instant::now();
        let driver = Driver {
            io,
            ice: IceController::new(now, &info.ice_parameters, seed),
            identity: identity.clone(),
            remote_fingerprints: info.dtls_parameters.fingerprints.clone(),
            dtls: None,
            dtls_tx,
            dtls_rx,
            srtp_out: None,
            srtp_in: None,
            pending_sources: Vec::new(),
            sources: Vec::new(),
            receivers: HashMap::new(),
            rtx: HashMap::new(),
            tcc: TransportSeq::new(rand::rng().random()),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            state: state_tx,
        };
        let task = tokio::spawn(driver.run(cmd_rx));
        Ok(Self {
            id: info.id.clone(),
            remote,
            cmd,
            state,
            task,
        })
    }

    /// The node's transport id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's address this transport talks to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The latest state.
    pub fn state(&self) -> TransportState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes, for waiting on conditions.
    pub fn watch(&self) -> watch::Receiver<TransportState> {
        self.state.clone()
    }

    /// Waits until `pred` holds on the state, or `timeout` passes.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&TransportState) -> bool,
    ) -> Result<TransportState, BotError> {
        let mut w = self.state.clone();
        let r = tokio::time::timeout(timeout, async {
            w.wait_for(|s| pred(s)).await.map(|s| s.clone())
        })
        .await;
        match r {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(BotError::TransportClosed),
            Err(_) => Err(BotError::WaitTimeout(what.to_owned())),
        }
    }

    async fn command(&self, c: Command) -> Result<(), BotError> {
        self.cmd
            .send(c)
            .await
            .map_err(|_| BotError::TransportClosed)
    }

    /// Starts a media source (now, or when SRTP becomes ready).
    pub async fn add_source(&self, config: SourceConfig) -> Result<(), BotError> {
        self.command(Command::AddSource(config)).await
    }

    /// Routes `stream.ssrc` to receive statistics.
    pub async fn add_receiver(&self, stream: ConsumerStream) -> Result<(), BotError> {
        self.command(Command::AddReceiver(stream)).await
    }

    /// Stops accounting `ssrc` (statistics so far are dropped).
    pub async fn remove_receiver(&self, ssrc: u32) -> Result<(), BotError> {
        self.command(Command::RemoveReceiver(ssrc)).await
    }

    /// Switches ICE to the credentials `restartIce` returned.
    pub async fn restart_ice(&self, params: IceParameters) -> Result<(), BotError> {
        self.command(Command::RestartIce(params)).await
    }

    /// Sends bytes as they are (no SRTP) on the transport's 5-tuple, framed on TCP.
    pub async fn send_raw(&self, data: Vec<u8>) -> Result<(), BotError> {
        self.command(Command::SendRaw(data)).await
    }

    /// Encrypts and sends a plain RTCP compound packet (dropped until SRTP is ready).
    pub async fn send_rtcp(&self, rtcp: Vec<u8>) -> Result<(), BotError> {
        self.command(Command::SendRtcp(rtcp)).await
    }

    /// Statistics of every received stream.
    pub async fn stats(&self) -> Result<Vec<StreamStats>, BotError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Stats(tx)).await?;
        rx.await.map_err(|_| BotError::TransportClosed)
    }
}

struct Driver {
    io: Io,
    ice: IceController,
    identity: DtlsIdentity,
    remote_fingerprints: Vec<Fingerprint>,
    dtls: Option<DtlsSession>,
    dtls_tx: mpsc::Sender<DtlsEvent>,
    dtls_rx: mpsc::Receiver<DtlsEvent>,
    srtp_out: Option<SrtpContext>,
    srtp_in: Option<SrtpContext>,
    pending_sources: Vec<SourceConfig>,
    sources: Vec<Source>,
    receivers: HashMap<u32, StreamStats>,
    /// RTX SSRC -> media SSRC.
    rtx: HashMap<u32, u32>,
    tcc: TransportSeq,
    rng: StdRng,
    state: watch::Sender<TransportState>,
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; MTU * 2];
        let reason = loop {
            let deadline = self.next_deadline();
            tokio::select! {
                r = self.io.recv(&mut buf) => match r {
                    Ok(n) => self.on_packet(&buf[..n]),
                    // A connected UDP socket reports ICMP errors; the node may come back.
                    Err(e) if matches!(self.io, Io::Udp(_))
                        && e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => break format!("socket: {e}"),
                },
                c = cmds.recv() => match c {
                    Some(c) => self.on_command(c).await,
                    None => break "handle dropped".to_owned(),
                },
                Some(ev) = self.dtls_rx.recv() => {
                    if let Some(r) = self.on_dtls(ev).await {
                        break r;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.on_timeout().await;
        };
        self.state.send_modify(|s| s.closed = Some(reason));
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.ice.poll_timeout();
        if self.srtp_out.is_some() {
            for s in &self.sources {
                d = d.min(s.next_packet_time());
            }
        }
        d
    }

    async fn send(&mut self, data: &[u8]) {
        if self.io.send(data).await.is_err() {
            self.state.send_modify(|s| s.send_errors += 1);
        }
    }

    async fn on_timeout(&mut self) {
        let now = Instant::now();
        let mut out = Vec::with_capacity(128);
        if self.ice.poll_transmit(now, &mut out) {
            self.send(&out).await;
        }
        let Some(ctx) = self.srtp_out.as_mut() else {
            return;
        };
        let wall = wall_us();
        let mut buf = [0u8; MTU];
        let mut packets = Vec::new();
        for s in &mut self.sources {
            loop {
                match s.poll(now, wall, &mut self.tcc, &mut buf) {
                    Ok(Some(n)) => match ctx.encrypt_rtp(&buf[..n]) {
                        Ok(p) => packets.push(p),
                        Err(e) => tracing::debug!(error = %e, "SRTP encrypt failed"),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "media source failed");
                        break;
                    }
                }
            }
        }
        let mut sent = 0;
        for p in packets {
            if self.io.send(&p).await.is_ok() {
                sent += 1;
            } else {
                self.state.send_modify(|s| s.send_errors += 1);
            }
        }
        if sent > 0 {
            self.state.send_modify(|s| s.rtp_sent += sent);
        }
    }

    fn start_source(&mut self, config: SourceConfig) {
        let now = Instant::now();
        let r = match config {
            SourceConfig::Audio(c) => AudioSource::new(c, now, &mut self.rng).map(Source::Audio),
            SourceConfig::Video(c) => VideoSource::new(c, now, &mut self.rng).map(Source::Video),
        };
        match r {
            Ok(s) => self.sources.push(s),
            Err(e) => tracing::warn!(error = %e, "cannot start media source"),
        }
    }

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::AddSource(cfg) => {
                if self.srtp_out.is_some() {
                    self.start_source(cfg);
                } else {
                    self.pending_sources.push(cfg);
                }
            }
            Command::AddReceiver(stream) => {
                if let Some(rtx) = stream.rtx_ssrc {
                    self.rtx.insert(rtx, stream.ssrc);
                }
                let stats = RecvStats::new(stream.ssrc, stream.codec, stream.clock_rate);
                self.receivers.insert(
                    stream.ssrc,
                    StreamStats {
                        consumer: stream,
                        stats,
                    },
                );
            }
            Command::RemoveReceiver(ssrc) => {
                self.receivers.remove(&ssrc);
                self.rtx.retain(|_, m| *m != ssrc);
            }
            Command::RestartIce(p) => self.ice.restart(Instant::now(), &p),
            Command::SendRaw(data) => {
                self.send(&data).await;
                self.state.send_modify(|s| s.raw_sent += 1);
            }
            Command::SendRtcp(data) => {
                let Some(ctx) = self.srtp_out.as_mut() else {
                    return;
                };
                if let Ok(p) = ctx.encrypt_rtcp(&data) {
                    self.send(&p).await;
                    self.state.send_modify(|s| s.rtcp_sent += 1);
                }
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.receivers.values().cloned().collect());
            }
        }
    }

    async fn on_dtls(&mut self, ev: DtlsEvent) -> Option<String> {
        match ev {
            DtlsEvent::Transmit(rec) => {
                self.send(&rec).await;
                None
            }
            DtlsEvent::Connected(keys) => {
                let out =
                    SrtpContext::new(&keys.local_key, &keys.local_salt, keys.profile, None, None);
                let inn = SrtpContext::new(
                    &keys.remote_key,
                    &keys.remote_salt,
                    keys.profile,
                    None,
                    None,
                );
                match (out, inn) {
                    (Ok(o), Ok(i)) => {
                        self.srtp_out = Some(o);
                        self.srtp_in = Some(i);
                        for cfg in std::mem::take(&mut self.pending_sources) {
                            self.start_source(cfg);
                        }
                        self.state.send_modify(|s| s.dtls_connected = true);
                        None
                    }
                    (Err(e), _) | (_, Err(e)) => Some(format!("SRTP setup: {e}")),
                }
            }
            DtlsEvent::Failed(r) => Some(format!("DTLS failed: {r}")),
            DtlsEvent::Closed => Some("DTLS closed by the node".to_owned()),
        }
    }

    fn on_packet(&mut self, data: &[u8]) {
        let now = Instant::now();
        match classify(data) {
            PacketClass::Stun => {
                let Ok(msg) = StunMessage::parse(data) else {
                    return;
                };
                match self.ice.handle_stun(now, &msg) {
                    IceInput::Success(_) => {
                        self.state.send_modify(|s| {
                            s.ice_connected = true;
                            s.ice_successes += 1;
                        });
                        if self.dtls.is_none() {
                            let tx = self.dtls_tx.clone();
                            self.dtls = Some(DtlsSession::start(
                                &self.identity,
                                DtlsRole::Client,
                                self.remote_fingerprints.clone(),
                                DTLS_TIMEOUT,
                                move |ev| {
                                    let _ = tx.try_send(ev);
                                },
                            ));
                        }
                    }
                    IceInput::Error(code) => {
                        tracing::debug!(code, "ICE check rejected");
                        self.state.send_modify(|s| s.ice_errors += 1);
                    }
                    IceInput::Ignored => {}
                }
            }
            PacketClass::Dtls => {
                if let Some(d) = &self.dtls {
                    d.feed(data);
                }
            }
            PacketClass::Rtp => self.on_rtp(now, data),
            PacketClass::Rtcp => self.on_rtcp(data),
            PacketClass::Unknown => {}
        }
    }

    fn on_rtp(&mut self, now: Instant, data: &[u8]) {
        let Some(ctx) = self.srtp_in.as_mut() else {
            return;
        };
        let plain = match ctx.decrypt_rtp(data) {
            Ok(p) => p,
            Err(_) => {
                self.state.send_modify(|s| s.srtp_errors += 1);
                return;
            }
        };
        let Ok(view) = RtpView::parse(&plain) else {
            return;
        };
        let ssrc = view.ssrc;
        let known = match self.receivers.get_mut(&ssrc) {
            Some(r) => {
                r.stats.on_packet(now, wall_us(), &view);
                true
            }
            // Retransmissions are counted per SSRC but not fed to the media statistics.
            None => self.rtx.contains_key(&ssrc),
        };
        self.state.send_modify(|s| {
            s.rtp_received += 1;
            *s.received_by_ssrc.entry(ssrc).or_default() += 1;
            if !known {
                s.unknown_ssrc += 1;
            }
        });
    }

    fn on_rtcp(&mut self, data: &[u8]) {
        let Some(ctx) = self.srtp_in.as_mut() else {
            return;
        };
        let plain = match ctx.decrypt_rtcp(data) {
            Ok(p) => p,
            Err(_) => {
                self.state.send_modify(|s| s.srtp_errors += 1);
                return;
            }
        };
        let mut requests = 0;
        if let Ok(items) = parse_compound(&plain) {
            for item in items {
                let media_ssrc = match item {
                    RtcpItem::Pli { media_ssrc, .. } | RtcpItem::Fir { media_ssrc, .. } => {
                        media_ssrc
                    }
                    _ => continue,
                };
                for s in &mut self.sources {
                    if let Source::Video(v) = s {
                        if v.ssrc() == media_ssrc {
                            v.request_keyframe();
                            requests += 1;
                        }
                    }
                }
            }
        }
        self.state.send_modify(|s| {
            s.rtcp_received += 1;
            s.keyframe_requests += requests;
        });
    }
}

// ------------------------------------------------------------------------------------------
// Bot: one mediasoup-demo peer
// ------------------------------------------------------------------------------------------

/// How a [`Bot`] joins.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// `ws://host:port` of the node's signaling.
    pub server: String,
    /// Room id.
    pub room: String,
    /// Peer id.
    pub peer_id: String,
    /// Display name sent in `join`.
    pub display_name: String,
    /// Produce Opus audio.
    pub audio: bool,
    /// Produce VP8 video.
    pub video: bool,
    /// Create a receiving transport and consume the room.
    pub consume: bool,
    /// Use the TCP candidates.
    pub tcp: bool,
    /// Seed of ICE ufrags and media randomness.
    pub seed: u64,
}

impl BotOptions {
    /// Audio+video producer and consumer over UDP.
    pub fn new(server: &str, room: &str, peer_id: &str) -> Self {
        Self {
            server: server.to_owned(),
            room: room.to_owned(),
            peer_id: peer_id.to_owned(),
            display_name: format!("bot {peer_id}"),
            audio: true,
            video: true,
            consume: true,
            tcp: false,
            seed: rand::rng().random(),
        }
    }
}

/// What a [`Bot`] reports to its owner.
#[derive(Debug, Clone)]
pub enum BotEvent {
    /// A consumer was accepted and its SSRC routed to statistics.
    NewConsumer(ConsumerStream),
    /// A notification from the node (`newPeer`, `peerClosed`, `consumerClosed`, ...).
    Notification {
        /// Method.
        method: String,
        /// Data.
        data: Value,
    },
    /// The signaling connection closed.
    Closed,
}

/// A producer the bot created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Producer id from the node.
    pub id: String,
    /// Kind.
    pub kind: MediaKind,
    /// SSRC sent.
    pub ssrc: u32,
}

/// One peer: signaling, a sending and/or a receiving transport, its producers and consumers.
/// `newConsumer` requests are answered automatically.
pub struct Bot {
    peer_id: String,
    peers_at_join: Vec<String>,
    signaling: SignalingClient,
    send: Option<Arc<BotTransport>>,
    recv: Option<Arc<BotTransport>>,
    router_caps: RtpCapabilities,
    producers: Vec<ProducerInfo>,
    consumers: Arc<Mutex<HashMap<String, ConsumerStream>>>,
    events: mpsc::Receiver<BotEvent>,
    handler: JoinHandle<()>,
    tcp: bool,
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

fn transport_request(tcp: bool, producing: bool) -> Value {
    json!({"forceTcp": tcp, "producing": producing, "consuming": !producing, "sctpCapabilities": null})
}

impl Bot {
    /// Joins a room as mediasoup-demo does: capabilities, transports, `join`, then `produce`.
    /// Returns once the producers exist; media starts when each transport's DTLS completes.
    pub async fn join(opts: BotOptions) -> Result<Bot, BotError> {
        let (signaling, mut server_rx) =
            SignalingClient::connect(&opts.server, &opts.room, &opts.peer_id).await?;
        let caps = signaling
            .request("getRouterRtpCapabilities", json!({}))
            .await?;
        let router_caps: RtpCapabilities =
            serde_json::from_value(caps).map_err(|e| BotError::Protocol {
                what: "getRouterRtpCapabilities response",
                reason: e.to_string(),
            })?;
        let identity = DtlsIdentity::generate()?;
        let mut seed = opts.seed;
        let mut open = |producing: bool| {
            seed = seed.wrapping_add(1);
            let s = seed;
            let signaling = signaling.clone();
            let identity = identity.clone();
            async move {
                let v = signaling
                    .request(
                        "createWebRtcTransport",
                        transport_request(opts.tcp, producing),
                    )
                    .await?;
                let info = TransportInfo::from_json(&v)?;
                signaling
                    .request(
                        "connectWebRtcTransport",
                        json!({"transportId": info.id, "dtlsParameters": {
                            "role": "client", "fingerprints": identity.fingerprints()}}),
                    )
                    .await?;
                BotTransport::open(&info, opts.tcp, &identity, s).await
            }
        };
        let produce = opts.audio || opts.video;
        let send = if produce {
            Some(Arc::new(open(true).await?))
        } else {
            None
        };
        let recv = if opts.consume {
            Some(Arc::new(open(false).await?))
        } else {
            None
        };

        let consumers = Arc::new(Mutex::new(HashMap::new()));
        let (ev_tx, events) = mpsc::channel(BOT_EVENT_QUEUE);
        let handler = {
            let signaling = signaling.clone();
            let recv = recv.clone();
            let consumers = consumers.clone();
            tokio::spawn(async move {
                while let Some(m) = server_rx.recv().await {
                    let ev = match m {
                        ServerMessage::Request { id, method, data } => {
                            let (result, ev) =
                                answer_request(&method, &data, recv.as_deref(), &consumers).await;
                            let _ = signaling.respond(id, result).await;
                            match ev {
                                Some(ev) => ev,
                                None => continue,
                            }
                        }
                        ServerMessage::Notification { method, data } => {
                            if method == "consumerClosed" {
                                forget_consumer(&data, &consumers);
                            }
                            BotEvent::Notification { method, data }
                        }
                        ServerMessage::Closed => BotEvent::Closed,
                    };
                    // The owner may not read events (load runs): drop rather than block.
                    let _ = ev_tx.try_send(ev);
                }
            })
        };

        let joined = signaling
            .request(
                "join",
                json!({
                    "displayName": opts.display_name,
                    "device": {"flag": "pipemesh-bot", "name": "pipemesh-bot",
                               "version": env!("CARGO_PKG_VERSION")},
                    "rtpCapabilities": bot_rtp_capabilities(&router_caps),
                    "sctpCapabilities": null,
                }),
            )
            .await?;

        let peers_at_join = joined
            .get("peers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut bot = Bot {
            peer_id: opts.peer_id.clone(),
            peers_at_join,
            signaling,
            send,
            recv,
            router_caps,
            producers: Vec::new(),
            consumers,
            events,
            handler,
            tcp: opts.tcp,
        };
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0xc0ffee);
        let cname: String = format!("bot-{}", rng.random::<u32>());
        if opts.audio {
            bot.produce(MediaKind::Audio, rng.random(), &cname).await?;
        }
        if opts.video {
            bot.produce(MediaKind::Video, rng.random(), &cname).await?;
        }
        Ok(bot)
    }

    async fn produce(&mut self, kind: MediaKind, ssrc: u32, cname: &str) -> Result<(), BotError> {
        let send = self
            .send
            .as_ref()
            .ok_or_else(|| BotError::InvalidArgument("no sending transport".into()))?;
        let mid = self.producers.len().to_string();
        let p = producer_rtp_parameters(&self.router_caps, kind, &mid, ssrc, cname)?;
        let v = self
            .signaling
            .request(
                "produce",
                json!({"transportId": send.id(), "kind": kind.as_str(),
                       "rtpParameters": p.rtp_parameters, "appData": {}}),
            )
            .await?;
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| BotError::Protocol {
                what: "produce response",
                reason: "no id".into(),
            })?
            .to_owned();
        let pt = p.rtp_parameters.codecs[0].payload_type; // built with exactly one codec
        let cfg = match kind {
            MediaKind::Audio => {
                let mut c = AudioConfig::new(ssrc);
                c.payload_type = pt;
                c.extensions = p.extensions;
                SourceConfig::Audio(c)
            }
            MediaKind::Video => {
                let mut c = VideoConfig::new(ssrc);
                c.payload_type = pt;
                c.extensions = p.extensions;
                SourceConfig::Video(c)
            }
        };
        send.add_source(cfg).await?;
        self.producers.push(ProducerInfo { id, kind, ssrc });
        Ok(())
    }

    /// This bot's peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Ids of the peers the `join` response listed.
    pub fn peers_at_join(&self) -> &[String] {
        &self.peers_at_join
    }

    /// Whether the bot uses TCP.
    pub fn is_tcp(&self) -> bool {
        self.tcp
    }

    /// The signaling client (for raw requests).
    pub fn signaling(&self) -> &SignalingClient {
        &self.signaling
    }

    /// The router's capabilities.
    pub fn router_capabilities(&self) -> &RtpCapabilities {
        &self.router_caps
    }

    /// The sending transport, if producing.
    pub fn send_transport(&self) -> Option<Arc<BotTransport>> {
        self.send.clone()
    }

    /// The receiving transport, if consuming.
    pub fn recv_transport(&self) -> Option<Arc<BotTransport>> {
        self.recv.clone()
    }

    /// The producer of `kind`, if any.
    pub fn producer(&self, kind: MediaKind) -> Option<&ProducerInfo> {
        self.producers.iter().find(|p| p.kind == kind)
    }

    /// Current consumers by id.
    pub fn consumers(&self) -> Vec<ConsumerStream> {
        self.consumers
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The next event, `None` once the handler stopped.
    pub async fn next_event(&mut self) -> Option<BotEvent> {
        self.events.recv().await
    }

    /// Waits for the first event matching `pred` (earlier ones are discarded).
    pub async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&BotEvent) -> bool,
    ) -> Result<BotEvent, BotError> {
        let fut = async {
            while let Some(ev) = self.events.recv().await {
                if pred(&ev) {
                    return Some(ev);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err(BotError::SignalingClosed),
            Err(_) => Err(BotError::WaitTimeout(what.to_owned())),
        }
    }

    /// Waits for a notification `method` whose data satisfies `pred`.
    pub async fn wait_notification(
        &mut self,
        method: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, BotError> {
        let ev = self
            .wait_event(method, timeout, |e| {
                matches!(e, BotEvent::Notification { method: m, data } if m == method && pred(data))
            })
            .await?;
        match ev {
            BotEvent::Notification { data, .. } => Ok(data),
            _ => Err(BotError::WaitTimeout(method.to_owned())),
        }
    }

    /// Waits until `n` consumers exist (answered `newConsumer` requests).
    pub async fn wait_consumers(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumerStream>, BotError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let c = self.consumers();
            if c.len() >= n {
                return Ok(c);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.wait_event("newConsumer", left, |e| {
                matches!(e, BotEvent::NewConsumer(_))
            })
            .await?;
        }
    }

    async fn producer_request(&self, method: &str, kind: MediaKind) -> Result<Value, BotError> {
        let p = self
            .producer(kind)
            .ok_or_else(|| BotError::InvalidArgument(format!("no {kind} producer")))?;
        self.signaling
            .request(method, json!({"producerId": p.id}))
            .await
    }

    /// `pauseProducer` (the source keeps sending; the node stops forwarding, as with a muted
    /// browser track).
    pub async fn pause_producer(&self, kind: MediaKind) -> Result<(), BotError> {
        self.producer_request("pauseProducer", kind)
            .await
            .map(|_| ())
    }

    /// `resumeProducer`.
    pub async fn resume_producer(&self, kind: MediaKind) -> Result<(), BotError> {
        self.producer_request("resumeProducer", kind)
            .await
            .map(|_| ())
    }

    /// `closeProducer`.
    pub async fn close_producer(&mut self, kind: MediaKind) -> Result<(), BotError> {
        self.producer_request("closeProducer", kind).await?;
        self.producers.retain(|p| p.kind != kind);
        Ok(())
    }

    /// `restartIce` on the sending (or receiving) transport and switches checks to the new
    /// credentials. Returns them.
    pub async fn restart_ice(&self, sending: bool) -> Result<IceParameters, BotError> {
        let t = if sending {
            self.send.as_deref()
        } else {
            self.recv.as_deref()
        }
        .ok_or_else(|| BotError::InvalidArgument("no such transport".into()))?;
        let v = self
            .signaling
            .request("restartIce", json!({"transportId": t.id()}))
            .await?;
        // mediasoup-demo returns the iceParameters object itself.
        let p = v.get("iceParameters").unwrap_or(&v);
        let params: IceParameters =
            serde_json::from_value(p.clone()).map_err(|e| BotError::Protocol {
                what: "restartIce response",
                reason: e.to_string(),
            })?;
        t.restart_ice(params.clone()).await?;
        Ok(params)
    }

    /// Receive statistics of every consumer.
    pub async fn stats(&self) -> Result<Vec<StreamStats>, BotError> {
        match &self.recv {
            Some(r) => r.stats().await,
            None => Ok(Vec::new()),
        }
    }

    /// Closes the signaling connection (the node then closes the peer) and stops the
    /// transports.
    pub async fn close(self) {
        self.signaling.close().await;
    }
}

async fn answer_request(
    method: &str,
    data: &Value,
    recv: Option<&BotTransport>,
    consumers: &Mutex<HashMap<String, ConsumerStream>>,
) -> (Result<Value, (u16, String)>, Option<BotEvent>) {
    if method != "newConsumer" {
        return (Err((405, format!("bot does not handle {method}"))), None);
    }
    let Some(recv) = recv else {
        return (Err((400, "bot does not consume".into())), None);
    };
    let stream = match ConsumerStream::from_request(data) {
        Ok(s) => s,
        Err(e) => return (Err((400, e.to_string())), None),
    };
    if recv.add_receiver(stream.clone()).await.is_err() {
        return (Err((500, "receiving transport closed".into())), None);
    }
    if let Ok(mut c) = consumers.lock() {
        c.insert(stream.id.clone(), stream.clone());
    }
    (Ok(json!({})), Some(BotEvent::NewConsumer(stream)))
}

/// Forgets a closed consumer; its statistics stay with the transport for the final summary.
fn forget_consumer(data: &Value, consumers: &Mutex<HashMap<String, ConsumerStream>>) {
    if let (Some(id), Ok(mut c)) = (
        data.get("consumerId").and_then(Value::as_str),
        consumers.lock(),
    ) {
        c.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::stun::{attr, write_binding_success};

    #[test]
    fn protoo_core_matches_responses_and_types_the_rest() {
        let mut core = ProtooClientCore::<&'static str>::new(7);
        let (id, text) = core.request("join", json!({"a": 1}), "w1").unwrap();
        assert_eq!(id, 7);
        assert!(matches!(Message::parse(&text).unwrap(),
            Message::Request { id: 7, ref method, .. } if method == "join"));
        let (id2, _) = core.request("produce", json!({}), "w2").unwrap();
        assert_eq!(id2, 8);
        assert_eq!(core.pending(), 2);

        match core.handle_text(
            r#"{"response":true,"id":8,"ok":false,"errorCode":404,"errorReason":"nope"}"#,
        ) {
            Incoming::Response {
                method,
                waiter,
                result,
            } => {
                assert_eq!((method.as_str(), waiter), ("produce", "w2"));
                assert_eq!(result, Err((404, "nope".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
        match core.handle_text(r#"{"response":true,"id":7,"ok":true,"data":{"peers":[]}}"#) {
            Incoming::Response { waiter, result, .. } => {
                assert_eq!(waiter, "w1");
                assert_eq!(result, Ok(json!({"peers": []})));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            core.handle_text(r#"{"response":true,"id":7,"ok":true}"#),
            Incoming::Unmatched(7)
        ));
        assert!(matches!(
            core.handle_text(r#"{"request":true,"id":3,"method":"newConsumer","data":{}}"#),
            Incoming::Request { id: 3, .. }
        ));
        assert!(matches!(
            core.handle_text(r#"{"notification":true,"method":"newPeer","data":{}}"#),
            Incoming::Notification { .. }
        ));
        assert!(matches!(core.handle_text("{oops"), Incoming::Invalid(_)));
        assert_eq!(core.pending(), 0);

        let ok = ProtooClientCore::<()>::response(3, Ok(json!({})));
        assert_eq!(
            Message::parse(&ok).unwrap(),
            Message::Success {
                id: 3,
                data: json!({})
            }
        );
        let err = ProtooClientCore::<()>::response(4, Err((405, "x".into())));
        assert!(matches!(
            Message::parse(&err).unwrap(),
            Message::Error {
                id: 4,
                code: 405,
                ..
            }
        ));
    }

    #[test]
    fn protoo_core_bounds_pending_and_cancels() {
        let mut core = ProtooClientCore::<u32>::new(1);
        for i in 0..MAX_PENDING_REQUESTS {
            core.request("m", Value::Null, i as u32).unwrap();
        }
        assert!(matches!(
            core.request("m", Value::Null, 0),
            Err(BotError::TooManyPending)
        ));
        assert_eq!(core.cancel(1), Some(0));
        assert!(core.request("m", Value::Null, 0).is_ok());
        assert_eq!(core.drain().len(), MAX_PENDING_REQUESTS);
    }

    fn params(ufrag: &str, pwd: &str) -> IceParameters {
        IceParameters {
            username_fragment: ufrag.into(),
            password: pwd.into(),
            ice_lite: true,
        }
    }

    /// Answers a check as the node would, with `pwd`.
    fn answer(req: &[u8], pwd: &str) -> Vec<u8> {
        let m = StunMessage::parse(req).unwrap();
        let mut out = Vec::new();
        write_binding_success(
            &mut out,
            m.transaction_id(),
            "127.0.0.1:5000".parse().unwrap(),
            &IntegrityKey::new(pwd.as_bytes()),
        );
        out
    }

    #[test]
    fn ice_checks_until_success_then_refreshes_consent() {
        let t0 = Instant::now();
        let mut ice = IceController::new(t0, &params("srv", "serverpassword1234567890"), 1);
        assert_eq!(ice.state(), IceState::Checking);
        let mut out = Vec::new();
        assert!(ice.poll_transmit(t0, &mut out));
        let m = StunMessage::parse(&out).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(
            m.username(),
            Some(format!("srv:{}", ice.local_ufrag()).as_str())
        );
        assert!(m.use_candidate());
        assert!(m.ice_controlling().is_some());
        assert!(m.verify_integrity(b"serverpassword1234567890"));
        assert!(m.verify_fingerprint());
        // Not due again before the check interval.
        let mut again = Vec::new();
        assert!(!ice.poll_transmit(t0 + ICE_CHECK_INTERVAL / 2, &mut again));
        assert_eq!(ice.poll_timeout(), t0 + ICE_CHECK_INTERVAL);

        // A response signed with the wrong password is ignored.
        let forged = answer(&out, "wrongwrongwrongwrongwrong");
        let r = ice.handle_stun(t0, &StunMessage::parse(&forged).unwrap());
        assert_eq!(r, IceInput::Ignored);
        assert_eq!(ice.state(), IceState::Checking);

        let t1 = t0 + Duration::from_millis(10);
        let good = answer(&out, "serverpassword1234567890");
        assert_eq!(
            ice.handle_stun(t1, &StunMessage::parse(&good).unwrap()),
            IceInput::Success(true)
        );
        assert_eq!(ice.state(), IceState::Connected);
        assert_eq!(ice.last_success(), Some(t1));
        // A duplicate of the same response is no longer pending.
        assert_eq!(
            ice.handle_stun(t1, &StunMessage::parse(&good).unwrap()),
            IceInput::Ignored
        );
        assert_eq!(ice.poll_timeout(), t1 + ICE_CONSENT_INTERVAL);
        assert!(ice.poll_transmit(t1 + ICE_CONSENT_INTERVAL, &mut out));
        let ok = answer(&out, "serverpassword1234567890");
        assert_eq!(
            ice.handle_stun(t1, &StunMessage::parse(&ok).unwrap()),
            IceInput::Success(false)
        );
    }

    #[test]
    fn ice_restart_switches_credentials_and_ignores_old_answers() {
        let t0 = Instant::now();
        let mut ice = IceController::new(t0, &params("old", "oldpassword0123456789012"), 2);
        let mut first = Vec::new();
        assert!(ice.poll_transmit(t0, &mut first));
        ice.restart(t0, &params("new", "newpassword0123456789012"));
        assert_eq!(ice.state(), IceState::Checking);
        // The answer to the pre-restart check no longer counts.
        let stale = answer(&first, "oldpassword0123456789012");
        assert_eq!(
            ice.handle_stun(t0, &StunMessage::parse(&stale).unwrap()),
            IceInput::Ignored
        );
        let mut out = Vec::new();
        assert!(ice.poll_transmit(t0, &mut out));
        let m = StunMessage::parse(&out).unwrap();
        assert!(m.username().unwrap().starts_with("new:"));
        assert!(m.verify_integrity(b"newpassword0123456789012"));
        let ok = answer(&out, "newpassword0123456789012");
        assert_eq!(
            ice.handle_stun(t0, &StunMessage::parse(&ok).unwrap()),
            IceInput::Success(true)
        );
    }

    #[test]
    fn ice_bounds_pending_checks() {
        let mut t = Instant::now();
        let mut ice = IceController::new(t, &params("s", "p0123456789012345678901"), 3);
        let mut first = Vec::new();
        assert!(ice.poll_transmit(t, &mut first));
        for _ in 0..ICE_MAX_PENDING {
            t += ICE_CHECK_INTERVAL;
            let mut o = Vec::new();
            assert!(ice.poll_transmit(t, &mut o));
        }
        assert_eq!(ice.checks_sent(), ICE_MAX_PENDING as u64 + 1);
        // The oldest check was forgotten.
        let late = answer(&first, "p0123456789012345678901");
        assert_eq!(
            ice.handle_stun(t, &StunMessage::parse(&late).unwrap()),
            IceInput::Ignored
        );
        // A request from the node is not a response.
        assert_eq!(
            ice.handle_stun(t, &StunMessage::parse(&first).unwrap()),
            IceInput::Ignored
        );
        let _ = attr::USERNAME;
    }

    fn router_caps() -> RtpCapabilities {
        crate::router::ortc::generate_router_rtp_capabilities(
            &crate::router::ortc::default_media_codecs(),
        )
        .unwrap()
    }

    #[test]
    fn producer_parameters_use_router_payload_types_and_extension_ids() {
        let caps = router_caps();
        let opus_pt = caps
            .codecs
            .iter()
            .find(|c| c.mime_type.eq_ignore_ascii_case("audio/opus"))
            .and_then(|c| c.preferred_payload_type)
            .unwrap();
        let p = producer_rtp_parameters(&caps, MediaKind::Audio, "0", 1234, "cn").unwrap();
        let rp = &p.rtp_parameters;
        assert_eq!(rp.mid.as_deref(), Some("0"));
        assert_eq!(rp.codecs.len(), 1);
        assert_eq!(rp.codecs[0].payload_type, opus_pt);
        assert_eq!(rp.codecs[0].clock_rate, 48000);
        assert_eq!(rp.encodings[0].ssrc, Some(1234));
        assert_eq!(rp.rtcp.cname.as_deref(), Some("cn"));
        let mid = rp
            .header_extensions
            .iter()
            .find(|e| e.uri == uri::MID)
            .unwrap();
        assert_eq!(p.extensions.mid, Some((mid.id, "0".to_owned())));
        crate::router::ortc::validate_rtp_parameters(rp).unwrap();

        let v = producer_rtp_parameters(&caps, MediaKind::Video, "1", 99, "cn").unwrap();
        assert!(v.rtp_parameters.codecs[0]
            .mime_type
            .eq_ignore_ascii_case("video/VP8"));
        assert!(v.extensions.transport_cc.is_some());
        crate::router::ortc::validate_rtp_parameters(&v.rtp_parameters).unwrap();
        // The JSON is what mediasoup-client sends.
        let j = serde_json::to_value(&v.rtp_parameters).unwrap();
        assert_eq!(j["encodings"][0]["ssrc"], 99);
        assert_eq!(j["mid"], "1");

        let empty = RtpCapabilities::default();
        assert!(matches!(
            producer_rtp_parameters(&empty, MediaKind::Video, "1", 1, "c"),
            Err(BotError::MissingCodec(_))
        ));
    }

    #[test]
    fn bot_capabilities_keep_opus_vp8_and_vp8_rtx() {
        let caps = bot_rtp_capabilities(&router_caps());
        let mimes: Vec<String> = caps
            .codecs
            .iter()
            .map(|c| c.mime_type.to_lowercase())
            .collect();
        assert_eq!(mimes, vec!["audio/opus", "video/vp8", "video/rtx"]);
        crate::router::ortc::validate_rtp_capabilities(&caps).unwrap();
    }

    #[test]
    fn consumer_stream_from_new_consumer() {
        let data = json!({
            "peerId": "alice", "producerId": "p1", "id": "c1", "kind": "video",
            "type": "simple", "appData": {}, "producerPaused": false,
            "rtpParameters": {
                "mid": "0",
                "codecs": [
                    {"mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000,
                     "parameters": {}, "rtcpFeedback": []},
                    {"mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
                     "parameters": {"apt": 101}, "rtcpFeedback": []}
                ],
                "headerExtensions": [],
                "encodings": [{"ssrc": 555, "rtx": {"ssrc": 556}}],
                "rtcp": {"cname": "x", "reducedSize": true}
            }
        });
        let s = ConsumerStream::from_request(&data).unwrap();
        assert_eq!(s.id, "c1");
        assert_eq!(s.ssrc, 555);
        assert_eq!(s.rtx_ssrc, Some(556));
        assert_eq!(s.codec, Codec::Vp8);
        assert_eq!(s.kind, MediaKind::Video);
        assert_eq!(s.clock_rate, 90000);
        for bad in [
            json!({}),
            json!({"id": "c", "producerId": "p", "kind": "video",
                   "rtpParameters": {"codecs": [], "encodings": [{"ssrc": 1}]}}),
            json!({"id": "c", "producerId": "p", "kind": "audio",
                   "rtpParameters": {"codecs": [{"mimeType": "audio/opus", "payloadType": 100,
                   "clockRate": 48000}], "encodings": [{}]}}),
        ] {
            assert!(ConsumerStream::from_request(&bad).is_err());
        }
    }

    #[test]
    fn transport_info_and_url() {
        let v = json!({
            "id": "t1",
            "iceParameters": {"usernameFragment": "u", "password": "p", "iceLite": true},
            "iceCandidates": [
                {"foundation": "udpcandidate", "ip": "127.0.0.1", "port": 4000, "priority": 1,
                 "protocol": "udp", "type": "host"},
                {"foundation": "tcpcandidate", "ip": "127.0.0.1", "port": 4001, "priority": 1,
                 "protocol": "tcp", "type": "host", "tcpType": "passive"}
            ],
            "dtlsParameters": {"role": "auto", "fingerprints": [
                {"algorithm": "sha-256", "value": "AA:BB"}]},
            "sctpParameters": null
        });
        let t = TransportInfo::from_json(&v).unwrap();
        assert_eq!(t.candidate(false).unwrap().port(), 4000);
        assert_eq!(t.candidate(true).unwrap().port(), 4001);
        assert!(TransportInfo::from_json(&json!({"id": 1})).is_err());
        assert_eq!(
            signaling_url("ws://h:1/", "r 1", "p&2"),
            "ws://h:1/?roomId=r%201&peerId=p%262"
        );
    }
}
