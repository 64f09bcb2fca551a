//! Two bots publish Opus and VP8 over UDP and each receives the other's streams through the
//! node: ICE, DTLS, SRTP both ways, RTP rewritten into the consumers' SSRCs.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_audio_and_video_flow_both_ways() {
    bounded(exchange_media(false)).await;
}
