//! protoo over WebSocket, client side: [`ProtooClientCore`] (sans-IO: request ids, matching
//! responses to waiters, typing what the node sends) and [`SignalingClient`], its glue (one
//! reader and one writer task per connection; the core sits behind a mutex never held across
//! an await).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::BotError;
use crate::signaling::protoo::Message;
use crate::timing::BOT_REQUEST_TIMEOUT;

/// Requests awaiting a response on one signaling connection before new ones are refused.
pub const MAX_PENDING_REQUESTS: usize = 256;
/// Messages queued between the signaling tasks and their owner.
const SIGNALING_QUEUE: usize = 1024;

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

/// [`signaling_url`] with `&token=…` when a room token is given.
pub fn signaling_url_with_token(
    server: &str,
    room: &str,
    peer: &str,
    token: Option<&str>,
) -> String {
    let url = signaling_url(server, room, peer);
    match token {
        // JWTs are base64url and dots: nothing to escape.
        Some(t) => format!("{url}&token={t}"),
        None => url,
    }
}

impl SignalingClient {
    /// Connects to `ws://…/?roomId=room&peerId=peer` with the `protoo` subprotocol. Requests
    /// and notifications from the node arrive on the returned receiver.
    pub async fn connect(
        server: &str,
        room: &str,
        peer: &str,
    ) -> Result<(Self, mpsc::Receiver<ServerMessage>), BotError> {
        Self::connect_with_token(server, room, peer, None).await
    }

    /// [`SignalingClient::connect`] with a room token in the URL.
    pub async fn connect_with_token(
        server: &str,
        room: &str,
        peer: &str,
        token: Option<&str>,
    ) -> Result<(Self, mpsc::Receiver<ServerMessage>), BotError> {
        let url = signaling_url_with_token(server, room, peer, token);
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

    /// Sends a request and waits (at most [`BOT_REQUEST_TIMEOUT`]) for its response data.
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
        match tokio::time::timeout(BOT_REQUEST_TIMEOUT, rx).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn signaling_url_escapes_room_and_peer() {
        assert_eq!(
            signaling_url("ws://h:1/", "r 1", "p&2"),
            "ws://h:1/?roomId=r%201&peerId=p%262"
        );
    }
}
