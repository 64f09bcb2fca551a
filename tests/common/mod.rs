//! Shared helpers of the bot integration tests: an in-process node on port 0 and bot options
//! pointing at it.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use pipemesh::bot::client::{Bot, BotError, BotOptions, BotTransport, ConsumerStream};
use pipemesh::config::Config;
use pipemesh::node::NodeAddrs;
use pipemesh::router::rtp_parameters::MediaKind;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

/// Upper bound on any one test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on waiting for one event inside a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A node running in this test's runtime.
pub struct TestNode {
    /// Its addresses.
    pub addrs: NodeAddrs,
    stop: broadcast::Sender<()>,
    tasks: JoinSet<()>,
}

impl TestNode {
    /// Starts a node on 127.0.0.1 with every port chosen by the OS.
    pub async fn start() -> TestNode {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let cfg = Config {
            signaling_listen: any,
            rtc_listen: any,
            admin_listen: any,
            announced_address: Some("127.0.0.1".into()),
            ..Config::default()
        };
        let (addrs, stop, tasks) = pipemesh::node::start(cfg).await.expect("node starts");
        TestNode { addrs, stop, tasks }
    }

    /// `ws://` URL of its signaling.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addrs.signaling)
    }

    /// Options for a bot producing audio and video and consuming, over UDP.
    pub fn bot(&self, room: &str, peer: &str) -> BotOptions {
        BotOptions::new(&self.url(), room, peer)
    }

    /// The node's `/metrics` counters, read over HTTP from the admin listener.
    pub async fn metrics(&self) -> std::collections::HashMap<String, u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addrs.admin)
            .await
            .expect("admin reachable");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request sent");
        let mut body = String::new();
        s.read_to_string(&mut body).await.expect("response read");
        body.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((
                    k.strip_prefix("pipemesh_")?.to_owned(),
                    v.trim().parse().ok()?,
                ))
            })
            .collect()
    }

    /// Waits until the counter `name` satisfies `pred` (re-reading `/metrics` until [`WAIT`]).
    pub async fn wait_metric(&self, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.metrics().await.get(name).copied().unwrap_or(0);
            if pred(v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {name} stuck at {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the node and waits for its tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(());
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs `f` with the whole-test deadline.
pub async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its 30 s deadline");
}

/// Joins a bot, panicking with the error.
pub async fn join(opts: BotOptions) -> Bot {
    let peer = opts.peer_id.clone();
    match Bot::join(opts).await {
        Ok(b) => b,
        Err(e) => panic!("bot {peer} failed to join: {e}"),
    }
}

/// A publisher-only bot options.
pub fn publisher(mut o: BotOptions, audio: bool, video: bool) -> BotOptions {
    o.audio = audio;
    o.video = video;
    o.consume = false;
    o
}

/// A consumer-only bot options.
pub fn subscriber(mut o: BotOptions) -> BotOptions {
    o.audio = false;
    o.video = false;
    o.consume = true;
    o
}

/// The consumer of `kind` produced by `peer`.
pub fn consumer_of(bot: &Bot, peer: &str, kind: MediaKind) -> ConsumerStream {
    bot.consumers()
        .into_iter()
        .find(|c| c.peer_id == peer && c.kind == kind)
        .unwrap_or_else(|| panic!("{} has no {kind} consumer of {peer}", bot.peer_id()))
}

/// Waits until `t` has received `n` more RTP packets of `ssrc` than `from`.
pub async fn wait_packets(t: &BotTransport, ssrc: u32, from: u64, n: u64) -> Result<u64, BotError> {
    let s = t
        .wait_for(&format!("{n} packets of ssrc {ssrc}"), WAIT, |s| {
            s.received(ssrc) >= from + n
        })
        .await?;
    Ok(s.received(ssrc))
}

/// Alice and bob both publish Opus+VP8 and consume each other; asserts on received media.
pub async fn exchange_media(tcp: bool) {
    let node = TestNode::start().await;
    let mut a = node.bot("media", "alice");
    a.tcp = tcp;
    let mut b = node.bot("media", "bob");
    b.tcp = tcp;
    let mut alice = join(a).await;
    let mut bob = join(b).await;

    // bob consumes alice's two producers (existing when he joined), alice gets bob's two.
    bob.wait_consumers(2, WAIT)
        .await
        .expect("bob gets two consumers");
    alice
        .wait_consumers(2, WAIT)
        .await
        .expect("alice gets two consumers");

    for (rx, from) in [(&bob, "alice"), (&alice, "bob")] {
        let t = rx.recv_transport().expect("consuming transport");
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let c = consumer_of(rx, from, kind);
            wait_packets(&t, c.ssrc, 0, 50)
                .await
                .unwrap_or_else(|e| panic!("{} receiving {kind} of {from}: {e}", rx.peer_id()));
        }
        let st = t.state();
        assert!(st.ice_connected && st.dtls_connected, "{st:?}");
        assert_eq!(st.srtp_errors, 0, "{st:?}");
    }

    let now = std::time::Instant::now();
    for s in bob.stats().await.expect("stats") {
        let snap = s.stats.snapshot(now);
        assert!(snap.received >= 50, "{snap}");
        assert!(snap.probes > 0, "probes survive forwarding: {snap}");
        assert!(snap.loss_fraction() < 0.05, "loopback loss: {snap}");
        if s.consumer.kind == MediaKind::Video {
            assert!(snap.keyframes >= 1, "first frame is a keyframe: {snap}");
            assert!(snap.frames >= 1, "{snap}");
        }
    }
    let sent = alice.send_transport().expect("sending transport").state();
    assert!(sent.rtp_sent >= 100 && sent.send_errors == 0, "{sent:?}");

    alice.close().await;
    bob.close().await;
    node.stop().await;
}
