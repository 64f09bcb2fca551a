//! Access tokens and per-peer limits against a real node: tokens are checked on the WebSocket
//! upgrade before anything is allocated, grants hold in the worker, and a peer over its limits
//! gets protoo errors while the others keep their media.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::{SinkExt, StreamExt};
use pipemesh::auth::{mint, AuthSecret, Claims};
use pipemesh::bot::client::{signaling_url_with_token, Bot, BotError, SignalingClient};
use pipemesh::config::Config;
use pipemesh::router::rtp_parameters::MediaKind;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

const SECRET: &str = "test-cluster-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn secret() -> AuthSecret {
    AuthSecret::new(SECRET.as_bytes().to_vec()).expect("long enough")
}

fn claims(room: &str, peer: &str) -> Claims {
    Claims {
        room: room.into(),
        peer: peer.into(),
        exp: now() + 600,
        nbf: None,
        iat: Some(now()),
        can_publish: true,
        can_subscribe: true,
    }
}

fn token(c: &Claims) -> String {
    mint(&secret(), c).expect("token minted")
}

/// A secret file for one node (removed with the process's temporary directory).
fn secret_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipemesh-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, format!("{SECRET}\n")).expect("secret written");
    path
}

/// A node that requires tokens, with `f` adjusting its configuration.
async fn secured_node(name: &str, f: impl FnOnce(&mut Config)) -> TestNode {
    let file = secret_file(name);
    TestNode::start_with(|c| {
        c.auth_secret_file = Some(file);
        f(c);
    })
    .await
}

/// Tries the WebSocket upgrade; the HTTP status and body of a refusal, or None when admitted.
async fn upgrade(
    node: &TestNode,
    room: &str,
    peer: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let url = signaling_url_with_token(&node.url(), room, peer, token);
    let req =
        ClientRequestBuilder::new(url.parse().expect("valid URL")).with_sub_protocol("protoo");
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            None
        }
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Some((resp.status().as_u16(), body))
        }
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_join_publish_and_consume() {
    bounded(async {
        let node = secured_node("valid", |_| {}).await;
        let mut a = publisher(node.bot("tok", "alice"), true, true);
        a.token = Some(token(&claims("tok", "alice")));
        let alice = join(a).await;
        let mut b = subscriber(node.bot("tok", "bob"));
        b.token = Some(token(&Claims {
            can_publish: false,
            ..claims("tok", "bob")
        }));
        let mut bob = join(b).await;
        bob.wait_consumers(2, WAIT)
            .await
            .expect("bob consumes alice");
        let t = bob.recv_transport().expect("consuming transport");
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let c = consumer_of(&bob, "alice", kind);
            wait_packets(&t, c.ssrc, 0, 20).await.expect("media flows");
        }
        let m = node.metrics().await;
        assert_eq!(m.get("sessions_opened_total"), Some(&2));
        assert_eq!(m.get("signaling_refused_total"), Some(&0));
        alice.close().await;
        bob.close().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_anything_is_allocated() {
    bounded(async {
        let node = secured_node("refused", |_| {}).await;
        let other = AuthSecret::new(b"another-secret-another-secret-xxxx".to_vec()).expect("long");
        let forged = mint(&other, &claims("r", "p")).expect("minted");
        let expired = token(&Claims {
            exp: now() - 3600,
            iat: Some(now() - 7200),
            ..claims("r", "p")
        });
        let early = token(&Claims {
            nbf: Some(now() + 3600),
            exp: now() + 7200,
            ..claims("r", "p")
        });
        let good = token(&claims("r", "p"));
        // (case, token, room, peer, HTTP status, words of the body)
        let cases = [
            ("missing", None, "r", "p", 401, "token is required"),
            ("malformed", Some("not-a-jwt"), "r", "p", 401, "malformed"),
            ("wrong signature", Some(&forged), "r", "p", 401, "signature"),
            ("expired", Some(&expired), "r", "p", 401, "expired"),
            (
                "not yet valid",
                Some(&early),
                "r",
                "p",
                401,
                "not valid yet",
            ),
            (
                "wrong room",
                Some(&good),
                "elsewhere",
                "p",
                403,
                "another room",
            ),
            (
                "wrong peer",
                Some(&good),
                "r",
                "mallory",
                403,
                "another peer",
            ),
        ];
        for (what, tok, room, peer, status, body) in cases {
            let (s, b) = upgrade(&node, room, peer, tok)
                .await
                .unwrap_or_else(|| panic!("{what}: admitted"));
            assert_eq!(s, status, "{what}: {b}");
            assert!(b.contains(body), "{what}: {b:?} lacks {body:?}");
        }
        let m = node.metrics().await;
        assert_eq!(m.get("signaling_refused_total"), Some(&7));
        assert_eq!(
            m.get("sessions_opened_total"),
            Some(&0),
            "no session reached the worker"
        );

        // The good token opens a session.
        assert_eq!(upgrade(&node, "r", "p", Some(&good)).await, None);
        node.wait_metric("sessions_opened_total", |v| v == 1).await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_only_peer_cannot_produce_and_others_are_unaffected() {
    bounded(async {
        let node = secured_node("grants", |_| {}).await;
        let mut c = subscriber(node.bot("g", "carol"));
        c.token = Some(token(&claims("g", "carol")));
        let mut carol = join(c).await;

        // A bot that wants to publish with a subscribe-only token fails at the first step.
        let mut v = publisher(node.bot("g", "viewer"), true, false);
        v.token = Some(token(&Claims {
            can_publish: false,
            ..claims("g", "viewer")
        }));
        match Bot::join(v).await {
            Err(BotError::Rejected {
                method,
                code,
                reason,
            }) => {
                assert_eq!((method.as_str(), code), ("createWebRtcTransport", 403));
                assert!(reason.contains("canPublish"), "{reason}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a subscribe-only peer published"),
        }
        // Directly: `produce` is refused too, and consuming is allowed.
        let viewer_token = token(&Claims {
            can_publish: false,
            ..claims("g", "viewer2")
        });
        let (sig, _rx) =
            SignalingClient::connect_with_token(&node.url(), "g", "viewer2", Some(&viewer_token))
                .await
                .expect("viewer2 connects");
        sig.request("join", json!({"displayName": "v2"}))
            .await
            .expect("join");
        let t = sig
            .request(
                "createWebRtcTransport",
                json!({"producing": false, "consuming": true}),
            )
            .await
            .expect("a consuming transport");
        let r = sig
            .request_raw(
                "produce",
                json!({"transportId": t["id"], "kind": "audio", "rtpParameters": {}}),
            )
            .await
            .expect("answered");
        assert!(
            matches!(&r, Err((403, reason)) if reason.contains("canPublish")),
            "{r:?}"
        );

        // A publish-only peer may not open a consuming transport.
        let quiet_token = token(&Claims {
            can_subscribe: false,
            ..claims("g", "quiet")
        });
        let (q, _qrx) =
            SignalingClient::connect_with_token(&node.url(), "g", "quiet", Some(&quiet_token))
                .await
                .expect("quiet connects");
        let r = q
            .request_raw(
                "createWebRtcTransport",
                json!({"producing": false, "consuming": true}),
            )
            .await
            .expect("answered");
        assert!(
            matches!(&r, Err((403, reason)) if reason.contains("canSubscribe")),
            "{r:?}"
        );

        // Carol still gets a real publisher's media.
        let mut a = publisher(node.bot("g", "alice"), true, false);
        a.token = Some(token(&claims("g", "alice")));
        let alice = join(a).await;
        carol
            .wait_consumers(1, WAIT)
            .await
            .expect("carol consumes alice");
        let c = consumer_of(&carol, "alice", MediaKind::Audio);
        wait_packets(&carol.recv_transport().expect("transport"), c.ssrc, 0, 20)
            .await
            .expect("audio flows to carol");

        sig.close().await;
        q.close().await;
        alice.close().await;
        carol.close().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_requests_get_protoo_errors_while_others_keep_their_media() {
    bounded(async {
        let node = secured_node("limits", |c| {
            c.max_transports_per_peer = 2;
            c.max_producers_per_peer = 1;
            c.signaling_requests_per_sec = 20;
            c.signaling_request_burst = 30;
        })
        .await;
        let mut a = publisher(node.bot("lim", "alice"), true, false);
        a.token = Some(token(&claims("lim", "alice")));
        let alice = join(a).await;
        let mut b = subscriber(node.bot("lim", "bob"));
        b.token = Some(token(&claims("lim", "bob")));
        let mut bob = join(b).await;
        bob.wait_consumers(1, WAIT)
            .await
            .expect("bob consumes alice");
        let rt = bob.recv_transport().expect("transport");
        let ssrc = consumer_of(&bob, "alice", MediaKind::Audio).ssrc;
        let before = wait_packets(&rt, ssrc, 0, 10).await.expect("audio flows");

        // Too many producers: a bot publishing audio and video fails at its second produce.
        let mut p = publisher(node.bot("lim", "greedy"), true, true);
        p.token = Some(token(&claims("lim", "greedy")));
        match Bot::join(p).await {
            Err(BotError::Rejected {
                method,
                code,
                reason,
            }) => {
                assert_eq!((method.as_str(), code), ("produce", 400));
                assert!(reason.contains("too many producers"), "{reason}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a second producer was allowed"),
        }

        // Too many transports, then a request flood, on one session that stays open.
        let m_token = token(&claims("lim", "mallory"));
        let (m, _mrx) =
            SignalingClient::connect_with_token(&node.url(), "lim", "mallory", Some(&m_token))
                .await
                .expect("mallory connects");
        for _ in 0..2 {
            m.request("createWebRtcTransport", json!({"producing": true}))
                .await
                .expect("within the limit");
        }
        let r = m
            .request_raw("createWebRtcTransport", json!({"producing": true}))
            .await
            .expect("answered");
        assert!(
            matches!(&r, Err((400, reason)) if reason.contains("too many transports")),
            "{r:?}"
        );
        let flood = (0..200).map(|_| m.request_raw("getRouterRtpCapabilities", json!({})));
        let answers = futures_util::future::join_all(flood).await;
        let limited = answers
            .iter()
            .filter(|a| matches!(a, Ok(Err((429, reason))) if reason.contains("too many requests")))
            .count();
        let served = answers.iter().filter(|a| matches!(a, Ok(Ok(_)))).count();
        assert_eq!(limited + served, 200, "every request answered: {answers:?}");
        assert!(
            limited >= 100 && served >= 1,
            "limited {limited}, served {served}"
        );
        node.wait_metric("signaling_rate_limited_total", |v| v == limited as u64)
            .await;
        // The session stays: once the bucket refills, requests are served again.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match m.request_raw("getRouterRtpCapabilities", json!({})).await {
                Ok(Ok(_)) => break,
                Ok(Err((429, _))) => {
                    assert!(tokio::time::Instant::now() < deadline, "never served again")
                }
                other => panic!("session lost: {other:?}"),
            }
        }

        // bob kept receiving alice all along.
        wait_packets(&rt, ssrc, before, 20)
            .await
            .expect("audio still flows to bob");
        m.close().await;
        alice.close().await;
        bob.close().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_the_session_with_a_reason() {
    bounded(async {
        let node = secured_node("size", |c| c.max_signaling_message_bytes = 8192).await;
        for size in [8193usize, 300 * 1024] {
            let url = signaling_url_with_token(
                &node.url(),
                "big",
                "p",
                Some(&token(&claims("big", "p"))),
            );
            let req =
                ClientRequestBuilder::new(url.parse().expect("url")).with_sub_protocol("protoo");
            let (mut ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .expect("admitted");
            let text = format!(
                r#"{{"request":true,"id":1,"method":"join","data":{{"displayName":"{}"}}}}"#,
                "x".repeat(size)
            );
            ws.send(WsMessage::text(text)).await.expect("sent");
            let close = loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Close(frame))) => break frame,
                    Some(Ok(_)) => continue,
                    other => panic!("{size} bytes: no close frame, got {other:?}"),
                }
            };
            let frame = close.expect("a close frame with a reason");
            assert_eq!(frame.code, CloseCode::Size, "{size} bytes");
            assert!(
                frame.reason.contains("8192-byte limit"),
                "{size} bytes: {}",
                frame.reason
            );
        }
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_with_a_weak_secret() {
    let dir = std::env::temp_dir().join(format!("pipemesh-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let weak = dir.join("weak");
    std::fs::write(&weak, "short\n").expect("written");
    let r = TestNode::try_start_with(|c| c.auth_secret_file = Some(weak)).await;
    let e = r.err().expect("refused");
    assert!(e.to_string().contains("too short"), "{e}");
}
