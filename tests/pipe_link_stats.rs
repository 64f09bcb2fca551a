//! Per-link figures of the admin API (`/api/v1/links`, and the RTT and packet lines of
//! `/metrics`) on two real nodes linked by a pipe, while bots send media across it: both ends
//! see the link up with a loopback RTT, packets rising, bitrate out of the origin and into the
//! far node, and the piped producers on each side; the counts fall back to 0 once nobody
//! consumes. A node without pipes lists no links.
//!
//! Every test is bounded; waits re-read the endpoint until a condition holds.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use pipemesh::router::rtp_parameters::MediaKind;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on an admin listener; the body of the answer.
async fn get(admin: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin reachable");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request sent");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("response read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_owned()
}

/// The entry of `peer` in `/api/v1/links` of the node at `admin`.
async fn link(admin: SocketAddr, peer: &str) -> Value {
    let body = get(admin, "/api/v1/links").await;
    let v: Value = serde_json::from_str(&body).expect("links are JSON");
    v["links"]
        .as_array()
        .expect("links array")
        .iter()
        .find(|l| l["peer"] == peer)
        .unwrap_or_else(|| panic!("no link to {peer}: {v}"))
        .clone()
}

/// Re-reads the link to `peer` until `ok` holds for it (at most [`WAIT`]).
async fn wait_link(
    admin: SocketAddr,
    peer: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let l = link(admin, peer).await;
        if ok(&l) {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "link to {peer}: {what} never held: {l}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn num(l: &Value, k: &str) -> f64 {
    l[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number: {l}"))
}

/// The value of the `/metrics` sample `name` (which may be a float).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_show_rtt_loss_bitrate_and_piped_producers_on_both_ends() {
    bounded(async {
        let pair = linked_pair(PairOptions::default()).await;
        let (a, b) = (pair.a.addrs.admin, pair.b.addrs.admin);

        // Up at once, with an RTT, before any media.
        for (admin, peer) in [(a, "b"), (b, "a")] {
            let l = link(admin, peer).await;
            assert_eq!(l["up"], true, "{l}");
            assert!(l["upSinceMs"].as_u64().is_some_and(|t| t > 0), "{l}");
            let rtt = num(&l, "rttMs");
            assert!(rtt > 0.0 && rtt < 100.0, "loopback RTT: {l}");
        }
        let before = link(a, "b").await;

        let alice = join(publisher(pair.a.bot("links", "alice"), true, true)).await;
        let mut bob = join(subscriber(pair.b.bot("links", "bob"))).await;
        bob.wait_consumers(2, WAIT)
            .await
            .expect("bob consumes alice's audio and video");
        let t = bob.recv_transport().expect("consuming transport");
        let video = consumer_of(&bob, "alice", MediaKind::Video);
        wait_packets(&t, video.ssrc, 0, 50)
            .await
            .expect("video crosses the link");

        // The origin: alice's two producers are piped to b, bits go out.
        let la = wait_link(a, "b", "bitrate out and two piped producers", |l| {
            l["bitrateOutBps"].as_u64().is_some_and(|r| r > 0)
                && l["pipedStreamsOut"].as_u64() == Some(2)
        })
        .await;
        eprintln!("a -> b: {la}");
        assert_eq!(la["up"], true, "{la}");
        assert_eq!(la["pipedStreamsIn"], 0, "{la}");
        assert_eq!(la["shedLayers"], 0, "a loopback link sheds nothing: {la}");
        let rtt = num(&la, "rttMs");
        assert!(rtt > 0.0 && rtt < 100.0, "loopback RTT: {la}");
        assert!(
            num(&la, "sentPackets") > num(&before, "sentPackets"),
            "packets sent rise: {before} then {la}"
        );
        assert!(
            num(&la, "bytesOut") > 0.0 && num(&la, "datagramsOut") > 0.0,
            "{la}"
        );
        let loss = num(&la, "lossPercent");
        assert!((0.0..=100.0).contains(&loss), "{la}");
        assert!(num(&la, "lostPackets") <= num(&la, "sentPackets"), "{la}");
        // A second, later reading: packets still rising while media flows.
        let again = wait_link(a, "b", "sent packets rising", |l| {
            num(l, "sentPackets") > num(&la, "sentPackets")
        })
        .await;
        assert_eq!(again["up"], true, "{again}");

        // The far side: bits come in, alice's producers are piped here.
        let lb = wait_link(b, "a", "bitrate in and two piped producers", |l| {
            l["bitrateInBps"].as_u64().is_some_and(|r| r > 0)
                && l["pipedStreamsIn"].as_u64() == Some(2)
        })
        .await;
        eprintln!("b -> a: {lb}");
        assert_eq!(lb["pipedStreamsOut"], 0, "{lb}");
        let rtt = num(&lb, "rttMs");
        assert!(rtt > 0.0 && rtt < 100.0, "loopback RTT: {lb}");
        assert!(num(&lb, "sentPackets") > 0.0, "acks at least: {lb}");
        assert!(num(&lb, "bytesIn") > 0.0, "{lb}");

        // The same figures in /metrics.
        for (admin, peer) in [(a, "b"), (b, "a")] {
            let text = get(admin, "/metrics").await;
            let rtt = sample(
                &text,
                &format!("pipemesh_pipe_rtt_seconds{{peer=\"{peer}\"}}"),
            );
            assert!(rtt > 0.0 && rtt < 0.1, "loopback RTT {rtt} s");
            let sent = sample(
                &text,
                &format!("pipemesh_pipe_sent_packets_total{{peer=\"{peer}\"}}"),
            );
            let lost = sample(
                &text,
                &format!("pipemesh_pipe_lost_packets_total{{peer=\"{peer}\"}}"),
            );
            assert!(sent > 0.0 && lost <= sent, "sent {sent}, lost {lost}");
            let shed = sample(
                &text,
                &format!("pipemesh_pipe_shed_layers{{peer=\"{peer}\"}}"),
            );
            assert_eq!(shed, 0.0, "a loopback link sheds nothing");
            assert_eq!(sample(&text, "pipemesh_pipe_shed_packets_total"), 0.0);
        }

        // Nobody consumes any more: once the subscription's linger is over, nothing is piped.
        bob.close().await;
        wait_link(a, "b", "no piped producers", |l| l["pipedStreamsOut"] == 0).await;
        wait_link(b, "a", "no piped producers", |l| l["pipedStreamsIn"] == 0).await;

        alice.close().await;
        pair.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_pipes_lists_no_links() {
    bounded(async {
        let node = TestNode::start().await;
        let v: Value = serde_json::from_str(&get(node.addrs.admin, "/api/v1/links").await)
            .expect("links are JSON");
        assert_eq!(v["links"], Value::Array(vec![]), "{v}");
        assert!(v["nodeId"].is_string(), "{v}");
        node.stop().await;
    })
    .await;
}
