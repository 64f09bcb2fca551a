//! Two nodes linked by a pipe, end to end with bots: rooms span the link (peers on either
//! node see each other), one copy of each stream crosses the link however many consumers the
//! far node has, producer pause/resume/close reach remote consumers, an unused subscription is
//! dropped after its linger, a short cut of the link is survived and a long one closes remote
//! consumers after the grace period, nodes with certificates of another CA (or of another node)
//! never link, and garbage sent to a pipe port does not disturb an up link. Also the UDP fault
//! relay of `tests/common/relay.rs` on its own.
//!
//! Every test is bounded; waits are on bot events, transport states and `/metrics`, and bare
//! sleeps only measure a rate window, observe that something does NOT happen, or are the
//! length of a relay cut (the input of the test).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::relay::{Relay, RelayStats};
use common::*;
use futures_util::future::join_all;
use pipemesh::bot::client::{Bot, BotEvent};
use pipemesh::config::Config;
use pipemesh::pipe::certs;
use pipemesh::router::rtp_parameters::MediaKind;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use tokio::net::UdpSocket;

/// QUIC idle timeout of pipes (see `pipe::tls::TransportTuning`): a cut shorter than this may
/// leave the link up, a longer one takes it down.
const PIPE_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an unused subscription lingers before the origin is told to stop.
const SUBSCRIPTION_LINGER: Duration = Duration::from_secs(2);

/// Notifications (method, data) queued on `bot` right now, without waiting for more.
async fn drain_notifications(bot: &mut Bot) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(5), bot.next_event()).await
    {
        if let BotEvent::Notification { method, data } = ev {
            out.push((method, data));
        }
    }
    out
}

/// Notifications among `evs` with `method` about consumer `id`.
fn count_about(evs: &[(String, Value)], method: &str, id: &str) -> usize {
    evs.iter()
        .filter(|(m, d)| m == method && d["consumerId"] == id)
        .count()
}

/// Polls `name` on `node` until it has not changed for `still_for`; panics past `within`.
/// Returns its final value and when (since the call) it last changed.
async fn wait_still(
    node: &TestNode,
    name: &str,
    still_for: Duration,
    within: Duration,
) -> (u64, Duration) {
    let start = Instant::now();
    let mut last = node.metrics().await.get(name).copied().unwrap_or(0);
    let mut changed = Duration::ZERO;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = node.metrics().await.get(name).copied().unwrap_or(0);
        if v != last {
            last = v;
            changed = start.elapsed();
        }
        if start.elapsed() - changed >= still_for {
            return (last, changed);
        }
        assert!(
            start.elapsed() < within,
            "{name} still changing after {within:?} (now {v})"
        );
    }
}

/// The counter `k` of a `/metrics` reading.
fn get(m: &HashMap<String, u64>, k: &str) -> u64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("/metrics has no {k}: {m:?}"))
}

/// The difference `after[k] - before[k]` (0 when absent).
fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, k: &str) -> u64 {
    let get = |m: &HashMap<String, u64>| m.get(k).copied().unwrap_or(0);
    get(after).saturating_sub(get(before))
}

// ---------------------------------------------------------------------------------------------
// The relay on its own.

/// An upstream that echoes every datagram back to its sender.
async fn echo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

async fn round_trip(client: &UdpSocket, to: std::net::SocketAddr, msg: &[u8]) -> Duration {
    let t = Instant::now();
    client.send_to(msg, to).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
        .await
        .expect("echo through the relay")
        .unwrap();
    assert_eq!(from, to, "replies come from the relay's address");
    assert_eq!(&buf[..n], msg);
    t.elapsed()
}

#[tokio::test]
async fn relay_forwards_cuts_heals_and_delays() {
    bounded(async {
        let (upstream, echo) = echo_server().await;
        let relay = Relay::start(upstream).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        round_trip(&client, relay.addr(), b"hello").await;
        round_trip(&client, relay.addr(), b"again!").await;
        assert_eq!(relay.client(), Some(client.local_addr().unwrap()));
        let s = relay.stats();
        assert_eq!((s.to_upstream.forwarded, s.to_client.forwarded), (2, 2));
        assert_eq!(
            (s.to_upstream.forwarded_bytes, s.to_client.forwarded_bytes),
            (11, 11)
        );
        assert_eq!(s.dropped(), 0);

        // A second sender is not the client: dropped and counted as foreign.
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        other.send_to(b"intruder", relay.addr()).await.unwrap();
        while relay.stats().foreign == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(relay.stats().to_upstream.forwarded, 2);

        // Cut: the datagram is dropped (counted) and no reply comes.
        relay.cut();
        client.send_to(b"lost", relay.addr()).await.unwrap();
        while relay.stats().to_upstream.dropped == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf))
                .await
                .is_err(),
            "nothing crosses a cut relay"
        );
        let s = relay.stats();
        assert_eq!((s.to_upstream.dropped, s.to_upstream.dropped_bytes), (1, 4));
        assert_eq!(s.to_upstream.forwarded, 2);

        // Upstream -> client is cut as well: an upstream reply to a datagram sent before the
        // cut is dropped.
        relay.heal();
        relay.set_delay(Duration::from_millis(150));
        client.send_to(b"slow", relay.addr()).await.unwrap();
        while relay.stats().to_upstream.forwarded < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.cut();
        while relay.stats().to_client.dropped == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf))
                .await
                .is_err(),
            "the reply was dropped by the cut"
        );

        // Healed, with a fixed one-way delay of 100 ms: a round trip takes at least 200 ms.
        relay.heal();
        relay.set_delay(Duration::from_millis(100));
        let rtt = round_trip(&client, relay.addr(), b"delayed").await;
        eprintln!("round trip through a 100 ms relay: {rtt:?}");
        assert!(rtt >= Duration::from_millis(200), "{rtt:?}");
        relay.set_delay(Duration::ZERO);
        let rtt = round_trip(&client, relay.addr(), b"fast").await;
        assert!(rtt < Duration::from_millis(100), "{rtt:?}");
        let s = relay.stats();
        assert_eq!((s.to_upstream.forwarded, s.to_client.forwarded), (5, 4));
        assert_eq!(s.dropped(), 2);

        // Dropping the relay stops its tasks, which releases its port.
        let addr = relay.addr();
        drop(relay);
        let deadline = Instant::now() + WAIT;
        while UdpSocket::bind(addr).await.is_err() {
            assert!(Instant::now() < deadline, "a dropped relay keeps its port");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        echo.abort();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Two nodes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_both_nodes_see_each_other() {
    bounded(async {
        let pair = linked_pair(PairOptions::default()).await;
        let mut bob = join(subscriber(pair.b.bot("vis", "bob"))).await;
        let mut alice = join(subscriber(pair.a.bot("vis", "alice"))).await;

        // bob (on b) is told about alice (on a).
        let p = bob
            .wait_notification("newPeer", WAIT, |d| d["id"] == "alice")
            .await
            .expect("bob gets newPeer for alice across the pipe");
        assert_eq!(p["displayName"], "bot alice");
        // alice saw bob in her join response, or is told through newPeer.
        if !alice.peers_at_join().contains(&"bob".to_owned()) {
            alice
                .wait_notification("newPeer", WAIT, |d| d["id"] == "bob")
                .await
                .expect("alice learns of bob across the pipe");
        }

        // Once b knows alice, a newcomer on b lists both.
        let mut carol = join(subscriber(pair.b.bot("vis", "carol"))).await;
        let mut at_join = carol.peers_at_join().to_vec();
        at_join.sort();
        assert_eq!(at_join, ["alice", "bob"]);
        // And a newcomer on a lists the remote bob (a knows bob: alice was told).
        let mut dave = join(subscriber(pair.a.bot("vis", "dave"))).await;
        assert!(
            dave.peers_at_join().iter().any(|p| p == "bob")
                && dave.peers_at_join().iter().any(|p| p == "alice"),
            "{:?}",
            dave.peers_at_join()
        );

        // b learns of dave too.
        bob.wait_notification("newPeer", WAIT, |d| d["id"] == "dave")
            .await
            .expect("bob gets newPeer for dave across the pipe");

        // alice leaves: both peers on b are told.
        alice.close().await;
        bob.wait_notification("peerClosed", WAIT, |d| d["peerId"] == "alice")
            .await
            .expect("peerClosed for alice reaches bob on b");
        carol
            .wait_notification("peerClosed", WAIT, |d| d["peerId"] == "alice")
            .await
            .expect("peerClosed for alice reaches carol on b");
        // A peer of another room on b sees none of this.
        let other = join(subscriber(pair.b.bot("vis-other", "eve"))).await;
        assert!(
            other.peers_at_join().is_empty(),
            "{:?}",
            other.peers_at_join()
        );

        // bob leaves: dave on a is told.
        bob.close().await;
        dave.wait_notification("peerClosed", WAIT, |d| d["peerId"] == "bob")
            .await
            .expect("peerClosed for bob reaches dave on a");
        let frank = join(subscriber(pair.b.bot("vis", "frank"))).await;
        let mut at_join = frank.peers_at_join().to_vec();
        at_join.sort();
        assert_eq!(at_join, ["carol", "dave"], "alice and bob are gone");

        for b in [carol, dave, other, frank] {
            b.close().await;
        }
        pair.stop().await;
    })
    .await;
}

/// Consumers on b of alice's producers on a.
const FAN_OUT: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_copy_crosses_the_link_for_many_consumers() {
    bounded(async {
        let pair = linked_pair(PairOptions::default()).await;
        let alice = join(publisher(pair.a.bot("fan", "alice"), true, true)).await;
        let mut subs: Vec<Bot> = join_all(
            (0..FAN_OUT).map(|i| join(subscriber(pair.b.bot("fan", &format!("s{i:02}"))))),
        )
        .await;
        for r in join_all(subs.iter_mut().map(|s| s.wait_consumers(2, WAIT))).await {
            r.expect("every subscriber on b consumes alice's audio and video");
        }
        let started = Instant::now();
        let waits = subs.iter().flat_map(|s| {
            let t = s.recv_transport().expect("consuming transport");
            [MediaKind::Audio, MediaKind::Video].map(|kind| {
                let c = consumer_of(s, "alice", kind);
                let (t, peer) = (t.clone(), s.peer_id().to_owned());
                async move {
                    wait_packets(&t, c.ssrc, 0, 50)
                        .await
                        .unwrap_or_else(|e| panic!("{peer} receiving {kind} of alice: {e}"));
                }
            })
        });
        join_all(waits).await;
        eprintln!(
            "{FAN_OUT} consumers on b got 50 audio and 50 video packets after {:?}",
            started.elapsed()
        );

        // Over a window, a sends about one copy of what alice sends into the pipe, not one per
        // consumer; b receives that one copy and fans it out.
        let (a0, b0) = tokio::join!(pair.a.metrics(), pair.b.metrics());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (a1, b1) = tokio::join!(pair.a.metrics(), pair.b.metrics());
        let produced = delta(&a0, &a1, "rtp_received_total");
        let piped = delta(&a0, &a1, "pipe_rtp_sent_total");
        let datagrams = delta(&a0, &a1, &link_metric("pipe_datagrams_out_total", "b"));
        let bytes = delta(&a0, &a1, &link_metric("pipe_bytes_out_total", "b"));
        let received = delta(&b0, &b1, "pipe_rtp_received_total");
        let datagrams_in = delta(&b0, &b1, &link_metric("pipe_datagrams_in_total", "a"));
        let fanned = delta(&b0, &b1, "rtp_sent_total");
        let dropped_a = delta(&a0, &a1, &link_metric("pipe_dropped_datagrams_total", "b"));
        let dropped_b = delta(&b0, &b1, &link_metric("pipe_dropped_datagrams_total", "a"));
        eprintln!(
            "2 s window: alice -> a {produced} RTP; a -> pipe {piped} RTP, {datagrams} \
             datagrams, {bytes} bytes, {dropped_a} dropped; b <- pipe {received} RTP, \
             {datagrams_in} datagrams, {dropped_b} dropped; b -> {FAN_OUT} consumers {fanned} RTP"
        );
        assert!(produced >= 100, "alice sends audio and video: {produced}");
        assert!(
            piped * 2 >= produced,
            "a pipes alice's streams: {piped} of {produced}"
        );
        assert!(
            piped * 2 <= produced * 3,
            "one copy crosses the link: {piped} RTP piped for {produced} produced"
        );
        assert!(
            datagrams * 2 <= produced * 3,
            "one copy crosses the link: {datagrams} datagrams for {produced} RTP produced"
        );
        assert!(
            fanned >= received * (FAN_OUT as u64) / 2,
            "b fans the copy out to every consumer: {fanned} sent for {received} received"
        );
        assert!(
            bytes < produced * 1_500 * 3 / 2,
            "one copy's worth of bytes: {bytes}"
        );
        // b gets that copy (it may lag behind a on a loaded machine: wait for it to catch up
        // with what a had sent by the end of the window).
        let sent_out = get(&a1, &link_metric("pipe_datagrams_out_total", "b"));
        let sent_rtp = get(&a1, "pipe_rtp_sent_total");
        pair.b
            .wait_metric(&link_metric("pipe_datagrams_in_total", "a"), |n| {
                n * 100 >= sent_out * 98
            })
            .await;
        pair.b
            .wait_metric("pipe_rtp_received_total", |n| n * 100 >= sent_rtp * 98)
            .await;

        // Every consumer keeps receiving clean media.
        let now = Instant::now();
        for s in &subs {
            for st in s.stats().await.expect("stats") {
                let snap = st.stats.snapshot(now);
                assert!(snap.received >= 50, "{}: {snap}", s.peer_id());
                assert!(snap.loss_fraction() < 0.05, "{}: {snap}", s.peer_id());
            }
        }

        join_all(subs.into_iter().map(Bot::close)).await;
        alice.close().await;
        pair.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_pause_resume_close_reach_remote_consumers_and_unused_copies_stop() {
    bounded(async {
        let pair = linked_pair(PairOptions::default()).await;
        let mut alice = join(publisher(pair.a.bot("prc", "alice"), true, true)).await;
        let mut bob = join(subscriber(pair.b.bot("prc", "bob"))).await;
        bob.wait_consumers(2, WAIT)
            .await
            .expect("bob consumes alice's audio and video");
        let audio = consumer_of(&bob, "alice", MediaKind::Audio);
        let video = consumer_of(&bob, "alice", MediaKind::Video);
        let rx = bob.recv_transport().expect("consuming transport");
        let tx = alice.send_transport().expect("sending transport");
        wait_packets(&rx, audio.ssrc, 0, 20)
            .await
            .expect("audio flows");

        // Pause on a: bob on b is told and audio stops although alice keeps sending.
        alice
            .pause_producer(MediaKind::Audio)
            .await
            .expect("pauseProducer");
        bob.wait_notification("consumerPaused", WAIT, |d| {
            d["consumerId"] == audio.id.as_str()
        })
        .await
        .expect("consumerPaused crosses the pipe");
        let at_pause = rx.state().received(audio.ssrc);
        let sent = tx.state().rtp_sent;
        // About 25 audio packets' worth of time (alice sends audio and video).
        tx.wait_for("alice keeps sending", WAIT, |s| s.rtp_sent >= sent + 50)
            .await
            .expect("source keeps sending while paused");
        let while_paused = rx.state().received(audio.ssrc);
        assert!(
            while_paused <= at_pause + 5,
            "forwarded while paused: {at_pause} -> {while_paused}"
        );

        // Resume: told, and audio flows again.
        alice
            .resume_producer(MediaKind::Audio)
            .await
            .expect("resumeProducer");
        bob.wait_notification("consumerResumed", WAIT, |d| {
            d["consumerId"] == audio.id.as_str()
        })
        .await
        .expect("consumerResumed crosses the pipe");
        wait_packets(&rx, audio.ssrc, while_paused, 20)
            .await
            .expect("audio flows again");

        // Close: bob's consumer is closed.
        alice
            .close_producer(MediaKind::Audio)
            .await
            .expect("closeProducer");
        bob.wait_notification("consumerClosed", WAIT, |d| {
            d["consumerId"] == audio.id.as_str()
        })
        .await
        .expect("consumerClosed crosses the pipe");
        assert!(bob.consumers().iter().all(|c| c.id != audio.id));

        // Video still flows through the pipe, then bob leaves: within the linger (plus a
        // little) a stops sending into the pipe.
        let v = rx.state().received(video.ssrc);
        wait_packets(&rx, video.ssrc, v, 20)
            .await
            .expect("video still flows");
        let piped = get(&pair.a.metrics().await, "pipe_rtp_sent_total");
        pair.a
            .wait_metric("pipe_rtp_sent_total", |n| n > piped)
            .await;
        bob.close().await;
        let (total, last_change) = wait_still(
            &pair.a,
            "pipe_rtp_sent_total",
            Duration::from_millis(1500),
            SUBSCRIPTION_LINGER + Duration::from_secs(5),
        )
        .await;
        eprintln!("a stopped piping {last_change:?} after bob left ({total} RTP piped)");
        assert!(
            last_change <= SUBSCRIPTION_LINGER + Duration::from_secs(2),
            "a kept piping for {last_change:?} after the last remote consumer left"
        );
        // alice still sends: only the copy stopped. The link stays up.
        let produced = get(&pair.a.metrics().await, "rtp_received_total");
        pair.a
            .wait_metric("rtp_received_total", |n| n > produced + 10)
            .await;
        assert_eq!(get(&pair.a.metrics().await, "pipe_rtp_sent_total"), total);
        assert_eq!(pair.link_up().await, (1, 1));

        alice.close().await;
        pair.stop().await;
    })
    .await;
}

/// alice on a publishes video, bob on b consumes it; returns them and bob's video consumer
/// once packets flow.
async fn video_across(
    pair: &NodePair,
    room: &str,
) -> (Bot, Bot, pipemesh::bot::client::ConsumerStream) {
    let alice = join(publisher(pair.a.bot(room, "alice"), false, true)).await;
    let mut bob = join(subscriber(pair.b.bot(room, "bob"))).await;
    bob.wait_consumers(1, WAIT)
        .await
        .expect("bob consumes alice's video");
    let c = consumer_of(&bob, "alice", MediaKind::Video);
    let rx = bob.recv_transport().expect("consuming transport");
    wait_packets(&rx, c.ssrc, 0, 50)
        .await
        .expect("video flows through the relay");
    (alice, bob, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_link_cut_is_survived() {
    bounded(async {
        let pair = linked_pair(PairOptions {
            relay: true,
            grace_secs: 10,
        })
        .await;
        let (alice, mut bob, c) = video_across(&pair, "cut-short").await;
        let rx = bob.recv_transport().expect("consuming transport");
        drain_notifications(&mut bob).await;

        // Shorter than the QUIC idle timeout: the link may survive it.
        let cut = PIPE_IDLE_TIMEOUT - Duration::from_secs(1);
        let before = pair.a.metrics().await;
        pair.relay().cut();
        let at_cut = rx.state().received(c.ssrc);
        tokio::time::sleep(cut).await;
        let at_heal = rx.state().received(c.ssrc);
        let at_heal_stats = pair.relay().stats();
        let dropped = at_heal_stats.dropped();
        pair.relay().heal();
        let healed = Instant::now();
        let during = pair.a.metrics().await;
        eprintln!(
            "during the cut a piped {} RTP into the link ({} datagrams out, {} dropped)",
            delta(&before, &during, "pipe_rtp_sent_total"),
            delta(
                &before,
                &during,
                &link_metric("pipe_datagrams_out_total", "b")
            ),
            delta(
                &before,
                &during,
                &link_metric("pipe_dropped_datagrams_total", "b")
            ),
        );
        assert!(
            at_heal <= at_cut + 10,
            "video crossed a cut link: {at_cut} -> {at_heal}"
        );
        assert!(dropped > 0, "the relay dropped traffic during the cut");

        // Also when the first datagram crosses the relay each way after the heal (diagnosis).
        let relay = pair.relay();
        let s0 = relay.stats();
        let first = |pick: fn(&RelayStats) -> u64| async move {
            loop {
                if pick(&relay.stats()) > pick(&s0) {
                    return healed.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let limit = Duration::from_secs(5);
        let (video, a_to_b, b_to_a) = tokio::join!(
            rx.wait_for("video after the heal", limit, |s| {
                s.received(c.ssrc) >= at_heal + 5
            }),
            tokio::time::timeout(limit, first(|s| s.to_upstream.forwarded)),
            tokio::time::timeout(limit, first(|s| s.to_client.forwarded)),
        );
        video.expect("video flows again after the heal");
        let back = healed.elapsed();
        eprintln!(
            "{cut:?} cut ({} datagrams dropped a->b, {} b->a): video back {back:?} after the \
             heal; first datagram through the relay a->b after {a_to_b:?}, b->a after {b_to_a:?}",
            at_heal_stats.to_upstream.dropped, at_heal_stats.to_client.dropped,
        );
        assert!(
            back <= Duration::from_secs(2),
            "video back only after {back:?} (first datagram a->b after {a_to_b:?}, b->a \
             after {b_to_a:?})"
        );

        // Not closed; if the cut took the link down, bob's consumer was paused and is resumed.
        let evs = drain_notifications(&mut bob).await;
        assert_eq!(count_about(&evs, "consumerClosed", &c.id), 0, "{evs:?}");
        let paused = count_about(&evs, "consumerPaused", &c.id);
        let mut resumed = count_about(&evs, "consumerResumed", &c.id);
        if resumed < paused {
            bob.wait_notification("consumerResumed", WAIT, |d| {
                d["consumerId"] == c.id.as_str()
            })
            .await
            .expect("a paused consumer is resumed on reconnect");
            resumed += 1;
        }
        eprintln!("link dropped during the cut: {}", paused > 0);
        assert_eq!(paused, resumed, "{evs:?}");
        assert!(bob.consumers().iter().any(|x| x.id == c.id));
        pair.wait_link(true, WAIT).await;

        alice.close().await;
        bob.close().await;
        pair.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_link_cut_closes_remote_consumers_after_grace() {
    bounded(async {
        let grace = Duration::from_secs(3);
        let pair = linked_pair(PairOptions {
            relay: true,
            grace_secs: grace.as_secs(),
        })
        .await;
        let (alice, mut bob, c) = video_across(&pair, "cut-long").await;
        drain_notifications(&mut bob).await;

        // The cut lasts 6 s, or longer if the consumer is still open by then: the link is
        // declared down only after the QUIC idle timeout, and grace may count from there.
        let min_cut = Duration::from_secs(6);
        let bound = PIPE_IDLE_TIMEOUT + grace + Duration::from_secs(5);
        pair.relay().cut();
        let cut = Instant::now();
        let mut seen = Vec::new();
        let closed = bob
            .wait_event("consumerClosed", bound, |e| {
                if let BotEvent::Notification { method, data } = e {
                    if data["consumerId"] == c.id.as_str() {
                        seen.push((method.clone(), cut.elapsed()));
                        return method == "consumerClosed";
                    }
                }
                false
            })
            .await;
        let closed_after = cut.elapsed();
        eprintln!("during the cut: {seen:?}");
        closed.unwrap_or_else(|e| {
            panic!("no consumerClosed {bound:?} into a cut with {grace:?} grace: {e}")
        });
        eprintln!("consumerClosed {closed_after:?} into the cut ({grace:?} grace)");
        // Paused when the link went down, closed one grace period later.
        let paused_at = seen
            .iter()
            .find(|(m, _)| m == "consumerPaused")
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("not paused before being closed: {seen:?}"));
        let waited = closed_after - paused_at;
        eprintln!("paused {paused_at:?} into the cut, closed {waited:?} later");
        assert!(
            waited + Duration::from_millis(250) >= grace
                && waited <= grace + Duration::from_secs(2),
            "closed {waited:?} after the pause, grace is {grace:?}"
        );
        assert!(bob.consumers().iter().all(|x| x.id != c.id));
        if let Some(rest) = min_cut.checked_sub(cut.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        pair.relay().heal();

        // The link comes back by itself.
        pair.wait_link(true, Duration::from_secs(10)).await;

        alice.close().await;
        bob.close().await;
        pair.stop().await;
    })
    .await;
}

/// PEM files of one node: (CA, certificate, key).
fn write_node_files(dir: &Path, ca: &certs::CaBundle, file: &str, id: &str) -> [PathBuf; 3] {
    let node = certs::generate_node_cert(ca, id, &[]).expect("node certificate");
    let paths = [
        dir.join(format!("{file}-ca.pem")),
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    ];
    std::fs::write(&paths[0], &ca.cert_pem).unwrap();
    std::fs::write(&paths[1], &node.cert_pem).unwrap();
    std::fs::write(&paths[2], &node.key_pem).unwrap();
    paths
}

fn secure(files: &[PathBuf; 3]) -> impl Fn(&mut Config) + '_ {
    move |c: &mut Config| {
        c.insecure_pipes = false;
        c.cluster_ca = Some(files[0].clone());
        c.node_cert = Some(files[1].clone());
        c.node_key = Some(files[2].clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_foreign_or_wrong_certificates_never_link() {
    bounded(async {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pipe_nodes-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = certs::generate_ca("pipemesh").unwrap();
        let rogue_ca = certs::generate_ca("pipemesh").unwrap();
        let a = write_node_files(&dir, &ca, "a", "a");
        let b = write_node_files(&dir, &ca, "b", "b");
        // b of another CA (same cluster name, same node id).
        let rogue_b = write_node_files(&dir, &rogue_ca, "rogue-b", "b");
        // A genuine member of the cluster, node c, where a expects b.
        let c = write_node_files(&dir, &ca, "c", "c");

        let (good, rogue, impostor) = tokio::join!(
            start_pair(false, secure(&a), secure(&b)),
            start_pair(false, secure(&a), secure(&rogue_b)),
            start_pair(false, secure(&a), |cfg: &mut Config| {
                secure(&c)(cfg);
                cfg.node_id = "c".into();
            }),
        );
        good.wait_link(true, WAIT).await;
        let linked = Instant::now();
        // Give the refused pairs as long again as the good one took, and at least 2 s (many
        // dial attempts at the initial backoff): they must never report the link up.
        let observe = Duration::from_secs(2);
        while linked.elapsed() < observe {
            let (r, i) = tokio::join!(rogue.link_up(), impostor.link_up());
            assert_eq!(r, (0, 0), "node b with another CA's certificate linked");
            assert_eq!(i, (0, 0), "node c answering for b linked");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The good pair carries media; the refused ones do not pass any.
        let alice = join(publisher(good.a.bot("tls", "alice"), true, false)).await;
        let mut bob = join(subscriber(good.b.bot("tls", "bob"))).await;
        bob.wait_consumers(1, WAIT)
            .await
            .expect("secure pipe carries the room");
        let ac = consumer_of(&bob, "alice", MediaKind::Audio);
        wait_packets(&bob.recv_transport().unwrap(), ac.ssrc, 0, 20)
            .await
            .expect("audio through a secure pipe");
        for p in [&rogue, &impostor] {
            let m = p.a.metrics().await;
            assert_eq!(
                m.get(&link_metric("pipe_datagrams_out_total", "b"))
                    .copied()
                    .unwrap_or(0),
                0
            );
        }

        alice.close().await;
        bob.close().await;
        tokio::join!(good.stop(), rogue.stop(), impostor.stop());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// Hostile datagrams: random bytes of many sizes, and packets whose first byte claims a QUIC
/// long header (Initial, 0-RTT, Handshake, Retry) with version 1, or a short header, with
/// garbage after it.
fn garbage(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 3]];
    for len in [1usize, 5, 21, 40, 64, 200, 1200, 1350, 1500] {
        for _ in 0..4 {
            let mut v = vec![0u8; len];
            rng.fill(&mut v[..]);
            out.push(v.clone());
            for first in [0xc0u8, 0xd0, 0xe0, 0xf0, 0x40, 0x5f] {
                if let Some(b) = v.first_mut() {
                    *b = first;
                }
                if first & 0x80 != 0 && v.len() >= 5 {
                    v[1..5].copy_from_slice(&1u32.to_be_bytes());
                }
                out.push(v.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_pipe_ports_does_not_break_an_up_link() {
    bounded(async {
        let pair = linked_pair(PairOptions::default()).await;
        let (alice, mut bob, c) = video_across(&pair, "garbage").await;
        let rx = bob.recv_transport().expect("consuming transport");
        drain_notifications(&mut bob).await;

        let seed: u64 = rand::rng().random();
        eprintln!("garbage seed {seed:#x}");
        let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let targets = [pair.a.addrs.pipe, pair.b.addrs.pipe].map(|p| p.expect("pipe listener"));
        let packets = garbage(seed);
        for p in &packets {
            for t in targets {
                attacker.send_to(p, t).await.unwrap();
            }
        }
        eprintln!("{} garbage datagrams sent to each pipe port", packets.len());

        // The link carries media on: 50 more video packets, no pause, still up.
        let from = rx.state().received(c.ssrc);
        let dgrams = get(
            &pair.b.metrics().await,
            &link_metric("pipe_datagrams_in_total", "a"),
        );
        wait_packets(&rx, c.ssrc, from, 50)
            .await
            .expect("video still flows after the garbage");
        pair.b
            .wait_metric(&link_metric("pipe_datagrams_in_total", "a"), |n| {
                n > dgrams + 20
            })
            .await;
        assert_eq!(pair.link_up().await, (1, 1));
        let evs = drain_notifications(&mut bob).await;
        assert!(
            evs.iter()
                .all(|(m, _)| m != "consumerPaused" && m != "consumerClosed"),
            "{evs:?}"
        );
        let (ma, mb) = tokio::join!(pair.a.metrics(), pair.b.metrics());
        eprintln!(
            "garbage counters: a {:?}, b {:?}",
            ma.get(&link_metric("pipe_garbage_datagrams_total", "b")),
            mb.get(&link_metric("pipe_garbage_datagrams_total", "a"))
        );

        alice.close().await;
        bob.close().await;
        pair.stop().await;
    })
    .await;
}
