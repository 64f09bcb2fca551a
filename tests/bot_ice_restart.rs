//! restartIce: the node hands out new credentials, the bot's checks switch to them and are
//! answered, and media keeps flowing on both the sending and the receiving transport.

mod common;

use common::*;
use pipemesh::router::rtp_parameters::MediaKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_keeps_media_flowing() {
    bounded(async {
        let node = TestNode::start().await;
        let alice = join(publisher(node.bot("restart", "alice"), true, false)).await;
        let mut bob = join(subscriber(node.bot("restart", "bob"))).await;
        bob.wait_consumers(1, WAIT)
            .await
            .expect("bob consumes alice");
        let c = consumer_of(&bob, "alice", MediaKind::Audio);
        let rx = bob.recv_transport().expect("consuming transport");
        let tx = alice.send_transport().expect("sending transport");
        wait_packets(&rx, c.ssrc, 0, 10).await.expect("audio flows");

        for (bot, sending) in [(&alice, true), (&bob, false)] {
            let t = if sending { &tx } else { &rx };
            let before = t.state();
            let params = bot.restart_ice(sending).await.expect("restartIce");
            assert!(!params.username_fragment.is_empty() && !params.password.is_empty());
            // Checks with the new credentials are answered (old ones no longer count).
            t.wait_for("checks with new credentials", WAIT, |s| {
                s.ice_successes > before.ice_successes
            })
            .await
            .expect("node accepts the new credentials");
            let now = rx.state().received(c.ssrc);
            wait_packets(&rx, c.ssrc, now, 25)
                .await
                .expect("media flows after the restart");
        }
        assert_eq!(rx.state().srtp_errors, 0);

        alice.close().await;
        bob.close().await;
        node.stop().await;
    })
    .await;
}
