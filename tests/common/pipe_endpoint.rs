//! Shared helpers of the pipe endpoint tests (`pipe_link`, `pipe_dynamic`, `pipe_tls`): pipe
//! endpoints started in this test's runtime on loopback, their events awaited and remembered,
//! node identities of a generated CA, and a client that presents a certificate of another CA.
//!
//! Included with `#[path = "common/pipe_endpoint.rs"] mod pipe_endpoint;` so these tests do not
//! pull in the node harness of `common/mod.rs`.
#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pipemesh::pipe::certs::{self, CaBundle, NodeBundle};
use pipemesh::pipe::endpoint::{
    EndpointConfig, EndpointError, PipeEndpoint, PipeEvent, PipeHandle,
};
use pipemesh::pipe::link::LinkConfig;
use pipemesh::pipe::tls::{self, PipeIdentity, TransportTuning};
use pipemesh::pipe::wire::ControlMessage;
use tokio::sync::{mpsc, oneshot};

/// Upper bound on any single test.
pub const TEST_LIMIT: Duration = Duration::from_secs(30);

/// Runs a test body under [`TEST_LIMIT`].
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test exceeded its time limit")
}

/// The identity of `node_id` with a fresh certificate of `ca`.
pub fn identity(ca: &CaBundle, node_id: &str) -> PipeIdentity {
    let node = certs::generate_node_cert(ca, node_id, &[]).expect("node certificate");
    PipeIdentity::from_pem(node_id, &ca.cert_pem, &node.cert_pem, &node.key_pem)
        .expect("node identity")
}

/// Link timing for tests: quick redials, a one-second handshake limit.
pub fn fast_link() -> LinkConfig {
    LinkConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(1),
        ..LinkConfig::default()
    }
}

/// 127.0.0.1, port chosen by the OS.
pub fn any_addr() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

/// An endpoint configuration with [`fast_link`] timing and no unknown nodes accepted.
pub fn config(
    identity: PipeIdentity,
    cluster: &str,
    bind: SocketAddr,
    peers: Vec<(String, SocketAddr)>,
) -> EndpointConfig {
    EndpointConfig {
        bind,
        identity,
        cluster: cluster.to_owned(),
        peers,
        accept_unknown: false,
        tuning: TransportTuning::default(),
        link: fast_link(),
    }
}

/// A running pipe endpoint and every event it has reported so far.
pub struct Node {
    pub handle: PipeHandle,
    pub events: mpsc::Receiver<PipeEvent>,
    /// Every event received so far, in order.
    pub seen: Vec<PipeEvent>,
    /// Received events not yet returned by [`Node::wait`].
    unclaimed: Vec<PipeEvent>,
    stop: Option<oneshot::Sender<()>>,
}

impl Node {
    /// Starts an endpoint that runs until [`Node::shutdown`] (or until dropped).
    pub fn start(cfg: EndpointConfig) -> Result<Node, EndpointError> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (handle, events) = PipeEndpoint::start(cfg, async move {
            let _ = stopped.await;
        })?;
        Ok(Node {
            handle,
            events,
            seen: Vec::new(),
            unclaimed: Vec::new(),
            stop: Some(stop),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Asks the endpoint to stop without waiting for it.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the endpoint and waits until every task has stopped.
    pub async fn shutdown(mut self) {
        self.request_stop();
        self.handle.stopped().await;
    }

    /// The first event matching `pred` not returned yet, waiting for it if need be. Events
    /// that do not match are kept for later waits, so the order of waits on independent
    /// events does not matter.
    pub async fn wait(&mut self, pred: impl Fn(&PipeEvent) -> bool) -> PipeEvent {
        if let Some(i) = self.unclaimed.iter().position(&pred) {
            return self.unclaimed.remove(i);
        }
        loop {
            let ev = self.events.recv().await.expect("event channel open");
            self.seen.push(ev.clone());
            if pred(&ev) {
                return ev;
            }
            self.unclaimed.push(ev);
        }
    }

    /// Every event received so far, including those queued right now (without waiting).
    pub fn drain(&mut self) -> &[PipeEvent] {
        while let Ok(ev) = self.events.try_recv() {
            self.seen.push(ev.clone());
            self.unclaimed.push(ev);
        }
        &self.seen
    }
}

pub fn is_up(ev: &PipeEvent) -> bool {
    matches!(ev, PipeEvent::LinkUp { .. })
}

/// LinkUp of the link to `node_id`.
pub fn up(node_id: &str) -> impl Fn(&PipeEvent) -> bool + '_ {
    move |ev| matches!(ev, PipeEvent::LinkUp { node_id: n } if n == node_id)
}

/// LinkDown of the link to `node_id`.
pub fn down(node_id: &str) -> impl Fn(&PipeEvent) -> bool + '_ {
    move |ev| matches!(ev, PipeEvent::LinkDown { node_id: n } if n == node_id)
}

/// A Ping with `nonce`.
pub fn ping(nonce: u64) -> impl Fn(&PipeEvent) -> bool {
    move |ev| matches!(ev, PipeEvent::Control { msg: ControlMessage::Ping { nonce: n }, .. } if *n == nonce)
}

/// A client configuration built directly with rustls: it trusts the real cluster CA (ca.pem
/// is not secret) and verifies the server by its DNS SAN, but presents `node`'s certificate,
/// which another CA signed. The public API refuses to build such an identity, so the rogue is
/// assembled by hand to reach the server's check of the client.
pub fn rogue_client_config(real_ca: &CaBundle, node: &NodeBundle) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs::parse_pem_cert_chain(real_ca.cert_pem.as_bytes(), "ca").unwrap() {
        roots.add(cert).unwrap();
    }
    let chain = certs::parse_pem_cert_chain(node.cert_pem.as_bytes(), "rogue cert").unwrap();
    let key = certs::parse_pem_key(node.key_pem.as_bytes(), "rogue key").unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}
