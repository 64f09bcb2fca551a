//! Peers see each other come and go: newPeer when one joins, peerClosed when its signaling
//! connection ends, and its consumers are closed.

mod common;

use common::*;
use pipemesh::router::rtp_parameters::MediaKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_peer_is_announced() {
    bounded(async {
        let node = TestNode::start().await;
        let mut bob = join(subscriber(node.bot("leave", "bob"))).await;
        let alice = join(publisher(node.bot("leave", "alice"), true, false)).await;

        let p = bob
            .wait_notification("newPeer", WAIT, |d| d["id"] == "alice")
            .await
            .expect("newPeer");
        assert_eq!(p["displayName"], "bot alice");
        bob.wait_consumers(1, WAIT)
            .await
            .expect("bob consumes alice");
        let c = consumer_of(&bob, "alice", MediaKind::Audio);
        wait_packets(&bob.recv_transport().expect("transport"), c.ssrc, 0, 10)
            .await
            .expect("audio flows");

        alice.close().await;
        bob.wait_notification("peerClosed", WAIT, |d| d["peerId"] == "alice")
            .await
            .expect("peerClosed");

        // A newcomer's join response lists bob but no longer alice.
        let carol = join(subscriber(node.bot("leave", "carol"))).await;
        assert_eq!(carol.peers_at_join(), ["bob".to_owned()]);

        bob.close().await;
        carol.close().await;
        node.stop().await;
    })
    .await;
}
