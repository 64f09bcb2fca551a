//! Pipe links opened on demand between nodes that are not static peers, over real QUIC on
//! loopback: a wanted link comes up and carries control messages and datagrams; only the node
//! with the smaller id dials; an unwanted link closes after the idle linger unless wanted again
//! within it; a node that moved is dialed at its new address; unknown nodes are refused unless
//! accepted, and never without a certificate of the cluster CA; shutdown ends dial tasks
//! whatever they are doing.
//!
//! Node ids order as node-0 < node-a < node-b < node-c < node-d. Every test is bounded by
//! `pipe_endpoint::TEST_LIMIT`; waits are on events, never on sleeps.

#[path = "common/pipe_endpoint.rs"]
mod pipe_endpoint;

use std::time::{Duration, Instant};

use bytes::Bytes;
use pipe_endpoint::{
    any_addr, bounded, config, down, identity, ping, rogue_client_config, up, Node,
};
use pipemesh::pipe::certs::{self, CaBundle};
use pipemesh::pipe::endpoint::{PipeEvent, WantError};
use pipemesh::pipe::tls::{self, PipeIdentity, TransportTuning};
use pipemesh::pipe::wire::{write_datagram, ControlMessage, DatagramKind};
use quinn::ConnectionError;

/// Idle linger of unwanted links in these tests.
const LINGER: Duration = Duration::from_millis(300);

/// A node of `ca`'s cluster with no static peers that accepts unknown nodes (unless `accept`
/// is false) and lets unwanted links linger for [`LINGER`].
fn node(ca: &CaBundle, node_id: &str, accept: bool) -> Node {
    let mut cfg = config(identity(ca, node_id), "test", any_addr(), Vec::new());
    cfg.accept_unknown = accept;
    cfg.link.idle_linger = LINGER;
    Node::start(cfg).expect("endpoint starts")
}

fn media() -> Bytes {
    let mut buf = Vec::new();
    write_datagram(DatagramKind::Rtp, 5, b"media", &mut buf).expect("datagram");
    Bytes::from(buf)
}

fn is_datagram(ev: &PipeEvent) -> bool {
    matches!(ev, PipeEvent::Datagram { .. })
}

/// `from` pings `to` (whose id is `to_id`) and waits until the ping arrives.
async fn ping_over(from: &Node, to: &mut Node, to_id: &str, nonce: u64) {
    from.handle
        .send_control(to_id, ControlMessage::Ping { nonce })
        .expect("link up");
    to.wait(ping(nonce)).await;
}

#[tokio::test]
async fn wanted_link_comes_up_and_carries_control_and_datagrams() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let (mut a, mut b) = (node(&ca, "node-a", true), node(&ca, "node-b", true));
        assert!(a.handle.peers().is_empty());
        assert_eq!(
            a.handle.want("node-a", b.addr()),
            Err(WantError::OwnId("node-a".into()))
        );

        a.handle.want("node-b", b.addr()).expect("want");
        a.wait(up("node-b")).await;
        b.wait(up("node-a")).await;
        assert_eq!(a.handle.peers(), ["node-b"]);
        assert_eq!(b.handle.peers(), ["node-a"]);

        ping_over(&a, &mut b, "node-b", 1).await;
        ping_over(&b, &mut a, "node-a", 2).await;
        a.handle.send_datagram("node-b", media()).expect("a->b");
        assert_eq!(
            b.wait(is_datagram).await,
            PipeEvent::Datagram {
                node_id: "node-a".into(),
                data: media()
            }
        );
        b.handle.send_datagram("node-a", media()).expect("b->a");
        a.wait(is_datagram).await;

        let (sa, sb) = (
            a.handle.stats("node-b").expect("slot"),
            b.handle.stats("node-a").expect("slot"),
        );
        assert!(sa.up && sb.up);
        assert_eq!((sa.datagrams_out, sb.datagrams_in), (1, 1));
        assert_eq!(sa.dials, 1, "one dial on loopback");
        assert_eq!(sb.dials, 0, "the accepting side never dials");
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn only_the_smaller_id_dials() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let (mut a, mut b) = (node(&ca, "node-a", true), node(&ca, "node-b", true));
        // The larger id wants the link first: it gets a slot but waits to be dialed. Had it
        // dialed, node-a would refuse it (DuplicateLink) and node-b would report that.
        b.handle.want("node-a", a.addr()).expect("want");
        assert_eq!(b.handle.peers(), ["node-a"]);
        assert!(a.handle.peers().is_empty());

        a.handle.want("node-b", b.addr()).expect("want");
        a.wait(up("node-b")).await;
        b.wait(up("node-a")).await;
        ping_over(&a, &mut b, "node-b", 1).await;
        assert_eq!(b.handle.stats("node-a").expect("slot").dials, 0);
        assert!(
            !b.drain()
                .iter()
                .any(|ev| matches!(ev, PipeEvent::Refused { .. })),
            "node-b dialed: {:?}",
            b.seen
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unwanted_link_closes_after_the_linger() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let (mut a, mut b) = (node(&ca, "node-a", true), node(&ca, "node-b", true));
        a.handle.want("node-b", b.addr()).expect("want");
        a.wait(up("node-b")).await;
        b.wait(up("node-a")).await;

        let unwanted = Instant::now();
        a.handle.unwant("node-b");
        a.wait(down("node-b")).await;
        let lingered = unwanted.elapsed();
        b.wait(down("node-a")).await;
        eprintln!("link closed {lingered:?} after unwant");
        assert!(lingered >= LINGER, "closed after {lingered:?}");
        // The slot and its counters stay; wanting it again dials again.
        assert_eq!(a.handle.peers(), ["node-b"]);
        assert!(!a.handle.stats("node-b").expect("slot").up);
        a.handle.want("node-b", b.addr()).expect("want");
        a.wait(up("node-b")).await;
        b.wait(up("node-a")).await;
        assert_eq!(a.handle.stats("node-b").expect("slot").dials, 2);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wanting_again_within_the_linger_keeps_the_link() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let mut a = node(&ca, "node-a", true);
        let (mut b, mut c) = (node(&ca, "node-b", true), node(&ca, "node-c", true));
        a.handle.want("node-b", b.addr()).expect("want b");
        a.handle.want("node-c", c.addr()).expect("want c");
        b.wait(up("node-a")).await;
        c.wait(up("node-a")).await;
        a.wait(up("node-b")).await;
        a.wait(up("node-c")).await;

        // The accepting side leaves closing to the dialer.
        b.handle.unwant("node-a");
        a.handle.unwant("node-b");
        a.handle.want("node-b", b.addr()).expect("want b again");
        ping_over(&a, &mut b, "node-b", 1).await;
        // node-c is the clock: unwanted after node-b was, its link closes after the linger
        // node-b's would have closed after, had it not been wanted again.
        a.handle.unwant("node-c");
        a.wait(down("node-c")).await;
        c.wait(down("node-a")).await;

        ping_over(&a, &mut b, "node-b", 2).await;
        ping_over(&b, &mut a, "node-a", 3).await;
        assert!(!a.drain().iter().any(down("node-b")), "{:?}", a.seen);
        assert!(!b.drain().iter().any(down("node-a")), "{:?}", b.seen);
        assert_eq!(a.handle.stats("node-b").expect("slot").dials, 1);
        for n in [a, b, c] {
            n.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn moved_node_is_dialed_at_its_new_address() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let (mut a, mut old) = (node(&ca, "node-a", true), node(&ca, "node-b", true));
        a.handle.want("node-b", old.addr()).expect("want");
        a.wait(up("node-b")).await;
        old.wait(up("node-a")).await;
        a.handle.send_datagram("node-b", media()).expect("a->b");
        old.wait(is_datagram).await;

        // node-b comes back on another port (the old one still runs: its link must close).
        let mut new = node(&ca, "node-b", true);
        a.handle
            .want("node-b", new.addr())
            .expect("want at the new address");
        old.wait(down("node-a")).await;
        new.wait(up("node-a")).await;
        a.wait(down("node-b")).await;
        a.wait(up("node-b")).await;
        ping_over(&a, &mut new, "node-b", 1).await;

        let stats = a.handle.stats("node-b").expect("slot");
        assert_eq!(stats.datagrams_out, 1, "counters survive the move");
        assert_eq!(stats.dials, 2);
        for n in [a, old, new] {
            n.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_node_is_refused_without_accept_unknown() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let (mut a, mut b) = (node(&ca, "node-a", true), node(&ca, "node-b", false));
        a.handle.want("node-b", b.addr()).expect("want");
        let ev = a
            .wait(|ev| matches!(ev, PipeEvent::Refused { .. } | PipeEvent::LinkUp { .. }))
            .await;
        match ev {
            PipeEvent::Refused { node_id, reason } => {
                assert_eq!(node_id, "node-b");
                assert!(reason.contains("not a configured peer"), "reason: {reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(b.drain().is_empty(), "node-b reported {:?}", b.seen);
        assert!(b.handle.peers().is_empty());
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// Dials `server` with `client` and waits until the server has closed the connection; the
/// client side of a TLS 1.3 handshake completes before the server judges the client's
/// certificate, so the dial itself may succeed.
async fn assert_closed_by_server(connecting: quinn::Connecting) {
    match connecting.await {
        Err(e) => eprintln!("dial failed: {e}"),
        Ok(conn) => {
            let reason = conn.closed().await;
            eprintln!("closed after the handshake: {reason}");
            assert!(
                !matches!(reason, ConnectionError::LocallyClosed),
                "{reason}"
            );
        }
    }
}

#[tokio::test]
async fn node_without_a_cluster_certificate_is_refused_even_with_accept_unknown() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").expect("ca");
        let mut b = node(&ca, "node-b", true);
        let client = quinn::Endpoint::client(any_addr()).expect("client endpoint");

        // A certificate of another CA, by a client that trusts the cluster CA.
        let rogue_ca = certs::generate_ca("rogue").expect("rogue ca");
        let rogue = certs::generate_node_cert(&rogue_ca, "node-0", &[]).expect("rogue cert");
        let connecting = client
            .connect_with(rogue_client_config(&ca, &rogue), b.addr(), "node-b")
            .expect("dial starts");
        assert_closed_by_server(connecting).await;

        // A self-signed certificate (an insecure node).
        let insecure = PipeIdentity::insecure("node-0").expect("insecure identity");
        let connecting =
            tls::connect(&client, &insecure, "node-b", &tuning, b.addr()).expect("dial starts");
        assert_closed_by_server(connecting).await;

        assert!(b.drain().is_empty(), "node-b reported {:?}", b.seen);
        assert!(b.handle.peers().is_empty());

        // A node of the cluster is accepted by the same endpoint.
        let mut a = node(&ca, "node-a", true);
        a.handle.want("node-b", b.addr()).expect("want");
        b.wait(up("node-a")).await;
        a.wait(up("node-b")).await;
        assert_eq!(b.handle.peers(), ["node-a"]);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_dial_tasks_in_backoff_dialing_and_lingering() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let mut cfg = config(identity(&ca, "node-a"), "test", any_addr(), Vec::new());
        cfg.accept_unknown = true;
        // Long enough that every task below is still where it was put when shutdown comes.
        cfg.link.idle_linger = Duration::from_secs(60);
        cfg.link.refused_backoff = Duration::from_secs(60);
        cfg.link.handshake_timeout = Duration::from_secs(60);
        let mut a = Node::start(cfg).expect("endpoint starts");

        // Refuses node-a permanently: node-a's task backs off.
        let refusing = node(&ca, "node-b", false);
        // A socket that never answers: node-a's task keeps dialing.
        let silent = std::net::UdpSocket::bind(any_addr()).expect("silent socket");
        // Up, then unwanted: node-a's task lingers.
        let mut lingering = node(&ca, "node-d", true);

        a.handle.want("node-b", refusing.addr()).expect("want b");
        let silent_addr = silent.local_addr().expect("bound");
        a.handle.want("node-c", silent_addr).expect("want c");
        a.handle.want("node-d", lingering.addr()).expect("want d");
        a.wait(|ev| matches!(ev, PipeEvent::Refused { .. })).await;
        a.wait(up("node-d")).await;
        lingering.wait(up("node-a")).await;
        a.handle.unwant("node-d");
        assert_eq!(a.handle.peers(), ["node-b", "node-c", "node-d"]);

        let handle = a.handle.clone();
        let started = Instant::now();
        a.shutdown().await;
        eprintln!("shutdown took {:?}", started.elapsed());
        lingering.wait(down("node-a")).await;
        assert_eq!(
            handle.want("node-b", refusing.addr()),
            Err(WantError::Stopped)
        );
        refusing.shutdown().await;
        lingering.shutdown().await;
    })
    .await;
}
