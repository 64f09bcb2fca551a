//! Pipe links over real QUIC on loopback: two nodes link up and exchange control messages and
//! datagrams both ways; a node of another cluster is refused; a restarted node is found again;
//! garbage datagrams are dropped without disturbing the link.
//!
//! Every test is bounded by `pipe_endpoint::TEST_LIMIT`; waits are on events, never on sleeps.

#[path = "common/pipe_endpoint.rs"]
mod pipe_endpoint;

use std::net::SocketAddr;

use bytes::Bytes;
use pipe_endpoint::{any_addr, bounded, config, identity, is_up, ping, Node};
use pipemesh::pipe::certs::{self, CaBundle};
use pipemesh::pipe::endpoint::{EndpointError, PipeEvent};
use pipemesh::pipe::tls::PipeIdentity;
use pipemesh::pipe::wire::{write_datagram, ControlMessage, DatagramKind};

fn start(
    identity: PipeIdentity,
    cluster: &str,
    bind: SocketAddr,
    peers: Vec<(String, SocketAddr)>,
) -> Result<Node, EndpointError> {
    Node::start(config(identity, cluster, bind, peers))
}

/// A ("node-a", the dialer) and B ("node-b") of one CA; B's cluster may differ.
fn pair(b_cluster: &str) -> (Node, Node) {
    let ca = certs::generate_ca("test").expect("ca");
    let b = start(
        identity(&ca, "node-b"),
        b_cluster,
        any_addr(),
        vec![("node-a".into(), any_addr())],
    )
    .expect("start b");
    let a = start(
        identity(&ca, "node-a"),
        "test",
        any_addr(),
        vec![("node-b".into(), b.handle.local_addr())],
    )
    .expect("start a");
    (a, b)
}

#[tokio::test]
async fn nodes_link_and_exchange_control_and_datagrams() {
    bounded(async {
        let (mut a, mut b) = pair("test");
        assert_eq!(
            a.wait(is_up).await,
            PipeEvent::LinkUp {
                node_id: "node-b".into()
            }
        );
        assert_eq!(
            b.wait(is_up).await,
            PipeEvent::LinkUp {
                node_id: "node-a".into()
            }
        );

        a.handle
            .send_control("node-b", ControlMessage::Ping { nonce: 7 })
            .expect("send a->b");
        b.wait(ping(7)).await;
        b.handle
            .send_control("node-a", ControlMessage::Ping { nonce: 8 })
            .expect("send b->a");
        a.wait(ping(8)).await;

        let mut buf = Vec::new();
        write_datagram(DatagramKind::Rtp, 5, b"media", &mut buf).expect("datagram");
        let sent = Bytes::from(buf);
        a.handle
            .send_datagram("node-b", sent.clone())
            .expect("datagram a->b");
        let got = b.wait(|ev| matches!(ev, PipeEvent::Datagram { .. })).await;
        assert_eq!(
            got,
            PipeEvent::Datagram {
                node_id: "node-a".into(),
                data: sent.clone()
            }
        );
        b.handle
            .send_datagram("node-a", sent.clone())
            .expect("datagram b->a");
        a.wait(|ev| matches!(ev, PipeEvent::Datagram { .. })).await;

        let stats = b.handle.stats("node-a").expect("peer stats");
        assert!(stats.up);
        assert_eq!(stats.datagrams_in, 1);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_cluster_is_refused() {
    bounded(async {
        let (mut a, mut b) = pair("other");
        let ev = a
            .wait(|ev| matches!(ev, PipeEvent::Refused { .. } | PipeEvent::LinkUp { .. }))
            .await;
        match ev {
            PipeEvent::Refused { node_id, reason } => {
                assert_eq!(node_id, "node-b");
                assert!(reason.contains("cluster"), "reason: {reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(b.events.try_recv().is_err(), "B reported an event");
        assert!(!b.handle.stats("node-a").expect("peer").up);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn restarted_node_is_found_again() {
    bounded(async {
        let ca = certs::generate_ca("test").expect("ca");
        let (mut a, b) = pair_with(&ca);
        a.wait(is_up).await;
        let b_addr = b.handle.local_addr();
        b.shutdown().await;
        assert_eq!(
            a.wait(|_| true).await,
            PipeEvent::LinkDown {
                node_id: "node-b".into()
            }
        );

        // The old socket is released once the endpoint driver task notices it is unused.
        let mut b = loop {
            match start(
                identity(&ca, "node-b"),
                "test",
                b_addr,
                vec![("node-a".into(), any_addr())],
            ) {
                Ok(b) => break b,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        assert_eq!(
            a.wait(|_| true).await,
            PipeEvent::LinkUp {
                node_id: "node-b".into()
            }
        );
        b.wait(is_up).await;
        a.handle
            .send_control("node-b", ControlMessage::Ping { nonce: 1 })
            .expect("send");
        b.wait(ping(1)).await;
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

fn pair_with(ca: &CaBundle) -> (Node, Node) {
    let b = start(
        identity(ca, "node-b"),
        "test",
        any_addr(),
        vec![("node-a".into(), any_addr())],
    )
    .expect("start b");
    let a = start(
        identity(ca, "node-a"),
        "test",
        any_addr(),
        vec![("node-b".into(), b.handle.local_addr())],
    )
    .expect("start a");
    (a, b)
}

#[tokio::test]
async fn garbage_datagrams_are_dropped() {
    bounded(async {
        let (mut a, mut b) = pair("test");
        a.wait(is_up).await;
        b.wait(is_up).await;
        for garbage in [&b"\xff\xff\xff"[..], b"\x00", b"\x10"] {
            a.handle
                .send_datagram("node-b", Bytes::copy_from_slice(garbage))
                .expect("send garbage");
        }
        a.handle
            .send_control("node-b", ControlMessage::Ping { nonce: 3 })
            .expect("send");
        // Garbage never becomes an event: the first one B reports is the ping.
        let ev = b.events.recv().await.expect("event channel open");
        assert!(
            matches!(
                &ev,
                PipeEvent::Control {
                    msg: ControlMessage::Ping { nonce: 3 },
                    ..
                }
            ),
            "unexpected {ev:?}"
        );
        assert!(b.handle.stats("node-b").is_none());
        assert!(b.handle.stats("node-a").expect("peer").up);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}
