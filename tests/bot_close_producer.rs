//! closeProducer: the consumer's peer gets consumerClosed for exactly that consumer; the other
//! stream keeps flowing.

mod common;

use common::*;
use pipemesh::bot::client::BotEvent;
use pipemesh::router::rtp_parameters::MediaKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_producer_closes_its_consumers() {
    bounded(async {
        let node = TestNode::start().await;
        let mut alice = join(publisher(node.bot("close", "alice"), true, true)).await;
        let mut bob = join(subscriber(node.bot("close", "bob"))).await;
        bob.wait_consumers(2, WAIT)
            .await
            .expect("bob consumes audio and video");
        let video = consumer_of(&bob, "alice", MediaKind::Video);
        let audio = consumer_of(&bob, "alice", MediaKind::Audio);
        let rx = bob.recv_transport().expect("consuming transport");
        wait_packets(&rx, video.ssrc, 0, 10)
            .await
            .expect("video flows");

        alice
            .close_producer(MediaKind::Video)
            .await
            .expect("closeProducer");
        let data = bob
            .wait_notification("consumerClosed", WAIT, |_| true)
            .await
            .expect("consumerClosed");
        assert_eq!(data["consumerId"], video.id.as_str());
        assert!(bob.consumers().iter().all(|c| c.id != video.id));

        let audio_now = rx.state().received(audio.ssrc);
        let video_now = rx.state().received(video.ssrc);
        wait_packets(&rx, audio.ssrc, audio_now, 25)
            .await
            .expect("audio keeps flowing");
        assert!(
            rx.state().received(video.ssrc) <= video_now + 3,
            "video forwarded after its producer closed"
        );
        // Closing again is an error, and the session goes on.
        assert!(alice.close_producer(MediaKind::Video).await.is_err());
        assert!(alice.pause_producer(MediaKind::Audio).await.is_ok());
        assert!(
            !matches!(bob.next_event().await, Some(BotEvent::Closed) | None),
            "bob's session survives"
        );

        alice.close().await;
        bob.close().await;
        node.stop().await;
    })
    .await;
}
