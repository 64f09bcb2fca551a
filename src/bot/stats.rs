//! Receive statistics of the bot: one [`RecvStats`] per received SSRC computes packets,
//! expected and lost (RFC 3550 A.3 extended sequence numbers), interarrival jitter
//! (RFC 3550 A.8), one-way latency from the probes written by [`super::media`], bitrate,
//! keyframes (VP8) and completed frames (marker bits). Packets arrive parsed by the crate's one
//! RTP parser, [`crate::router::seq::RtpView`].
//!
//! The caller routes packets by SSRC, decrypts them, and passes `now` plus its wall clock in
//! microseconds since the UNIX epoch; nothing here reads a clock. One-way latency is the
//! receiver's wall clock minus the sender's, so it is only meaningful when both clocks are
//! synchronised (same host, or NTP/PTP); negative samples are kept, not hidden.
//!
//! Memory per stream is fixed: a ring of the last [`OWD_WINDOW`] latency samples and
//! [`RATE_BUCKETS`] bitrate buckets. Percentiles sort a scratch copy per snapshot, never per
//! packet.

use std::fmt;
use std::time::{Duration, Instant};

use super::media::{parse_vp8, read_probe, OPUS_CLOCK_RATE, VP8_CLOCK_RATE};
use crate::router::seq::RtpView;
use crate::timing::BOT_RATE_BUCKET;

/// Number of most recent one-way latency samples kept per stream.
pub const OWD_WINDOW: usize = 1024;
/// Interarrival gaps at least this long are remembered (see [`RecvStats::long_gaps`]): twice
/// the packet interval of 20 ms audio.
pub const LONG_GAP: Duration = Duration::from_millis(40);
/// How many long gaps are remembered per stream (the latest ones are kept; the list grows
/// only when gaps happen).
pub const MAX_LONG_GAPS: usize = 4096;
/// Width of the arrival histogram's buckets (see [`RecvStats::export`]).
pub const ARRIVAL_BUCKET: Duration = Duration::from_millis(100);
/// Buckets kept at most (an hour): the histogram stops growing after that.
pub const MAX_ARRIVAL_BUCKETS: usize = 36_000;
/// Number of bitrate buckets: the "recent" bitrate covers `BOT_RATE_BUCKET * RATE_BUCKETS` (2 s).
pub const RATE_BUCKETS: usize = 20;

/// What a received stream carries; decides which payload format is inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Opus audio.
    Opus,
    /// VP8 video: keyframes are detected from the payload descriptor and header.
    Vp8,
    /// Other audio codec: counted, not inspected.
    OtherAudio,
    /// Other video codec: counted, frames by marker bits, keyframes not detected.
    OtherVideo,
}

impl Codec {
    /// `"audio"` or `"video"`.
    pub fn kind(self) -> &'static str {
        match self {
            Codec::Opus | Codec::OtherAudio => "audio",
            Codec::Vp8 | Codec::OtherVideo => "video",
        }
    }

    /// The fixed clock rate of the codec, if it has one.
    pub fn clock_rate(self) -> Option<u32> {
        match self {
            Codec::Opus => Some(OPUS_CLOCK_RATE),
            Codec::Vp8 => Some(VP8_CLOCK_RATE),
            Codec::OtherAudio | Codec::OtherVideo => None,
        }
    }

    fn is_video(self) -> bool {
        self.kind() == "video"
    }
}

/// Statistics of one received RTP stream (one SSRC).
#[derive(Debug, Clone)]
pub struct RecvStats {
    ssrc: u32,
    codec: Codec,
    clock_rate: u32,
    first_arrival: Option<Instant>,
    last_arrival: Option<Instant>,
    received: u64,
    bytes: u64,
    /// Lowest and highest extended sequence numbers seen.
    base_ext: i64,
    max_ext: i64,
    reordered: u64,
    /// RFC 3550 A.8 state, in RTP ticks.
    jitter: f64,
    last_transit: Option<u32>,
    owd: Box<[i64; OWD_WINDOW]>,
    owd_len: usize,
    owd_next: usize,
    probes: u64,
    /// (bucket index since first arrival, bytes).
    rate: [(u64, u64); RATE_BUCKETS],
    keyframes: u64,
    /// Arrival of the first packet of the first VP8 keyframe.
    first_keyframe: Option<Instant>,
    /// Picture size of the last VP8 keyframe (which simulcast layer arrives).
    last_keyframe_size: Option<(u16, u16)>,
    frames: u64,
    /// (arrival that ended the gap, gap length) of gaps of at least [`LONG_GAP`].
    long_gaps: std::collections::VecDeque<(Instant, Duration)>,
    /// Packets per [`ARRIVAL_BUCKET`] since the first arrival (at most
    /// [`MAX_ARRIVAL_BUCKETS`]).
    arrivals: Vec<u32>,
}

impl RecvStats {
    /// Statistics for `ssrc`; `clock_rate` is the negotiated RTP clock rate (use
    /// [`Codec::clock_rate`] for Opus/VP8). A zero clock rate disables jitter.
    pub fn new(ssrc: u32, codec: Codec, clock_rate: u32) -> Self {
        Self {
            ssrc,
            codec,
            clock_rate,
            first_arrival: None,
            last_arrival: None,
            received: 0,
            bytes: 0,
            base_ext: 0,
            max_ext: 0,
            reordered: 0,
            jitter: 0.0,
            last_transit: None,
            owd: Box::new([0; OWD_WINDOW]),
            owd_len: 0,
            owd_next: 0,
            probes: 0,
            rate: [(0, 0); RATE_BUCKETS],
            keyframes: 0,
            first_keyframe: None,
            last_keyframe_size: None,
            frames: 0,
            long_gaps: std::collections::VecDeque::new(),
            arrivals: Vec::new(),
        }
    }

    /// The SSRC these statistics are for.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Width and height of the last VP8 keyframe received (from its payload header, RFC 6386
    /// §9.1): tells which simulcast layer a consumer gets.
    pub fn last_keyframe_size(&self) -> Option<(u16, u16)> {
        self.last_keyframe_size
    }

    /// When the last packet arrived (for stall detection).
    pub fn last_arrival(&self) -> Option<Instant> {
        self.last_arrival
    }

    /// Interarrival gaps of at least [`LONG_GAP`], oldest first: when each ended and how long
    /// it was (the latest [`MAX_LONG_GAPS`]). A media outage shows up here with its length.
    pub fn long_gaps(&self) -> impl Iterator<Item = (Instant, Duration)> + '_ {
        self.long_gaps.iter().copied()
    }

    /// The longest interarrival gap that ended at or after `since`, if one of at least
    /// [`LONG_GAP`] did (shorter gaps are not tracked).
    pub fn longest_gap_since(&self, since: Instant) -> Option<Duration> {
        self.long_gaps
            .iter()
            .filter(|(end, _)| *end >= since)
            .map(|(_, gap)| *gap)
            .max()
    }

    /// Accounts one received packet. `now` is its arrival time, `wall_us` the receiver's wall
    /// clock in microseconds since the UNIX epoch. The caller has checked `pkt.ssrc()`.
    pub fn on_packet(&mut self, now: Instant, wall_us: u64, pkt: &RtpView<impl AsRef<[u8]>>) {
        let first = *self.first_arrival.get_or_insert(now);
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last);
            if gap >= LONG_GAP {
                if self.long_gaps.len() == MAX_LONG_GAPS {
                    self.long_gaps.pop_front();
                }
                self.long_gaps.push_back((now, gap));
            }
        }
        self.last_arrival = Some(now);
        let bucket = now.saturating_duration_since(first).as_nanos() / ARRIVAL_BUCKET.as_nanos();
        if let Ok(b) = usize::try_from(bucket) {
            if b < MAX_ARRIVAL_BUCKETS {
                if self.arrivals.len() <= b {
                    self.arrivals.resize(b + 1, 0);
                }
                self.arrivals[b] = self.arrivals[b].saturating_add(1);
            }
        }
        self.received += 1;
        self.bytes += pkt.len() as u64;
        self.track_seq(pkt.sequence_number());
        self.track_jitter(now.saturating_duration_since(first), pkt.timestamp());

        let idx = bucket_index(now.saturating_duration_since(first));
        let slot = &mut self.rate[(idx % RATE_BUCKETS as u64) as usize];
        if slot.0 != idx {
            *slot = (idx, 0);
        }
        slot.1 += pkt.len() as u64;

        if let Some(probe) = read_probe(pkt.payload()) {
            let owd = i128::from(wall_us) - i128::from(probe.wall_us);
            self.owd[self.owd_next] = owd.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
            self.owd_next = (self.owd_next + 1) % OWD_WINDOW;
            self.owd_len = (self.owd_len + 1).min(OWD_WINDOW);
            self.probes += 1;
        }
        if self.codec == Codec::Vp8 {
            let header = parse_vp8(pkt.payload()).and_then(|v| v.frame_header);
            let key = header.is_some_and(|h| h.keyframe);
            if let Some(size) = header.and_then(|h| h.size) {
                self.last_keyframe_size = Some(size);
            }
            self.keyframes += u64::from(key);
            if key && self.first_keyframe.is_none() {
                self.first_keyframe = Some(now);
            }
        }
        if self.codec.is_video() && pkt.marker() {
            self.frames += 1;
        }
    }

    /// RFC 3550 A.1-style extension: the sequence number is placed within ±32768 of the highest
    /// seen, so wraparound and reordering are handled; a packet older than the first lowers the
    /// base. A restart jumping by more than 32767 is read as very late packets.
    fn track_seq(&mut self, seq: u16) {
        if self.received == 1 {
            self.base_ext = i64::from(seq);
            self.max_ext = i64::from(seq);
            return;
        }
        let delta = i64::from(seq.wrapping_sub(self.max_ext as u16) as i16);
        let ext = self.max_ext + delta;
        if delta > 0 {
            self.max_ext = ext;
        } else if delta < 0 {
            self.reordered += 1;
        }
        self.base_ext = self.base_ext.min(ext);
    }

    /// RFC 3550 A.8 with the arrival time in RTP ticks since the first packet.
    fn track_jitter(&mut self, since_first: Duration, rtp_ts: u32) {
        if self.clock_rate == 0 {
            return;
        }
        let arrival = (since_first.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(last) = self.last_transit {
            let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Current statistics; `now` bounds the bitrate windows.
    pub fn snapshot(&self, now: Instant) -> StatsSnapshot {
        let expected = if self.received == 0 {
            0
        } else {
            (self.max_ext - self.base_ext + 1) as u64
        };
        let elapsed = self
            .first_arrival
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f));
        let mut scratch = self.owd[..self.owd_len].to_vec();
        StatsSnapshot {
            ssrc: self.ssrc,
            codec: self.codec,
            received: self.received,
            expected,
            lost: expected as i64 - self.received as i64,
            reordered: self.reordered,
            jitter_ms: if self.clock_rate == 0 {
                0.0
            } else {
                self.jitter * 1000.0 / f64::from(self.clock_rate)
            },
            owd: Percentiles::of(&mut scratch),
            probes: self.probes,
            bytes: self.bytes,
            kbps: self.recent_kbps(elapsed),
            avg_kbps: kbps(self.bytes, elapsed),
            keyframes: self.keyframes,
            last_keyframe_width: self.last_keyframe_size.map(|(w, _)| w),
            last_keyframe_height: self.last_keyframe_size.map(|(_, h)| h),
            frames: self.frames,
            duration: elapsed,
        }
    }

    fn recent_kbps(&self, elapsed: Duration) -> f64 {
        let cur = bucket_index(elapsed);
        let lo = cur.saturating_sub(RATE_BUCKETS as u64 - 1);
        let bytes: u64 = self
            .rate
            .iter()
            .filter(|(i, _)| (lo..=cur).contains(i))
            .map(|(_, b)| b)
            .sum();
        let window_start = BOT_RATE_BUCKET * u32::try_from(lo).unwrap_or(u32::MAX);
        kbps(bytes, elapsed.saturating_sub(window_start))
    }

    /// Appends the latency window to `out` (for [`Totals`]).
    fn owd_samples(&self, out: &mut Vec<i64>) {
        out.extend_from_slice(&self.owd[..self.owd_len]);
    }

    /// Probes found since the start: the number of one-way latency samples ever taken. Read it
    /// before and after an interval to take that interval's samples with
    /// [`Self::recent_latency_us`].
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// The stream's statistics for a machine-readable report: every instant is turned into
    /// wall-clock milliseconds since the UNIX epoch through the pair (`now`, `wall_now_ms`),
    /// which the caller reads together.
    pub fn export(&self, now: Instant, wall_now_ms: u64) -> StreamExport {
        let wall = |t: Instant| -> u64 {
            let ago = now.saturating_duration_since(t).as_millis();
            wall_now_ms.saturating_sub(u64::try_from(ago).unwrap_or(u64::MAX))
        };
        let snap = self.snapshot(now);
        StreamExport {
            ssrc: self.ssrc,
            kind: self.codec.kind().to_owned(),
            received: snap.received,
            expected: snap.expected,
            lost: snap.lost,
            bytes: snap.bytes,
            avg_kbps: snap.avg_kbps,
            frames: snap.frames,
            keyframes: snap.keyframes,
            first_packet_ms: self.first_arrival.map(wall),
            first_keyframe_ms: self.first_keyframe.map(wall),
            last_packet_ms: self.last_arrival.map(wall),
            owd_p50_us: snap.owd.map(|p| p.p50),
            owd_p95_us: snap.owd.map(|p| p.p95),
            owd_samples: snap.owd.map_or(0, |p| p.samples),
            long_gaps: self
                .long_gaps
                .iter()
                .map(|&(end, gap)| GapExport {
                    end_ms: wall(end),
                    gap_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                })
                .collect(),
            arrivals_100ms: self.arrivals.clone(),
            last_keyframe_width: snap.last_keyframe_width,
            last_keyframe_height: snap.last_keyframe_height,
        }
    }

    /// Appends the `n` most recent one-way latency samples (µs, receiver wall clock minus the
    /// probe's), oldest first. Only the last [`OWD_WINDOW`] are kept, so fewer are appended
    /// when `n` is larger than that or than the samples taken so far.
    pub fn recent_latency_us(&self, n: usize, out: &mut Vec<i64>) {
        let n = n.min(self.owd_len);
        let start = (self.owd_next + OWD_WINDOW - n) % OWD_WINDOW;
        out.extend((0..n).map(|i| self.owd[(start + i) % OWD_WINDOW]));
    }
}

fn bucket_index(since_first: Duration) -> u64 {
    (since_first.as_nanos() / BOT_RATE_BUCKET.as_nanos()) as u64
}

fn kbps(bytes: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        bytes as f64 * 8.0 / over.as_secs_f64() / 1000.0
    }
}

/// One received stream in a bot's JSON report (`pipemesh bot --json-out`); times are
/// wall-clock milliseconds since the UNIX epoch, latencies microseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamExport {
    /// SSRC the node sends.
    pub ssrc: u32,
    /// `audio` or `video`.
    pub kind: String,
    /// Packets received, duplicates included.
    pub received: u64,
    /// Highest minus lowest extended sequence number, plus one.
    pub expected: u64,
    /// `expected - received` (negative when duplicates outnumber losses).
    pub lost: i64,
    /// RTP bytes received.
    pub bytes: u64,
    /// Bitrate since the first packet, kbit/s.
    pub avg_kbps: f64,
    /// Video frames completed (marker bits).
    pub frames: u64,
    /// VP8 keyframes seen.
    pub keyframes: u64,
    /// Arrival of the first packet.
    pub first_packet_ms: Option<u64>,
    /// Arrival of the first packet of the first VP8 keyframe.
    pub first_keyframe_ms: Option<u64>,
    /// Arrival of the last packet.
    pub last_packet_ms: Option<u64>,
    /// Median one-way latency over the last [`OWD_WINDOW`] probes.
    pub owd_p50_us: Option<i64>,
    /// 95th percentile of the same.
    pub owd_p95_us: Option<i64>,
    /// Samples behind the two.
    pub owd_samples: usize,
    /// Interarrival gaps of at least [`LONG_GAP`] (the latest [`MAX_LONG_GAPS`]).
    pub long_gaps: Vec<GapExport>,
    /// Packets received per [`ARRIVAL_BUCKET`] (100 ms), the first bucket starting at
    /// `first_packet_ms`.
    pub arrivals_100ms: Vec<u32>,
    /// Width of the last VP8 keyframe (which simulcast layer arrives).
    #[serde(default)]
    pub last_keyframe_width: Option<u16>,
    /// Height of the last VP8 keyframe.
    #[serde(default)]
    pub last_keyframe_height: Option<u16>,
}

/// An interarrival gap in a [`StreamExport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GapExport {
    /// Arrival of the packet that ended the gap.
    pub end_ms: u64,
    /// Its length.
    pub gap_ms: u64,
}

/// Latency distribution over a window, in microseconds (negative if clocks are skewed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Smallest sample.
    pub min: i64,
    /// Median (nearest rank).
    pub p50: i64,
    /// 95th percentile (nearest rank).
    pub p95: i64,
    /// Largest sample.
    pub max: i64,
    /// Number of samples.
    pub samples: usize,
}

impl Percentiles {
    /// Sorts `samples` in place and takes nearest-rank percentiles; `None` if empty.
    pub fn of(samples: &mut [i64]) -> Option<Self> {
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: usize| {
            samples
                .get((n * p).div_ceil(100).saturating_sub(1))
                .copied()
        };
        Some(Self {
            min: *samples.first()?,
            p50: rank(50)?,
            p95: rank(95)?,
            max: *samples.last()?,
            samples: n,
        })
    }
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// A point-in-time copy of one stream's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// SSRC of the stream.
    pub ssrc: u32,
    /// Codec of the stream.
    pub codec: Codec,
    /// Packets received, duplicates included.
    pub received: u64,
    /// Highest minus lowest extended sequence number, plus one.
    pub expected: u64,
    /// `expected - received`: negative when duplicates outnumber losses.
    pub lost: i64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// RFC 3550 interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// One-way latency over the last [`OWD_WINDOW`] probes.
    pub owd: Option<Percentiles>,
    /// Probes found since the start.
    pub probes: u64,
    /// RTP bytes received (headers included).
    pub bytes: u64,
    /// Bitrate over the last `BOT_RATE_BUCKET * RATE_BUCKETS`, kbit/s.
    pub kbps: f64,
    /// Bitrate since the first packet, kbit/s.
    pub avg_kbps: f64,
    /// VP8 keyframes seen.
    pub keyframes: u64,
    /// Width of the last VP8 keyframe.
    pub last_keyframe_width: Option<u16>,
    /// Height of the last VP8 keyframe.
    pub last_keyframe_height: Option<u16>,
    /// Video frames completed (marker bits).
    pub frames: u64,
    /// Time since the first packet.
    pub duration: Duration,
}

impl StatsSnapshot {
    /// Lost packets, clamped at zero for display.
    pub fn lost_clamped(&self) -> u64 {
        self.lost.max(0) as u64
    }

    /// Lost packets as a fraction of expected, in 0..=1.
    pub fn loss_fraction(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost_clamped() as f64 / self.expected as f64
        }
    }
}

/// Writes ` owd p50=…ms p95=…ms` or ` owd -`.
fn fmt_owd(f: &mut fmt::Formatter<'_>, owd: &Option<Percentiles>) -> fmt::Result {
    match owd {
        Some(p) => write!(
            f,
            " owd p50={:.1}ms p95={:.1}ms max={:.1}ms",
            ms(p.p50),
            ms(p.p95),
            ms(p.max)
        ),
        None => write!(f, " owd -"),
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ssrc={} kind={} pkts={} lost={}({:.2}%) jitter={:.1}ms",
            self.ssrc,
            self.codec.kind(),
            self.received,
            self.lost_clamped(),
            self.loss_fraction() * 100.0,
            self.jitter_ms
        )?;
        fmt_owd(f, &self.owd)?;
        write!(f, " kbps={:.1}", self.kbps)?;
        if self.codec.is_video() {
            write!(f, " frames={} kf={}", self.frames, self.keyframes)?;
            if let (Some(w), Some(h)) = (self.last_keyframe_width, self.last_keyframe_height) {
                write!(f, " size={w}x{h}")?;
            }
        }
        Ok(())
    }
}

/// Aggregate over all streams, for the bot's final summary line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Number of streams.
    pub streams: usize,
    /// Packets received.
    pub received: u64,
    /// Packets expected.
    pub expected: u64,
    /// Sum of each stream's clamped loss.
    pub lost: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Largest jitter of any stream, ms.
    pub max_jitter_ms: f64,
    /// Latency over the union of every stream's window.
    pub owd: Option<Percentiles>,
    /// Sum of the streams' average bitrates, kbit/s.
    pub avg_kbps: f64,
    /// Keyframes seen.
    pub keyframes: u64,
    /// Video frames completed.
    pub frames: u64,
}

impl Totals {
    /// Aggregates `streams` at `now`.
    pub fn collect<'a>(streams: impl IntoIterator<Item = &'a RecvStats>, now: Instant) -> Self {
        let mut t = Totals::default();
        let mut samples = Vec::new();
        for s in streams {
            let snap = s.snapshot(now);
            t.streams += 1;
            t.received += snap.received;
            t.expected += snap.expected;
            t.lost += snap.lost_clamped();
            t.bytes += snap.bytes;
            t.max_jitter_ms = t.max_jitter_ms.max(snap.jitter_ms);
            t.avg_kbps += snap.avg_kbps;
            t.keyframes += snap.keyframes;
            t.frames += snap.frames;
            s.owd_samples(&mut samples);
        }
        t.owd = Percentiles::of(&mut samples);
        t
    }

    /// Lost packets as a fraction of expected, in 0..=1.
    pub fn loss_fraction(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total streams={} pkts={} lost={}({:.2}%) jitter_max={:.1}ms",
            self.streams,
            self.received,
            self.lost,
            self.loss_fraction() * 100.0,
            self.max_jitter_ms
        )?;
        fmt_owd(f, &self.owd)?;
        write!(
            f,
            " kbps={:.1} frames={} kf={}",
            self.avg_kbps, self.frames, self.keyframes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::media::{
        AudioConfig, AudioSource, HeaderExtensions, TransportSeq, VideoConfig, VideoSource,
    };
    use crate::router::seq::RtpError;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// A bare RTP packet with a non-probe payload.
    fn rtp(seq: u16, ts: u32, marker: bool) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0] = 0x80;
        b[1] = (u8::from(marker) << 7) | 111;
        b[2..4].copy_from_slice(&seq.to_be_bytes());
        b[4..8].copy_from_slice(&ts.to_be_bytes());
        b[8..12].copy_from_slice(&7u32.to_be_bytes());
        b
    }

    fn feed_seqs(seqs: &[u16]) -> StatsSnapshot {
        let t0 = Instant::now();
        let mut s = RecvStats::new(7, Codec::Opus, 48_000);
        for (i, &seq) in seqs.iter().enumerate() {
            let b = rtp(seq, 0, false);
            let t = t0 + Duration::from_millis(20 * i as u64);
            s.on_packet(t, 0, &RtpView::parse(&b).unwrap());
        }
        s.snapshot(t0 + Duration::from_secs(1))
    }

    #[test]
    fn loss_with_gaps() {
        let seqs: Vec<u16> = (0..100).filter(|s| s % 10 != 3).collect();
        let s = feed_seqs(&seqs);
        assert_eq!((s.received, s.expected, s.lost), (90, 100, 10));
        assert!((s.loss_fraction() - 0.1).abs() < 1e-9);
        assert!(s.to_string().contains("lost=10(10.00%)"), "{s}");
    }

    #[test]
    fn long_interarrival_gaps_are_recorded() {
        let t0 = Instant::now();
        let mut s = RecvStats::new(7, Codec::Opus, 48_000);
        // 20 ms apart, then a 39 ms gap (not long), then 60 ms and 350 ms gaps.
        let times = [0u64, 20, 40, 79, 99, 159, 509, 529];
        for (i, ms) in times.iter().enumerate() {
            let b = rtp(i as u16, 0, false);
            s.on_packet(
                t0 + Duration::from_millis(*ms),
                0,
                &RtpView::parse(&b).unwrap(),
            );
        }
        let ms = Duration::from_millis;
        assert_eq!(
            s.long_gaps().collect::<Vec<_>>(),
            [(t0 + ms(159), ms(60)), (t0 + ms(509), ms(350))]
        );
        assert_eq!(s.longest_gap_since(t0), Some(ms(350)));
        assert_eq!(s.longest_gap_since(t0 + ms(160)), Some(ms(350)));
        assert_eq!(s.longest_gap_since(t0 + ms(510)), None);
    }

    #[test]
    fn export_in_wall_clock_with_arrival_histogram() {
        let t0 = Instant::now();
        let mut s = RecvStats::new(7, Codec::Opus, 48_000);
        // Packets at 0, 20, 40 ms, then a 500 ms outage, then 560 ms.
        for (i, ms) in [0u64, 20, 40, 540, 560].iter().enumerate() {
            let b = rtp(i as u16, 0, false);
            let t = t0 + Duration::from_millis(*ms);
            s.on_packet(t, 0, &RtpView::parse(&b).unwrap());
        }
        // Read at t0 + 1 s, when the wall clock said 10 000 ms.
        let e = s.export(t0 + Duration::from_secs(1), 10_000);
        assert_eq!(e.kind, "audio");
        assert_eq!((e.received, e.expected, e.lost), (5, 5, 0));
        assert_eq!(e.first_packet_ms, Some(9_000));
        assert_eq!(e.last_packet_ms, Some(9_560));
        assert_eq!(e.first_keyframe_ms, None);
        assert_eq!(
            e.long_gaps,
            [GapExport {
                end_ms: 9_540,
                gap_ms: 500
            }]
        );
        assert_eq!(e.arrivals_100ms, [3, 0, 0, 0, 0, 2]);
        // The JSON round-trips with camelCase names.
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["firstPacketMs"], 9_000);
        assert_eq!(v["arrivals100ms"][5], 2);
        assert_eq!(serde_json::from_value::<StreamExport>(v).unwrap(), e);
    }

    #[test]
    fn reordering_and_duplicates() {
        let s = feed_seqs(&[10, 11, 13, 12, 14, 14, 15, 15]);
        assert_eq!((s.received, s.expected, s.lost), (8, 6, -2));
        assert_eq!(s.lost_clamped(), 0);
        assert_eq!(s.reordered, 1);
        assert!(s.to_string().contains("lost=0(0.00%)"), "{s}");
        // A late first packet lowers the base instead of counting as a huge gap.
        let s = feed_seqs(&[5, 4, 6, 8]);
        assert_eq!((s.received, s.expected, s.lost, s.reordered), (4, 5, 1, 1));
    }

    #[test]
    fn wraparound_at_65535() {
        // 65530..=65535, 0..=5 with 1 lost and 65535 arriving after 0.
        let s = feed_seqs(&[65530, 65531, 65532, 65533, 65534, 0, 65535, 2, 3, 4, 5]);
        assert_eq!(
            (s.received, s.expected, s.lost, s.reordered),
            (11, 12, 1, 1)
        );
        // Several wraps without loss.
        let seqs: Vec<u16> = (0..200_000u32).map(|i| (i + 60_000) as u16).collect();
        let s = feed_seqs(&seqs);
        assert_eq!((s.expected, s.lost), (200_000, 0));
    }

    #[test]
    fn jitter_periodic_is_zero_and_jittered_is_positive() {
        let t0 = Instant::now();
        let mut flat = RecvStats::new(7, Codec::Opus, 48_000);
        let mut bumpy = RecvStats::new(7, Codec::Opus, 48_000);
        for i in 0..500u32 {
            let b = rtp(i as u16, 1_000_000 + i * 960, false);
            let p = RtpView::parse(&b).unwrap();
            let t = t0 + Duration::from_millis(20 * u64::from(i));
            flat.on_packet(t, 0, &p);
            // Every other packet 5 ms late: |D| = 5 ms each step, jitter converges to 5 ms.
            bumpy.on_packet(t + Duration::from_millis(5 * u64::from(i % 2)), 0, &p);
        }
        let end = t0 + Duration::from_secs(10);
        let flat = flat.snapshot(end).jitter_ms;
        let bumpy = bumpy.snapshot(end).jitter_ms;
        assert!(flat < 0.05, "{flat}");
        assert!((4.5..=5.1).contains(&bumpy), "{bumpy}");
    }

    #[test]
    fn audio_round_trip_latency_percentiles() {
        let mut rng = StdRng::seed_from_u64(9);
        let t0 = Instant::now();
        let mut cfg = AudioConfig::new(0xa0d10);
        cfg.extensions = HeaderExtensions {
            mid: Some((1, "0".into())),
            rid: None,
            transport_cc: Some(5),
            abs_send_time: None,
        };
        let mut src = AudioSource::new(cfg, t0, &mut rng).unwrap();
        let mut stats = RecvStats::new(0xa0d10, Codec::Opus, OPUS_CLOCK_RATE);
        let mut tcc = TransportSeq::new(0);
        let mut buf = [0u8; 1500];
        let wall0 = 1_700_000_000_000_000u64;
        for i in 0..100u64 {
            let t = src.next_packet_time();
            let wall = wall0 + (t - t0).as_micros() as u64;
            let n = src.poll(t, wall, &mut tcc, &mut buf).unwrap().unwrap();
            let p = RtpView::parse(&buf[..n]).unwrap();
            assert_eq!(p.extension(1), Some(&b"0"[..]));
            assert_eq!(p.extension(5), Some(&(i as u16).to_be_bytes()[..]));
            assert_eq!(p.marker(), i == 0);
            // Delays 1..=100 ms; the latency does not change arrival pacing here.
            let delay = (i * 37 % 100 + 1) * 1000;
            stats.on_packet(t, wall + delay, &p);
        }
        let s = stats.snapshot(t0 + Duration::from_secs(2));
        assert_eq!((s.received, s.lost, s.probes), (100, 0, 100));
        let owd = s.owd.unwrap();
        assert_eq!(
            (owd.min, owd.p50, owd.p95, owd.max, owd.samples),
            (1000, 50_000, 95_000, 100_000, 100)
        );
        assert!(s.jitter_ms < 0.05);
        assert!(s.to_string().contains("owd p50=50.0ms p95=95.0ms"), "{s}");
        assert!(!s.to_string().contains("frames="));
    }

    #[test]
    fn video_round_trip_keyframes_frames_bitrate() {
        let mut rng = StdRng::seed_from_u64(10);
        let t0 = Instant::now();
        let mut src = VideoSource::new(VideoConfig::new(0x71de0), t0, &mut rng).unwrap();
        let mut stats = RecvStats::new(0x71de0, Codec::Vp8, VP8_CLOCK_RATE);
        let mut tcc = TransportSeq::new(0);
        let mut buf = [0u8; 1500];
        let wall0 = 1_700_000_000_000_000u64;
        let end = t0 + Duration::from_millis(4990);
        let mut sent = 0u64;
        let mut dropped_markers = 0;
        while src.next_packet_time() <= end {
            let t = src.next_packet_time();
            let wall = wall0 + (t - t0).as_micros() as u64;
            while let Some(n) = src.poll(t, wall, &mut tcc, &mut buf).unwrap() {
                sent += 1;
                // Drop one packet in 50 (never a frame's first, to keep keyframe counts exact).
                let p = RtpView::parse(&buf[..n]).unwrap();
                if sent.is_multiple_of(50) && parse_vp8(p.payload()).unwrap().frame_header.is_none()
                {
                    dropped_markers += u64::from(p.marker());
                    continue;
                }
                stats.on_packet(t + Duration::from_millis(2), wall + 2_000, &p);
            }
        }
        let s = stats.snapshot(end);
        assert_eq!(s.keyframes, 3);
        assert_eq!(
            (s.last_keyframe_width, s.last_keyframe_height),
            (Some(640), Some(480))
        );
        assert_eq!(s.frames, 150 - dropped_markers);
        assert!(s.lost > 0 && s.lost as u64 <= sent / 50);
        assert_eq!(s.expected, sent);
        let owd = s.owd.unwrap();
        assert_eq!((owd.min, owd.max), (2_000, 2_000));
        assert!((500.0..620.0).contains(&s.avg_kbps), "{}", s.avg_kbps);
        assert!((450.0..700.0).contains(&s.kbps), "{}", s.kbps);
        let line = s.to_string();
        assert!(line.starts_with("ssrc=466400 kind=video pkts="), "{line}");
        assert!(line.contains("kf=3 size=640x480"), "{line}");
    }

    /// The size of the last keyframe comes from its VP8 payload header: 3-byte frame tag,
    /// start code 9d 01 2a, then 14-bit width and height, little endian (the top two bits
    /// are scaling and are ignored). Interframes and other packets leave it as it is.
    #[test]
    fn last_keyframe_size_from_vp8_header() {
        fn vp8(seq: u16, payload: &[u8]) -> Vec<u8> {
            let mut b = rtp(seq, 0, true).to_vec();
            b[12..].copy_from_slice(&[0; 8]); // no probe
            b.truncate(12);
            b.extend_from_slice(payload);
            b
        }
        // Descriptor: X=1, S=1, PID=0; I=1; 15-bit PictureID.
        let desc = [0x90, 0x80, 0x80, 0x01];
        // Keyframe tag (P=0, show_frame), start code, 160 (scale 1) x 120 (scale 2).
        let key = |w: u16, h: u16| {
            let mut p = desc.to_vec();
            p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&w.to_le_bytes());
            p.extend_from_slice(&h.to_le_bytes());
            p.extend_from_slice(&[0xaa; 20]);
            p
        };
        let mut inter = desc.to_vec();
        inter.extend_from_slice(&[0x11, 0x02, 0x00, 0xaa, 0xbb]);
        let t0 = Instant::now();
        let mut s = RecvStats::new(7, Codec::Vp8, 90_000);
        assert_eq!(s.last_keyframe_size(), None);
        let feed = |s: &mut RecvStats, b: &[u8]| s.on_packet(t0, 0, &RtpView::parse(b).unwrap());
        feed(&mut s, &vp8(1, &inter));
        assert_eq!(s.last_keyframe_size(), None);
        feed(&mut s, &vp8(2, &key(160 | 0x4000, 120 | 0x8000)));
        assert_eq!(s.last_keyframe_size(), Some((160, 120)));
        feed(&mut s, &vp8(3, &inter));
        // A keyframe claim without the start code is not a keyframe.
        let mut bad = key(640, 480);
        bad[7] = 0x9c;
        feed(&mut s, &vp8(4, &bad));
        assert_eq!(s.last_keyframe_size(), Some((160, 120)));
        feed(&mut s, &vp8(5, &key(640, 480)));
        let snap = s.snapshot(t0);
        assert_eq!(snap.keyframes, 2);
        assert_eq!(
            (snap.last_keyframe_width, snap.last_keyframe_height),
            (Some(640), Some(480))
        );
    }

    #[test]
    fn latency_window_is_bounded_to_recent_samples() {
        let t0 = Instant::now();
        let mut s = RecvStats::new(1, Codec::Opus, 48_000);
        let mut b = [0u8; 12 + 1 + 16];
        b.copy_from_slice(&[&rtp(0, 0, false)[..12], &[0xf8], &[0u8; 16]].concat());
        for i in 0..3000u64 {
            b[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            let probe = crate::bot::media::Probe {
                wall_us: 1_000_000,
                frame: i as u32,
            };
            b[13..].copy_from_slice(&probe.encode());
            // Old samples have 1 s latency, the last 1024 have `i` µs.
            let recv = if i < 3000 - OWD_WINDOW as u64 {
                2_000_000
            } else {
                1_000_000 + i
            };
            s.on_packet(t0, recv, &RtpView::parse(&b).unwrap());
        }
        let owd = s.snapshot(t0).owd.unwrap();
        assert_eq!(owd.samples, OWD_WINDOW);
        assert_eq!((owd.min, owd.max), (3000 - OWD_WINDOW as i64, 2999));
    }

    #[test]
    fn recent_latency_samples_are_the_last_n_in_order() {
        let t0 = Instant::now();
        let mut s = RecvStats::new(1, Codec::Opus, 48_000);
        let mut out = Vec::new();
        s.recent_latency_us(5, &mut out);
        assert!(out.is_empty());
        let mut b = [0u8; 12 + 1 + 16];
        b.copy_from_slice(&[&rtp(0, 0, false)[..12], &[0xf8], &[0u8; 16]].concat());
        let total = OWD_WINDOW as u64 + 10;
        for i in 0..total {
            b[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            let probe = crate::bot::media::Probe {
                wall_us: 1_000_000,
                frame: i as u32,
            };
            b[13..].copy_from_slice(&probe.encode());
            s.on_packet(t0, 1_000_000 + i, &RtpView::parse(&b).unwrap());
            if i == 2 {
                assert_eq!(s.probes(), 3);
                s.recent_latency_us(10, &mut out);
                assert_eq!(out, [0, 1, 2]);
                out.clear();
            }
        }
        assert_eq!(s.probes(), total);
        // The ring has wrapped: the last 4 samples straddle its end.
        s.recent_latency_us(4, &mut out);
        let last = total as i64;
        assert_eq!(out, [last - 4, last - 3, last - 2, last - 1]);
        out.clear();
        s.recent_latency_us(usize::MAX, &mut out);
        assert_eq!(out.len(), OWD_WINDOW);
        assert_eq!((out[0], out[OWD_WINDOW - 1]), (10, last - 1));
    }

    /// The bot reads every received packet through the shared parser: a packet combining a
    /// CSRC, a two-byte extension block and padding is read as the statistics expect, its
    /// truncations are refused, and arbitrary bytes never panic the parser or the statistics.
    #[test]
    fn shared_rtp_view_feeds_stats_and_garbage_never_panics() {
        // CSRC count 1, extension (two-byte profile), padding 3.
        let mut b = vec![0xb1, 0x60, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9, 9, 9, 9];
        b.extend_from_slice(&[0x10, 0x00, 0, 1, 7, 2, 0xaa, 0xbb]);
        b.extend_from_slice(&[1, 2, 3, 0, 0, 3]);
        let p = RtpView::parse(&b[..]).unwrap();
        assert_eq!(
            (
                p.sequence_number(),
                p.timestamp(),
                p.ssrc(),
                p.payload_type()
            ),
            (1, 2, 3, 0x60)
        );
        assert_eq!(p.payload(), &[1, 2, 3]);
        assert_eq!(p.len(), b.len());
        assert_eq!(p.extension(7), Some(&[0xaa, 0xbb][..]));
        assert_eq!(p.extension(8), None);
        assert_eq!(
            RtpView::parse(&b[..11]).unwrap_err(),
            RtpError::TooShort(11)
        );
        assert_eq!(
            RtpView::parse(&b[..14]).unwrap_err(),
            RtpError::CsrcOverflow
        );
        assert_eq!(
            RtpView::parse(&b[..18]).unwrap_err(),
            RtpError::ExtensionOverflow
        );
        let mut bad = b.clone();
        *bad.last_mut().unwrap() = 0;
        assert_eq!(RtpView::parse(&bad[..]).unwrap_err(), RtpError::BadPadding);
        bad[0] = 0x40;
        assert_eq!(
            RtpView::parse(&bad[..]).unwrap_err(),
            RtpError::BadVersion(1)
        );
        // Random bytes never panic, nor do extension lookups or the statistics.
        let mut rng = StdRng::seed_from_u64(11);
        let mut stats = RecvStats::new(1, Codec::Vp8, 90_000);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut v: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
            if let Some(b0) = v.first_mut() {
                *b0 = (*b0 & 0x3f) | 0x80;
            }
            if let Ok(p) = RtpView::parse(&v[..]) {
                for id in 0..16 {
                    let _ = p.extension(id);
                }
                stats.on_packet(Instant::now(), 0, &p);
            }
        }
    }

    #[test]
    fn totals_aggregate_streams() {
        let t0 = Instant::now();
        let mut a = RecvStats::new(1, Codec::Opus, 48_000);
        let mut v = RecvStats::new(2, Codec::OtherVideo, 90_000);
        for i in 0..10u16 {
            let t = t0 + Duration::from_millis(u64::from(i) * 100);
            a.on_packet(t, 0, &RtpView::parse(&rtp(i * 2, 0, false)).unwrap());
            v.on_packet(t, 0, &RtpView::parse(&rtp(i, 0, true)).unwrap());
        }
        let t = Totals::collect([&a, &v], t0 + Duration::from_secs(1));
        assert_eq!((t.streams, t.received, t.expected, t.lost), (2, 20, 29, 9));
        assert_eq!((t.frames, t.keyframes, t.bytes), (10, 0, 400));
        assert_eq!(t.owd, None);
        assert!((t.avg_kbps - 3.2).abs() < 1e-9, "{}", t.avg_kbps);
        let line = t.to_string();
        assert!(
            line.starts_with("total streams=2 pkts=20 lost=9(31.03%)"),
            "{line}"
        );
        assert!(line.contains("owd -"), "{line}");
    }
}
