//! `pipemesh bot` end to end: two bots in one process publish and consume each other for two
//! seconds; the summary counts the received streams and packets. With the cluster secret, each
//! bot mints its own room token for a node that requires them.

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
            token: None,
            auth_secret_file: None,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_mint_their_tokens_with_the_cluster_secret() {
    bounded(async {
        let dir = std::env::temp_dir().join(format!("pipemesh-bot-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "a-cluster-secret-of-at-least-32-bytes!!\n").expect("secret");
        let file = secret.clone();
        let node = TestNode::start_with(|c| c.auth_secret_file = Some(file)).await;
        let args = |secret: Option<std::path::PathBuf>, token: Option<String>, count| BotArgs {
            server: node.url(),
            room: "run".into(),
            peer_id: Some("runner".into()),
            produce: "audio".into(),
            consume: true,
            count,
            duration: 1,
            tcp: false,
            report_interval: 1,
            token,
            auth_secret_file: secret,
        };
        // Without a token the node refuses the bot before anything is allocated.
        let err = run(args(None, None, 1)).await.expect_err("refused");
        assert!(err.to_string().contains("401"), "{err}");
        // A token names one peer: refused for several bots.
        let err = run(args(None, Some("t".into()), 2))
            .await
            .expect_err("usage");
        assert!(err.to_string().contains("--token is for one bot"), "{err}");
        // With the secret each bot mints its own and both get the other's audio.
        let s = run(args(Some(secret), None, 2)).await.expect("bot run");
        assert_eq!(s.totals.streams, 2, "{s}");
        assert!(s.totals.received > 20, "{s}");
        node.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
