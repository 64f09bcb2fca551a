//! WebSocket glue for protoo signaling: accepts `ws://HOST:PORT/?roomId=R&peerId=P` with the
//! `protoo` subprotocol, turns frames into [`WorkerCommand`]s for the worker task, and carries
//! the worker's server-initiated requests and notifications back to the peer. Plain HTTP GETs
//! on the same port serve the demo page from the configured web root.
//!
//! Protocol decisions live in [`super::protoo`] and in the worker; this file only moves bytes.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::protoo::{ClientRequest, Message, MAX_MESSAGE_BYTES};
use crate::ids::{ConsumerId, PeerId, RoomId};

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
        /// Peer from the URL.
        peer: PeerId,
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

#[derive(Clone)]
struct AppState {
    worker: mpsc::Sender<WorkerCommand>,
    web_root: Option<PathBuf>,
    next_session: Arc<AtomicU64>,
    connections: Arc<Semaphore>,
}

/// The signaling HTTP router: WebSocket upgrade and demo page on `/`, static files below it.
pub fn router(
    worker: mpsc::Sender<WorkerCommand>,
    web_root: Option<PathBuf>,
    max_connections: usize,
) -> Router {
    let state = AppState {
        worker,
        web_root,
        next_session: Arc::new(AtomicU64::new(1)),
        connections: Arc::new(Semaphore::new(max_connections)),
    };
    Router::new()
        .route("/", get(root))
        .fallback(get(static_file))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeerQuery {
    room_id: Option<String>,
    peer_id: Option<String>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c.is_control())
}

async fn root(
    State(state): State<AppState>,
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
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signaling connections",
        )
            .into_response();
    };
    let session = state.next_session.fetch_add(1, Ordering::Relaxed);
    let worker = state.worker.clone();
    ws.protocols(["protoo"])
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            run_session(
                socket,
                worker,
                session,
                RoomId::from(room),
                PeerId::from(peer),
            )
            .await;
            drop(permit);
        })
}

async fn run_session(
    socket: WebSocket,
    worker: mpsc::Sender<WorkerCommand>,
    session: SessionId,
    room: RoomId,
    peer: PeerId,
) {
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
                    Some(Ok(WsMessage::Binary(_))) => {
                        tracing::debug!(session, "binary frame ignored");
                        continue;
                    }
                    _ => break,
                };
                match Message::parse(text.as_str()) {
                    Ok(Message::Request { id, method, data }) => {
                        let reply_text = match ClientRequest::parse(&method, data) {
                            Err(e) => Some(Message::Error { id, code: e.code(), reason: e.to_string() }.to_text()),
                            Ok(request) => {
                                let (reply, rx) = oneshot::channel();
                                if worker.send(WorkerCommand::Request { session, request, reply }).await.is_err() {
                                    break;
                                }
                                let out = out_tx.clone();
                                tokio::spawn(async move {
                                    let msg = match rx.await {
                                        Ok(Ok(data)) => Message::Success { id, data },
                                        Ok(Err((code, reason))) => Message::Error { id, code, reason },
                                        Err(_) => Message::Error { id, code: 500, reason: "node shutting down".into() },
                                    };
                                    let _ = out.send(msg.to_text()).await;
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
