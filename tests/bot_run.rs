//! `pipemesh bot` end to end: two bots in one process publish and consume each other for two
//! seconds; the summary counts the received streams and packets.

mod common;

use common::*;
use pipemesh::bot::run::{run, BotArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reports_received_streams() {
    bounded(async {
        let node = TestNode::start().await;
        let args = BotArgs {
            server: node.url(),
            room: "run".into(),
            peer_id: Some("runner".into()),
            produce: "audio,video".into(),
            consume: true,
            count: 2,
            duration: 2,
            tcp: false,
            report_interval: 1,
        };
        let s = run(args).await.expect("bot run");
        assert_eq!(s.bots, 2);
        // Each bot consumes the other's audio and video.
        assert_eq!(s.totals.streams, 4, "{s}");
        assert!(s.rtp_sent > 100, "{s}");
        assert!(s.totals.received > 100, "{s}");
        assert!(s.totals.owd.is_some(), "{s}");
        assert!(s.totals.loss_fraction() < 0.05, "{s}");
        node.stop().await;
    })
    .await;
}
