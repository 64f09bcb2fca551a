//! A bot publishes VP8 in three simulcast encodings (`--simulcast 3`: 160x120, 320x240,
//! 640x480, rids r0..r2 lowest first) and another consumes it over UDP through a real node on
//! loopback: the node sees three layers, the consumer gets the top one (no bandwidth limit),
//! and after `setConsumerPreferredLayers` {spatialLayer: 0} the lowest one. Which layer
//! arrives is read from the keyframes' VP8 picture size.

mod common;

use std::time::Instant;

use common::*;
use pipemesh::bot::client::{Bot, BotError, ConsumerStream};
use pipemesh::router::rtp_parameters::MediaKind;

/// Waits until the last keyframe `bot` received on `consumer` is `want` (width, height),
/// re-reading the statistics whenever a packet of the stream arrives.
async fn wait_keyframe_size(bot: &Bot, consumer: &ConsumerStream, want: (u16, u16)) {
    let t = bot.recv_transport().expect("consuming transport");
    let mut seen = None;
    let r = tokio::time::timeout(WAIT, async {
        loop {
            let stats = bot.stats().await?;
            let s = stats
                .iter()
                .find(|s| s.consumer.id == consumer.id)
                .expect("stats of the consumer");
            seen = s.stats.last_keyframe_size();
            if seen == Some(want) {
                return Ok::<_, BotError>(());
            }
            let n = t.state().received(consumer.ssrc);
            t.wait_for("next packet", WAIT, |st| st.received(consumer.ssrc) > n)
                .await?;
        }
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("waiting for {want:?} keyframes: {e}"),
        Err(_) => panic!("no {want:?} keyframe within {WAIT:?}; last keyframe {seen:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_producer_top_layer_then_preferred_lowest() {
    bounded(async {
        let node = TestNode::start().await;
        let mut o = publisher(node.bot("sim", "cam"), false, true);
        o.simulcast = Some(3);
        let cam = join(o).await;
        let mut viewer = join(subscriber(node.bot("sim", "viewer"))).await;

        // The producer announced three encodings, one SSRC each.
        let p = cam
            .producer(MediaKind::Video)
            .expect("video producer")
            .clone();
        assert_eq!(p.ssrcs.len(), 3, "{p:?}");
        assert_eq!(p.ssrc, p.ssrcs[0]);

        viewer
            .wait_consumers(1, WAIT)
            .await
            .expect("viewer consumes the camera");
        let c = consumer_of(&viewer, "cam", MediaKind::Video);

        // The top layer arrives: nothing limits the bandwidth on loopback.
        wait_keyframe_size(&viewer, &c, (640, 480)).await;

        // The node receives all three layers, lowest first with their rids and SSRCs.
        let stats = cam
            .producer_stats(MediaKind::Video)
            .await
            .expect("getProducerStats");
        let layers = stats.as_array().expect("an array of encodings");
        assert_eq!(layers.len(), 3, "{stats}");
        for (i, l) in layers.iter().enumerate() {
            assert_eq!(l["rid"], format!("r{i}"), "{stats}");
            assert_eq!(l["ssrc"], p.ssrcs[i], "{stats}");
            assert!(
                l["packetCount"].as_u64().unwrap_or(0) > 0,
                "layer {i} not received: {stats}"
            );
        }

        // Asking for the lowest layer: the node switches at an r0 keyframe.
        viewer
            .set_consumer_preferred_layers(&c.id, 0, None)
            .await
            .expect("setConsumerPreferredLayers");
        wait_keyframe_size(&viewer, &c, (160, 120)).await;

        // One stream the whole time, no decryption trouble, keyframes on request.
        let st = viewer.recv_transport().expect("consuming").state();
        assert_eq!(st.srtp_errors, 0, "{st:?}");
        assert_eq!(st.unknown_ssrc, 0, "{st:?}");
        let snap = viewer.stats().await.expect("stats")[0]
            .stats
            .snapshot(Instant::now());
        assert!(snap.keyframes >= 2, "{snap}");
        assert!(snap.loss_fraction() < 0.05, "{snap}");
        let sent = cam.send_transport().expect("sending").state();
        assert_eq!(sent.send_errors, 0, "{sent:?}");
        // The switches were made on keyframes the node asked the layers for (PLI/FIR naming
        // the layer's SSRC), not only on periodic ones.
        assert!(sent.keyframe_requests >= 1, "{sent:?}");

        cam.close().await;
        viewer.close().await;
        node.stop().await;
    })
    .await;
}
