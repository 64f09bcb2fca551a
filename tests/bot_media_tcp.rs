//! Same as `bot_media_udp` over the node's TCP candidate (RFC 4571 framing both ways).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_audio_and_video_flow_both_ways() {
    bounded(exchange_media(true)).await;
}
