//! pauseProducer / resumeProducer: the consumer side is told (consumerPaused /
//! consumerResumed), forwarding stops while paused although the source keeps sending (like a
//! muted browser track), and resumes afterwards without a sequence gap.

mod common;

use common::*;
use pipemesh::router::rtp_parameters::MediaKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_forwarding_and_resume_restarts_it() {
    bounded(async {
        let node = TestNode::start().await;
        let alice = join(publisher(node.bot("pause", "alice"), true, false)).await;
        let mut bob = join(subscriber(node.bot("pause", "bob"))).await;
        bob.wait_consumers(1, WAIT)
            .await
            .expect("bob consumes alice's audio");
        let c = consumer_of(&bob, "alice", MediaKind::Audio);
        let rx = bob.recv_transport().expect("consuming transport");
        let tx = alice.send_transport().expect("sending transport");
        wait_packets(&rx, c.ssrc, 0, 20).await.expect("audio flows");

        alice
            .pause_producer(MediaKind::Audio)
            .await
            .expect("pauseProducer");
        let data = bob
            .wait_notification("consumerPaused", WAIT, |d| d["consumerId"] == c.id.as_str())
            .await
            .expect("consumerPaused");
        assert_eq!(data["consumerId"], c.id.as_str());

        // Let alice send another 25 packets (500 ms of audio): bob must not get them. A few
        // may have been in flight when the pause took effect.
        let at_pause = rx.state().received(c.ssrc);
        let sent = tx.state().rtp_sent;
        tx.wait_for("alice keeps sending", WAIT, |s| s.rtp_sent >= sent + 25)
            .await
            .expect("source keeps sending while paused");
        let while_paused = rx.state().received(c.ssrc);
        assert!(
            while_paused <= at_pause + 3,
            "forwarded while paused: {at_pause} -> {while_paused}"
        );

        alice
            .resume_producer(MediaKind::Audio)
            .await
            .expect("resumeProducer");
        bob.wait_notification("consumerResumed", WAIT, |d| {
            d["consumerId"] == c.id.as_str()
        })
        .await
        .expect("consumerResumed");
        wait_packets(&rx, c.ssrc, while_paused, 20)
            .await
            .expect("audio flows again");

        let stats = bob.stats().await.expect("stats");
        let s = stats
            .iter()
            .find(|s| s.consumer.id == c.id)
            .expect("stream stats");
        let snap = s.stats.snapshot(std::time::Instant::now());
        // The node rewrites sequence numbers so the pause leaves no gap for the receiver.
        assert!(snap.lost_clamped() <= 3, "gap across pause: {snap}");

        alice.close().await;
        bob.close().await;
        node.stop().await;
    })
    .await;
}
