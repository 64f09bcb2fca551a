//! WebSocket glue for protoo signaling: accepts `ws://HOST:PORT/?roomId=R&peerId=P[&token=T]`
//! with the `protoo` subprotocol, turns frames into [`WorkerCommand`]s for the worker task, and
//! carries the worker's server-initiated requests and notifications back to the peer. Plain
//! HTTP GETs on the same port serve the demo page from the configured web root.
//!
//! The upgrade request is admitted or refused ([`super::admission`]) before anything is
//! allocated: a refused client gets an HTTP 401 or 403 and the worker never hears of it. An
//! admitted session is held to its message size and request rate ([`super::limits`]) here;
//! the worker holds it to its grants and allocation limits.
//!
//! Protocol decisions live in [`super::protoo`] and in the worker; this file only moves bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::admission::{admit, Admission, AuthMode};
use super::limits::{PeerLimits, TokenBucket};
use super::protoo::{ClientRequest, Message, MAX_MESSAGE_BYTES};
use crate::config::{Config, ConfigError};
use crate::ids::{ConsumerId, PeerId, RoomId};
use crate::metrics::RequestResult;
use crate::worker::WorkerCounters;

/// Identifies one signaling connection (a peer may reconnect on a new session).
pub type SessionId = u64;

/// How long a peer has to answer a server request (`newConsumer`).
const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages queued towards one peer before it is considered stuck and disconnected.
const PEER_QUEUE: usize = 1024;

/// A message the worker wants delivered to a peer.
#[derive(Debug)]
pub enum ToPeer {
    /// A protoo notification.
    Notify {
        /// Method.
        method: &'static str,
        /// Data.
        data: Value,
    },
    /// A protoo request (`newConsumer`); the answer is reported back as
    /// [`WorkerCommand::ConsumerAnswered`].
    NewConsumer {
        /// The consumer offered.
        consumer: ConsumerId,
        /// Request data.
        data: Value,
    },
    /// Close the connection (the peer was replaced by a newer session or the room closed).
    Close,
}

/// What the signaling glue asks of the worker task.
#[derive(Debug)]
pub enum WorkerCommand {
    /// A peer connected.
    Open {
        /// New session.
        session: SessionId,
        /// Room from the URL.
        room: RoomId,
        /// Peer from the URL, with the grants of its token and its limits.
        peer: Admission,
        /// Where the worker sends this peer's messages.
        to_peer: mpsc::Sender<ToPeer>,
    },
    /// A request from the peer; the reply goes to `reply`.
    Request {
        /// Session that sent it.
        session: SessionId,
        /// The typed request.
        request: ClientRequest,
        /// Result data or (errorCode, errorReason).
        reply: oneshot::Sender<Result<Value, (u16, String)>>,
    },
    /// The peer answered a `newConsumer` request (`accepted` false on error or timeout).
    ConsumerAnswered {
        /// Session.
        session: SessionId,
        /// The consumer offered.
        consumer: ConsumerId,
        /// Whether the peer accepted it.
        accepted: bool,
    },
    /// The connection ended.
    Closed {
        /// Session.
        session: SessionId,
    },
}

/// What the signaling server takes from the node configuration.
#[derive(Clone, Debug)]
pub struct SignalingSettings {
    /// Directory served at `/` (the demo page).
    pub web_root: Option<PathBuf>,
    /// Upper bound on concurrent signaling connections.
    pub max_connections: usize,
    /// Tokens, or anonymous loopback clients.
    pub auth: AuthMode,
    /// Limits of every peer.
    pub limits: PeerLimits,
    /// Where refusals and rate-limited requests are counted (exported on `/metrics`).
    pub counters: Arc<WorkerCounters>,
}

impl SignalingSettings {
    /// Settings from the node configuration (reads the token secret).
    pub fn from_config(cfg: &Config, counters: Arc<WorkerCounters>) -> Result<Self, ConfigError> {
        Ok(Self {
            web_root: cfg.web_root.clone(),
            max_connections: cfg.max_signaling_connections,
            auth: match cfg.auth_secret()? {
                Some(secret) => AuthMode::Tokens(secret),
                None => AuthMode::LoopbackOnly,
            },
            limits: cfg.peer_limits(),
            counters,
        })
    }
}

#[derive(Clone)]
struct AppState {
    worker: mpsc::Sender<WorkerCommand>,
    web_root: Option<PathBuf>,
    next_session: Arc<AtomicU64>,
    connections: Arc<Semaphore>,
    auth: Arc<AuthMode>,
    limits: PeerLimits,
    counters: Arc<WorkerCounters>,
}

/// The signaling HTTP service: WebSocket upgrade and demo page on `/`, static files below it.
/// It needs each connection's remote address (anonymous joins are for loopback clients only),
/// hence the connect-info service, which `axum::serve` takes as it takes a router.
pub fn router(
    worker: mpsc::Sender<WorkerCommand>,
    settings: SignalingSettings,
) -> IntoMakeServiceWithConnectInfo<Router, SocketAddr> {
    match &settings.auth {
        AuthMode::Tokens(_) => tracing::info!("signaling: tokens required"),
        AuthMode::LoopbackOnly => tracing::warn!(
            "signaling: anonymous joins allowed from loopback only (no --auth-secret-file)"
        ),
    }
    let state = AppState {
        worker,
        web_root: settings.web_root,
        next_session: Arc::new(AtomicU64::new(1)),
        connections: Arc::new(Semaphore::new(settings.max_connections)),
        auth: Arc::new(settings.auth),
        limits: settings.limits,
        counters: settings.counters,
    };
    Router::new()
        .route("/", get(root))
        .fallback(get(static_file))
        .with_state(state)
        .into_make_service_with_connect_info::<SocketAddr>()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeerQuery {
    room_id: Option<String>,
    peer_id: Option<String>,
    token: Option<String>,
}

/// Room and peer ids: 1-128 characters, no control characters.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c.is_control())
}

async fn root(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(q): Query<PeerQuery>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return static_file(State(state), uri).await;
    };
    let (Some(room), Some(peer)) = (q.room_id, q.peer_id) else {
        return (
            StatusCode::BAD_REQUEST,
            "roomId and peerId query parameters are required",
        )
            .into_response();
    };
    if !valid_id(&room) || !valid_id(&peer) {
        return (
            StatusCode::BAD_REQUEST,
            "roomId and peerId must be 1-128 printable characters",
        )
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let grants = match admit(
        &state.auth,
        remote.ip(),
        &room,
        &peer,
        q.token.as_deref(),
        now,
    ) {
        Ok(g) => g,
        Err(r) => {
            state
                .counters
                .signaling_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%remote, %room, %peer, reason = r.reason, "signaling connection refused");
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
            if status == StatusCode::UNAUTHORIZED {
                return (status, [(header::WWW_AUTHENTICATE, "Bearer")], r.message).into_response();
            }
            return (status, r.message).into_response();
        }
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signaling connections",
        )
            .into_response();
    };
    let session = state.next_session.fetch_add(1, Ordering::Relaxed);
    let worker = state.worker.clone();
    let admission = Admission {
        peer: PeerId::from(peer),
        grants,
        limits: state.limits,
    };
    let counters = state.counters.clone();
    // The hard cap bounds what is buffered; messages between the configured limit and it are
    // read whole, so that the peer is told why it is closed.
    ws.protocols(["protoo"])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            run_session(
                socket,
                worker,
                session,
                RoomId::from(room),
                admission,
                counters,
            )
            .await;
            drop(permit);
        })
}

/// WebSocket close code for a message over the size limit (RFC 6455 "Message Too Big").
const CLOSE_TOO_BIG: u16 = 1009;

async fn run_session(
    socket: WebSocket,
    worker: mpsc::Sender<WorkerCommand>,
    session: SessionId,
    room: RoomId,
    peer: Admission,
    counters: Arc<WorkerCounters>,
) {
    let limits = peer.limits;
    let mut bucket = TokenBucket::new(
        tokio::time::Instant::now().into_std(),
        limits.requests_per_sec,
        limits.request_burst,
    );
    let too_big = |len: Option<usize>| {
        let reason = match len {
            Some(n) => format!(
                "message of {n} bytes exceeds the {}-byte limit",
                limits.max_message_bytes
            ),
            None => format!(
                "message exceeds the {}-byte limit",
                limits.max_message_bytes
            ),
        };
        WsMessage::Close(Some(CloseFrame {
            code: CLOSE_TOO_BIG,
            reason: reason.into(),
        }))
    };
    let (to_peer, mut from_worker) = mpsc::channel(PEER_QUEUE);
    if worker
        .send(WorkerCommand::Open {
            session,
            room,
            peer,
            to_peer,
        })
        .await
        .is_err()
    {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    // Replies and answers produced by spawned request futures come back on this channel, so
    // that a slow worker reply never blocks reading the socket.
    let (out_tx, mut out_rx) = mpsc::channel::<String>(PEER_QUEUE);
    let mut next_request_id: u64 = 1;
    let mut pending: HashMap<u64, (ConsumerId, tokio::time::Instant)> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Binary(b))) => {
                        if b.len() > limits.max_message_bytes {
                            let _ = sink.send(too_big(Some(b.len()))).await;
                            break;
                        }
                        tracing::debug!(session, "binary frame ignored");
                        continue;
                    }
                    Some(Err(e)) => {
                        if is_capacity_error(e) {
                            tracing::info!(session, "signaling message over the hard size cap; closing");
                            let _ = sink.send(too_big(None)).await;
                        }
                        break;
                    }
                    _ => break,
                };
                if text.len() > limits.max_message_bytes {
                    tracing::info!(session, len = text.len(), "signaling message over the size limit; closing");
                    let _ = sink.send(too_big(Some(text.len()))).await;
                    break;
                }
                // Signaling requests are timed from here to their answer being queued.
                let read_at = std::time::Instant::now();
                match Message::parse(text.as_str()) {
                    Ok(Message::Request { id, method, .. }) if !bucket.try_take(tokio::time::Instant::now().into_std()) => {
                        counters.signaling_rate_limited.fetch_add(1, Ordering::Relaxed);
                        let reason = format!(
                            "too many requests: at most {} per second, bursts of {}",
                            limits.requests_per_sec, limits.request_burst
                        );
                        let t = Message::Error { id, code: 429, reason }.to_text();
                        counters.signaling.record(&method, RequestResult::of(Some(429)), read_at.elapsed());
                        if sink.send(WsMessage::Text(t.into())).await.is_err() { break; }
                    }
                    Ok(Message::Request { id, method, data }) => {
                        let reply_text = match ClientRequest::parse(&method, data) {
                            Err(e) => {
                                let code = e.code();
                                counters.signaling.record(&method, RequestResult::of(Some(code)), read_at.elapsed());
                                Some(Message::Error { id, code, reason: e.to_string() }.to_text())
                            }
                            Ok(request) => {
                                let (reply, rx) = oneshot::channel();
                                if worker.send(WorkerCommand::Request { session, request, reply }).await.is_err() {
                                    break;
                                }
                                let out = out_tx.clone();
                                let counters = counters.clone();
                                tokio::spawn(async move {
                                    let (msg, code) = match rx.await {
                                        Ok(Ok(data)) => (Message::Success { id, data }, None),
                                        Ok(Err((code, reason))) => (Message::Error { id, code, reason }, Some(code)),
                                        Err(_) => (Message::Error { id, code: 500, reason: "node shutting down".into() }, Some(500)),
                                    };
                                    let _ = out.send(msg.to_text()).await;
                                    counters.signaling.record(&method, RequestResult::of(code), read_at.elapsed());
                                });
                                None
                            }
                        };
                        if let Some(t) = reply_text {
                            if sink.send(WsMessage::Text(t.into())).await.is_err() { break; }
                        }
                    }
                    Ok(answer @ (Message::Success { .. } | Message::Error { .. })) => {
                        let (id, accepted) = match answer {
                            Message::Success { id, .. } => (id, true),
                            Message::Error { id, .. } => (id, false),
                            _ => continue,
                        };
                        if let Some((consumer, _)) = pending.remove(&id) {
                            let _ = worker.send(WorkerCommand::ConsumerAnswered { session, consumer, accepted }).await;
                        }
                    }
                    Ok(Message::Notification { method, .. }) => {
                        tracing::debug!(session, %method, "client notification ignored");
                    }
                    Err(e) => {
                        // Not a request: there is no id to answer. Count and go on.
                        tracing::debug!(session, error = %e, "malformed signaling frame dropped");
                    }
                }
            }
            out = from_worker.recv() => {
                // The worker dropped this session (its queue overflowed or the node stops).
                let Some(out) = out else { break };
                let text = match out {
                    ToPeer::Notify { method, data } => Message::Notification { method: method.into(), data }.to_text(),
                    ToPeer::NewConsumer { consumer, data } => {
                        let id = next_request_id;
                        next_request_id += 1;
                        pending.insert(id, (consumer, tokio::time::Instant::now() + SERVER_REQUEST_TIMEOUT));
                        Message::Request { id, method: "newConsumer".into(), data }.to_text()
                    }
                    ToPeer::Close => break,
                };
                if sink.send(WsMessage::Text(text.into())).await.is_err() { break; }
            }
            Some(text) = out_rx.recv() => {
                if sink.send(WsMessage::Text(text.into())).await.is_err() { break; }
            }
            _ = sweep.tick() => {
                let now = tokio::time::Instant::now();
                let expired: Vec<u64> = pending.iter().filter(|(_, (_, d))| *d <= now).map(|(id, _)| *id).collect();
                for id in expired {
                    if let Some((consumer, _)) = pending.remove(&id) {
                        let _ = worker.send(WorkerCommand::ConsumerAnswered { session, consumer, accepted: false }).await;
                    }
                }
            }
        }
    }
    let _ = sink.close().await;
    let _ = worker.send(WorkerCommand::Closed { session }).await;
}

/// Whether a read failed because the message exceeded the hard cap.
fn is_capacity_error(e: axum::Error) -> bool {
    e.into_inner()
        .downcast::<tokio_tungstenite::tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

/// Serves a file below the web root; `/` serves `index.html`.
async fn static_file(State(state): State<AppState>, uri: Uri) -> Response {
    let Some(root) = state.web_root.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "pipemesh signaling: connect with WebSocket, subprotocol protoo",
        )
            .into_response();
    };
    let Some(path) = resolve(root, uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(body) => ([(header::CONTENT_TYPE, content_type(&path))], body).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Maps a URL path to a file under `root`, refusing anything that could leave it.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_stay_under_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(
            resolve(root, "/"),
            Some(PathBuf::from("/srv/web/index.html"))
        );
        assert_eq!(
            resolve(root, "/app.js"),
            Some(PathBuf::from("/srv/web/app.js"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
        assert_eq!(
            resolve(root, "//etc/passwd"),
            Some(PathBuf::from("/srv/web/etc/passwd"))
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("room-1"));
        assert!(!valid_id(""));
        assert!(!valid_id("a\nb"));
        assert!(!valid_id(&"x".repeat(129)));
    }
}
