//! Bad input is dropped and the node keeps serving: malformed and unknown signaling requests
//! get protoo error responses, garbage datagrams (from strangers and on an established
//! 5-tuple) and garbage on the TCP port do not disturb running sessions or new ones.

mod common;

use std::net::SocketAddr;

use common::*;
use pipemesh::bot::client::BotTransport;
use pipemesh::edge::stun::{write_binding_request, BindingRequest, IntegrityKey};
use pipemesh::router::rtp_parameters::MediaKind;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// A fixed set of hostile packets: random bytes of many sizes, and packets whose first bytes
/// claim STUN, DTLS, RTP or RTCP with garbage (or truncated) bodies.
fn garbage(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 3]];
    for len in [1usize, 2, 11, 12, 13, 19, 20, 21, 64, 200, 1200, 1499] {
        let mut v = vec![0u8; len];
        rng.fill(&mut v[..]);
        out.push(v.clone());
        for first in [0x00u8, 0x01, 22, 23, 0x80, 0x90, 0xbf] {
            if let Some(b) = v.first_mut() {
                *b = first;
            }
            out.push(v.clone());
        }
        if len >= 8 {
            // STUN magic cookie with garbage attributes and length.
            v[0] = 0x00;
            v[1] = 0x01;
            v[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            out.push(v.clone());
            // RTCP SR / PSFB headers with lying lengths.
            for pt in [200u8, 201, 205, 206] {
                v[0] = 0x81;
                v[1] = pt;
                v[2] = 0xff;
                out.push(v.clone());
            }
            // RTP with the CSRC count and extension bit set over garbage.
            v[0] = 0x9f;
            v[1] = 0x6f;
            out.push(v.clone());
        }
    }
    // A well-formed Binding request for a ufrag the node never issued.
    let mut stun = Vec::new();
    let req = BindingRequest {
        transaction_id: rng.random(),
        username: "nobody:bot",
        priority: 1,
        tie_breaker: 7,
        use_candidate: true,
    };
    write_binding_request(
        &mut stun,
        &req,
        &IntegrityKey::new(b"whatever-password-1234"),
    )
    .expect("short username");
    out.push(stun);
    out
}

async fn spray_udp(target: SocketAddr, packets: &[Vec<u8>]) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for p in packets {
        let _ = s.send_to(p, target).await;
    }
}

async fn spray_tuple(t: &BotTransport, packets: &[Vec<u8>]) {
    for p in packets.iter().filter(|p| !p.is_empty()) {
        t.send_raw(p.clone()).await.expect("transport alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_requests_get_errors_and_the_session_continues() {
    bounded(async {
        let node = TestNode::start().await;
        let alice = join(publisher(node.bot("badsig", "alice"), true, false)).await;
        let mut bob = join(subscriber(node.bot("badsig", "bob"))).await;
        bob.wait_consumers(1, WAIT).await.expect("bob consumes");
        let sig = bob.signaling().clone();

        // Frames that are not protoo requests get no answer and do not end the session.
        for text in [
            "{oops",
            "[]",
            "null",
            r#"{"request":true,"method":"join"}"#,
            r#"{"request":true,"id":-4,"method":"join"}"#,
            r#"{"response":true,"id":999999,"ok":true,"data":{}}"#,
            r#"{"notification":true,"method":"whatever","data":{}}"#,
        ] {
            sig.send_text(text.to_owned()).await.expect("send");
        }

        let cases = [
            ("fooBar", json!({}), "unknown method"),
            ("produce", json!({"transportId": 5}), "produce without kind/rtpParameters"),
            ("pauseConsumer", json!({"consumerId": 7}), "consumerId of the wrong type"),
            ("resumeConsumer", json!({"consumerId": "nope"}), "unknown consumer"),
            ("closeProducer", json!({"producerId": "nope"}), "unknown producer"),
            (
                "connectWebRtcTransport",
                json!({"transportId": "nope", "dtlsParameters": {"role": "client", "fingerprints": []}}),
                "unknown transport",
            ),
            ("restartIce", json!({"transportId": "nope"}), "unknown transport"),
            (
                "produce",
                json!({"transportId": bob.recv_transport().expect("t").id(), "kind": "audio",
                       "rtpParameters": {"codecs": "no"}, "appData": {}}),
                "malformed rtpParameters",
            ),
            (
                "produce",
                json!({"transportId": bob.recv_transport().expect("t").id(), "kind": "smell",
                       "rtpParameters": {"codecs": []}, "appData": {}}),
                "bad kind",
            ),
            ("join", json!({"rtpCapabilities": 12}), "join twice, malformed"),
        ];
        for (method, data, what) in cases {
            match sig.request_raw(method, data).await {
                Ok(Err((code, reason))) => {
                    assert!((400..600).contains(&code), "{what}: code {code} ({reason})");
                }
                Ok(Ok(v)) => panic!("{what}: {method} accepted with {v}"),
                Err(e) => panic!("{what}: no protoo error response: {e}"),
            }
        }
        assert!(matches!(
            sig.request_raw("fooBar", json!({})).await,
            Ok(Err((405, _)))
        ));

        // The session still works: requests are answered and media still arrives.
        sig.request("getRouterRtpCapabilities", json!({}))
            .await
            .expect("session continues");
        let c = consumer_of(&bob, "alice", MediaKind::Audio);
        let rx = bob.recv_transport().expect("transport");
        let now = rx.state().received(c.ssrc);
        wait_packets(&rx, c.ssrc, now, 25).await.expect("media continues");

        alice.close().await;
        bob.close().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped() {
    bounded(async {
        let node = TestNode::start().await;
        let alice = join(publisher(node.bot("badudp", "alice"), true, true)).await;
        let mut bob = join(subscriber(node.bot("badudp", "bob"))).await;
        bob.wait_consumers(2, WAIT).await.expect("bob consumes");
        let c = consumer_of(&bob, "alice", MediaKind::Audio);
        let rx = bob.recv_transport().expect("transport");
        let tx = alice.send_transport().expect("transport");
        wait_packets(&rx, c.ssrc, 0, 10).await.expect("media flows");

        let junk = garbage(1);
        // From a stranger's address...
        spray_udp(node.addrs.rtc, &junk).await;
        // ...and on the established 5-tuples (unencrypted RTP/RTCP fails SRTP auth).
        spray_tuple(&tx, &junk).await;
        spray_tuple(&rx, &junk).await;
        tx.wait_for("raw sent", WAIT, |s| s.raw_sent as usize >= junk.len() - 1)
            .await
            .expect("garbage sent");

        let now = rx.state().received(c.ssrc);
        wait_packets(&rx, c.ssrc, now, 25)
            .await
            .expect("media continues");
        let checks = tx.state().ice_successes;
        tx.wait_for("consent still answered", WAIT, |s| s.ice_successes > checks)
            .await
            .expect("ICE consent continues");
        assert!(tx.state().closed.is_none() && rx.state().closed.is_none());
        // Every kind of junk was counted where the node dropped it.
        node.wait_metric("srtp_failures_total", |v| v > 0).await;
        node.wait_metric("unknown_tuple_dropped_total", |v| v > 0)
            .await;
        node.wait_metric("unclassified_dropped_total", |v| v > 0)
            .await;
        node.wait_metric("stun_dropped_total", |v| v > 0).await;

        // A new session still gets served.
        let mut carol = join(subscriber(node.bot("badudp", "carol"))).await;
        carol.wait_consumers(2, WAIT).await.expect("carol consumes");
        let cc = consumer_of(&carol, "alice", MediaKind::Video);
        wait_packets(&carol.recv_transport().expect("t"), cc.ssrc, 0, 10)
            .await
            .expect("carol receives video");

        alice.close().await;
        bob.close().await;
        carol.close().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tcp_port_is_dropped() {
    bounded(async {
        let node = TestNode::start().await;
        let mut a = publisher(node.bot("badtcp", "alice"), true, false);
        a.tcp = true;
        let alice = join(a).await;
        let mut b = subscriber(node.bot("badtcp", "bob"));
        b.tcp = true;
        let mut bob = join(b).await;
        bob.wait_consumers(1, WAIT).await.expect("bob consumes");
        let c = consumer_of(&bob, "alice", MediaKind::Audio);
        let rx = bob.recv_transport().expect("transport");
        wait_packets(&rx, c.ssrc, 0, 10)
            .await
            .expect("media flows over TCP");

        let junk = garbage(2);
        // Unframed random bytes, an oversized frame, and well-framed garbage, on fresh
        // connections.
        let mut raw = Vec::new();
        for p in &junk {
            raw.extend_from_slice(p);
        }
        let mut framed = Vec::new();
        for p in junk.iter().filter(|p| !p.is_empty()) {
            framed.extend_from_slice(&(p.len() as u16).to_be_bytes());
            framed.extend_from_slice(p);
        }
        let mut huge = vec![0xff, 0xff];
        huge.extend(std::iter::repeat_n(0x80u8, 4000));
        for bytes in [raw, framed, huge, vec![0x00], vec![]] {
            if let Ok(mut s) = tokio::net::TcpStream::connect(node.addrs.rtc).await {
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
        }
        // Framed garbage on bob's own connection.
        spray_tuple(&rx, &junk).await;

        let now = rx.state().received(c.ssrc);
        wait_packets(&rx, c.ssrc, now, 25)
            .await
            .expect("media continues over TCP");
        assert!(rx.state().closed.is_none(), "{:?}", rx.state());
        node.wait_metric("tcp_framing_errors_total", |v| v > 0)
            .await;

        let mut o = subscriber(node.bot("badtcp", "carol"));
        o.tcp = true;
        let mut carol = join(o).await;
        carol.wait_consumers(1, WAIT).await.expect("carol consumes");
        let cc = consumer_of(&carol, "alice", MediaKind::Audio);
        wait_packets(&carol.recv_transport().expect("t"), cc.ssrc, 0, 10)
            .await
            .expect("a new TCP session is served");

        alice.close().await;
        bob.close().await;
        carol.close().await;
        node.stop().await;
    })
    .await;
}
