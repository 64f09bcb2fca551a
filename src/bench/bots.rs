//! Bots for the benchmarks: joining N consumer bots a few at a time, and waiting until a
//! consumer receives media.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::bot::client::{Bot, BotOptions, StreamStats};

/// How long joining a bot, its consumers appearing and their first media may take.
pub const SETUP_WAIT: Duration = Duration::from_secs(30);
/// Packets every consumed stream receives before a bot counts as receiving.
pub const FIRST_PACKETS: u64 = 10;
/// Bots joining at once.
pub const JOIN_CONCURRENCY: usize = 10;

/// Joins one bot within [`SETUP_WAIT`].
pub async fn join_bot(opts: BotOptions) -> Result<Bot> {
    let peer = opts.peer_id.clone();
    tokio::time::timeout(SETUP_WAIT, Bot::join(opts))
        .await
        .with_context(|| format!("bot {peer} joining timed out"))?
        .with_context(|| format!("bot {peer} joining"))
}

/// Joins `n` consumer bots (`consumer-000`, ...; nothing produced) to `room`, at most
/// [`JOIN_CONCURRENCY`] at a time, offering only `profile` for SRTP if given; in join order.
pub async fn join_consumers(
    url: &str,
    room: &str,
    n: usize,
    profile: Option<crate::srtp::Profile>,
) -> Result<Vec<Bot>> {
    let mut set = JoinSet::new();
    let mut bots: Vec<Option<Bot>> = (0..n).map(|_| None).collect();
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < JOIN_CONCURRENCY {
            let mut o = BotOptions::new(url, room, &format!("consumer-{next:03}"));
            o.audio = false;
            o.video = false;
            o.consume = true;
            o.srtp_profile = profile;
            let i = next;
            set.spawn(async move { (i, join_bot(o).await) });
            next += 1;
        }
        if let Some(r) = set.join_next().await {
            let (i, bot) = r.context("join task")?;
            bots[i] = Some(bot?);
        }
    }
    Ok(bots.into_iter().flatten().collect())
}

/// Waits until `bot` has `consumers` consumers and received [`FIRST_PACKETS`] on each.
pub async fn wait_media(bot: &mut Bot, consumers: usize) -> Result<()> {
    let streams = bot
        .wait_consumers(consumers, SETUP_WAIT)
        .await
        .with_context(|| format!("{} waiting for {consumers} consumers", bot.peer_id()))?;
    let t = bot
        .recv_transport()
        .context("consumer without a receiving transport")?;
    let ssrcs: Vec<u32> = streams.iter().map(|s| s.ssrc).collect();
    t.wait_for("first media", SETUP_WAIT, |s| {
        ssrcs.iter().all(|&ssrc| s.received(ssrc) >= FIRST_PACKETS)
    })
    .await
    .with_context(|| format!("{} waiting for media", bot.peer_id()))?;
    Ok(())
}

/// Every consumer bot's stream statistics, and the RTP packets their receiving transports got
/// in all (read at a window boundary).
pub async fn consumer_stats(consumers: &[Bot]) -> Result<(Vec<Vec<StreamStats>>, u64)> {
    let mut stats = Vec::with_capacity(consumers.len());
    let mut received = 0;
    for c in consumers {
        stats.push(c.stats().await.context("consumer statistics")?);
        received += c.recv_transport().map_or(0, |t| t.state().rtp_received);
    }
    Ok((stats, received))
}
