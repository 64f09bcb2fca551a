//! Shared helpers of the bot integration tests: an in-process node on port 0 and bot options
//! pointing at it; two nodes linked by a pipe ([`linked_pair`], [`start_pair`]), optionally
//! through a UDP fault relay ([`relay::Relay`]).
#![allow(dead_code)] // each test file uses a different subset

pub mod etcd;
pub mod process;
pub mod relay;
pub mod tcp_relay;

use std::net::SocketAddr;
use std::time::Duration;

use pipemesh::bot::client::{Bot, BotError, BotOptions, BotTransport, ConsumerStream};
use pipemesh::config::Config;
use pipemesh::node::{NodeAddrs, NodeError};
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
        Self::start_with(|_| {}).await
    }

    /// Starts a node on 127.0.0.1 with every port chosen by the OS, after `f` adjusted the
    /// configuration.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestNode {
        Self::try_start_with(f).await.expect("node starts")
    }

    /// [`TestNode::start_with`], returning the error of `node::start`.
    pub async fn try_start_with(f: impl FnOnce(&mut Config)) -> Result<TestNode, NodeError> {
        init_tracing();
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let mut cfg = Config {
            signaling_listen: any,
            rtc_listen: any,
            admin_listen: any,
            announced_address: Some("127.0.0.1".into()),
            ..Config::default()
        };
        f(&mut cfg);
        let (addrs, stop, tasks) = pipemesh::node::start(cfg).await?;
        Ok(TestNode { addrs, stop, tasks })
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
        parse_metrics(&body)
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

/// The `pipemesh_*` counters of a `/metrics` text (or HTTP response), without the prefix.
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((
                k.strip_prefix("pipemesh_")?.to_owned(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// Installs the test log subscriber once (`RUST_LOG`, default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The `/metrics` key of a per-link counter, as [`TestNode::metrics`] returns it:
/// `link_metric("pipe_link_up", "b")` is `pipe_link_up{peer="b"}`.
pub fn link_metric(name: &str, peer: &str) -> String {
    format!("{name}{{peer=\"{peer}\"}}")
}

/// `N` free UDP ports on 127.0.0.1 (bound together, then released), for pipe listeners that
/// must be known before the nodes start.
pub fn free_udp_ports<const N: usize>() -> [SocketAddr; N] {
    let sockets: Vec<std::net::UdpSocket> = (0..N)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port"))
        .collect();
    std::array::from_fn(|i| sockets[i].local_addr().expect("bound socket"))
}

/// How [`linked_pair`] builds its two nodes.
#[derive(Clone, Copy, Debug)]
pub struct PairOptions {
    /// Put a [`relay::Relay`] on the path from node a (the dialer) to node b.
    pub relay: bool,
    /// `pipe_grace_secs` of both nodes.
    pub grace_secs: u64,
}

impl Default for PairOptions {
    fn default() -> Self {
        Self {
            relay: false,
            grace_secs: 10,
        }
    }
}

/// Nodes "a" and "b" linked by a pipe ("a" dials, "b" accepts), optionally through a relay.
pub struct NodePair {
    /// Node "a", the dialer.
    pub a: TestNode,
    /// Node "b", which accepts.
    pub b: TestNode,
    /// The relay on a's path to b, if asked for.
    pub relay: Option<relay::Relay>,
}

impl NodePair {
    /// The relay (panics when the pair has none).
    pub fn relay(&self) -> &relay::Relay {
        self.relay.as_ref().expect("pair built with a relay")
    }

    /// `pipe_link_up` of a (towards "b") and of b (towards "a").
    pub async fn link_up(&self) -> (u64, u64) {
        let (ma, mb) = tokio::join!(self.a.metrics(), self.b.metrics());
        let up = |m: &std::collections::HashMap<String, u64>, peer| {
            m.get(&link_metric("pipe_link_up", peer))
                .copied()
                .unwrap_or(0)
        };
        (up(&ma, "b"), up(&mb, "a"))
    }

    /// Waits until both ends report the link up (`pipe_link_up` 1) or down (0).
    pub async fn wait_link(&self, up: bool, timeout: Duration) {
        let want = u64::from(up);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.link_up().await;
            if now == (want, want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pipe_link_up (a->b, b->a) stuck at {now:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops both nodes (and the relay).
    pub async fn stop(self) {
        tokio::join!(self.a.stop(), self.b.stop());
    }
}

/// Starts node "a" and node "b" with pipes between them (each lists the other as a static
/// peer; a's entry for b points at the relay when `relay` is set), `fa` and `fb` adjusting
/// their configurations last (security settings in particular: none are set here). Does not
/// wait for the link. Pipe ports are picked free before the start; a start that fails (a port
/// taken meanwhile) is retried with new ports.
pub async fn start_pair(
    relay: bool,
    fa: impl Fn(&mut Config),
    fb: impl Fn(&mut Config),
) -> NodePair {
    let (a_id, b_id) = ("a", "b");
    let mut last_error = None;
    for _attempt in 0..3 {
        let [pa, pb] = free_udp_ports::<2>();
        let relay = if relay {
            Some(relay::Relay::start(pb).await.expect("relay starts"))
        } else {
            None
        };
        let b_target = relay.as_ref().map_or(pb, |r| r.addr());
        let b = TestNode::try_start_with(|c| {
            c.node_id = b_id.into();
            c.pipe_listen = Some(pb);
            c.static_peers = vec![format!("{a_id}={pa}")];
            fb(c);
        })
        .await;
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let a = TestNode::try_start_with(|c| {
            c.node_id = a_id.into();
            c.pipe_listen = Some(pa);
            c.static_peers = vec![format!("{b_id}={b_target}")];
            fa(c);
        })
        .await;
        match a {
            Ok(a) => return NodePair { a, b, relay },
            Err(e) => {
                last_error = Some(e);
                b.stop().await;
            }
        }
    }
    panic!("linked nodes do not start: {last_error:?}");
}

/// Nodes "a" and "b" with insecure pipes, `opts.grace_secs`, a relay if asked, once both
/// report the link up.
pub async fn linked_pair(opts: PairOptions) -> NodePair {
    let cfg = |c: &mut Config| {
        c.insecure_pipes = true;
        c.pipe_grace_secs = opts.grace_secs;
    };
    let pair = start_pair(opts.relay, cfg, cfg).await;
    pair.wait_link(true, WAIT).await;
    pair
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
