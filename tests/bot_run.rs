//! `pipemesh bot` end to end: two bots in one process publish and consume each other for two
//! seconds; the summary counts the received streams and packets. With the cluster secret, each
//! bot mints its own room token for a node that requires them.

mod common;

use common::*;
use pipemesh::bot::run::{run, BotArgs, RunReport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reports_received_streams() {
    bounded(async {
        let node = TestNode::start().await;
        let json =
            std::env::temp_dir().join(format!("pipemesh-bot-json-{}.json", std::process::id()));
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
            json_out: Some(json.clone()),
            simulcast: None,
        };
        let before_ms = unix_ms();
        let s = run(args).await.expect("bot run");
        assert_eq!(s.bots, 2);
        // Each bot consumes the other's audio and video.
        assert_eq!(s.totals.streams, 4, "{s}");
        assert!(s.rtp_sent > 100, "{s}");
        assert!(s.totals.received > 100, "{s}");
        assert!(s.totals.owd.is_some(), "{s}");
        assert!(s.totals.loss_fraction() < 0.05, "{s}");
        // The JSON report says the same per bot and stream, with wall-clock times.
        let r: RunReport = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let _ = std::fs::remove_file(&json);
        assert_eq!((r.room.as_str(), r.bots.len()), ("run", 2));
        let received: u64 = r
            .bots
            .iter()
            .flat_map(|b| &b.streams)
            .map(|s| s.stats.received)
            .sum();
        assert_eq!(received, s.totals.received);
        for b in &r.bots {
            assert!(
                b.join_start_ms >= before_ms && b.joined_ms >= b.join_start_ms,
                "{b:?}"
            );
            assert_eq!(b.streams.len(), 2, "{b:?}");
            let other = if b.peer_id == "runner-0" {
                "runner-1"
            } else {
                "runner-0"
            };
            for st in &b.streams {
                assert_eq!(st.from_peer, other);
                let first = st.stats.first_packet_ms.expect("a first packet");
                assert!(
                    first >= b.joined_ms.min(first) && first >= before_ms,
                    "{st:?}"
                );
                assert!(st.stats.last_packet_ms >= Some(first));
                assert_eq!(
                    st.stats
                        .arrivals_100ms
                        .iter()
                        .map(|&n| u64::from(n))
                        .sum::<u64>(),
                    st.stats.received
                );
                if st.stats.kind == "video" {
                    assert!(st.stats.first_keyframe_ms >= Some(first), "{st:?}");
                }
            }
        }
        node.stop().await;
    })
    .await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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
            json_out: None,
            simulcast: None,
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
