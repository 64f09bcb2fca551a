//! The storage behind the labelled families of `/metrics`: relaxed atomics indexed by small
//! label enums, written on the hot path without locks or allocations and read by the
//! collector ([`super::collector`]) at scrape time. Label values are fixed `&'static str`s, so
//! no input can create a new series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::hist::AtomicHistogram;
use crate::edge::ice::Protocol;
use crate::signaling::protoo::METHODS;

/// Label `transport`: how packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// WebRTC over UDP (the shared RTC port).
    Udp,
    /// WebRTC over TCP (RFC 4571 framing on the shared RTC port).
    Tcp,
    /// QUIC pipe datagrams between nodes.
    Pipe,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 3] = [Kind::Udp, Kind::Tcp, Kind::Pipe];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
            Kind::Pipe => "pipe",
        }
    }

    /// The kind of a WebRTC tuple.
    pub fn of(p: Protocol) -> Kind {
        match p {
            Protocol::Udp => Kind::Udp,
            Protocol::Tcp => Kind::Tcp,
        }
    }
}

/// Label `direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by this node.
    In,
    /// Sent by this node.
    Out,
}

impl Direction {
    /// Both directions, in label order.
    pub const ALL: [Direction; 2] = [Direction::In, Direction::Out];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Upper bounds of `packet_size_bytes` (bytes): RTCP and STUN, audio, then video around the
/// usual 1,200-byte WebRTC packet and the 1,500-byte Ethernet MTU.
pub static PACKET_SIZE_BOUNDS: [u64; 9] = [64, 128, 256, 512, 1024, 1200, 1300, 1500, u64::MAX];
/// Upper bounds of `forwarding_latency_seconds` (nanoseconds): 5 µs to 100 ms.
pub static FORWARDING_LATENCY_BOUNDS: [u64; 14] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    u64::MAX,
];
/// Upper bounds of `signaling_request_duration_seconds` (nanoseconds): 100 µs to 5 s.
pub static SIGNALING_DURATION_BOUNDS: [u64; 13] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    5_000_000_000,
    u64::MAX,
];

/// Nanoseconds per second: the divisor that exports nanosecond histograms in seconds.
const NANOS: f64 = 1e9;

/// Packets and bytes per transport kind and direction, as one packet-size histogram each:
/// its count is the packets, its sum the bytes (two atomic adds per packet).
#[derive(Debug)]
pub struct Traffic {
    sizes: [[AtomicHistogram<9>; 2]; 3],
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            sizes: std::array::from_fn(|_| {
                std::array::from_fn(|_| AtomicHistogram::new(&PACKET_SIZE_BOUNDS, 1.0))
            }),
        }
    }
}

impl Traffic {
    /// One packet of `len` bytes.
    #[inline]
    pub fn observe(&self, kind: Kind, dir: Direction, len: usize) {
        self.sizes[kind as usize][dir as usize].observe(len as u64);
    }

    /// The size histogram of `kind` and `dir`.
    pub fn sizes(&self, kind: Kind, dir: Direction) -> &AtomicHistogram<9> {
        &self.sizes[kind as usize][dir as usize]
    }
}

/// Label `type` of `rtcp_feedback_total`: RTCP feedback exchanged with WebRTC clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Generic NACK (RFC 4585): missing packets.
    Nack,
    /// Picture Loss Indication: a keyframe request.
    Pli,
    /// Full Intra Request (RFC 5104): a keyframe request.
    Fir,
}

impl Feedback {
    /// Every type, in label order.
    pub const ALL: [Feedback; 3] = [Feedback::Nack, Feedback::Pli, Feedback::Fir];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Feedback::Nack => "nack",
            Feedback::Pli => "pli",
            Feedback::Fir => "fir",
        }
    }
}

/// Label `type` of `pipe_feedback_total`: feedback about piped streams between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeFeedback {
    /// An RTCP NACK datagram (far node to origin).
    Nack,
    /// A `KeyFrameRequest` control message (far node to origin).
    KeyFrameRequest,
}

impl PipeFeedback {
    /// Every type, in label order.
    pub const ALL: [PipeFeedback; 2] = [PipeFeedback::Nack, PipeFeedback::KeyFrameRequest];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            PipeFeedback::Nack => "nack",
            PipeFeedback::KeyFrameRequest => "keyframe_request",
        }
    }
}

/// Gauges of the worker's state, stored by the worker whenever an input settles (O(rooms)).
#[derive(Debug, Default)]
pub struct Gauges {
    /// Rooms open on this node.
    pub rooms: AtomicU64,
    /// Local peers (peers connected to this node), over all rooms.
    pub peers: AtomicU64,
    /// Signaling sessions attached to a room.
    pub sessions: AtomicU64,
    /// WebRTC transports.
    pub transports: AtomicU64,
    /// Producers, local and piped in from other nodes.
    pub producers: AtomicU64,
    /// Consumers.
    pub consumers: AtomicU64,
}

/// The worker's media families (see the module docs of [`crate::metrics`]).
#[derive(Debug, Default)]
pub struct MediaMetrics {
    /// Packets and bytes in and out per transport kind.
    pub traffic: Traffic,
    rtcp_feedback: [[AtomicU64; 2]; 3],
    pipe_feedback: [[AtomicU64; 2]; 2],
    /// RTP packets resent to clients on their NACKs (RTX or plain).
    pub retransmissions: AtomicU64,
    /// State gauges.
    pub gauges: Gauges,
}

impl MediaMetrics {
    /// `n` RTCP feedback messages of type `f` exchanged with clients.
    #[inline]
    pub fn rtcp_feedback(&self, f: Feedback, dir: Direction, n: u64) {
        self.rtcp_feedback[f as usize][dir as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// `n` feedback messages of type `f` about piped streams.
    #[inline]
    pub fn pipe_feedback(&self, f: PipeFeedback, dir: Direction, n: u64) {
        self.pipe_feedback[f as usize][dir as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// RTCP feedback messages of type `f` so far.
    pub fn rtcp_feedback_total(&self, f: Feedback, dir: Direction) -> u64 {
        self.rtcp_feedback[f as usize][dir as usize].load(Ordering::Relaxed)
    }

    /// Pipe feedback messages of type `f` so far.
    pub fn pipe_feedback_total(&self, f: PipeFeedback, dir: Direction) -> u64 {
        self.pipe_feedback[f as usize][dir as usize].load(Ordering::Relaxed)
    }
}

/// Label `result` of signaling requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestResult {
    /// Answered with success.
    Ok,
    /// Answered with a 4xx error code (bad request, forbidden, not found, rate limited...).
    ClientError,
    /// Answered with a 5xx error code (or any code outside 400-499).
    ServerError,
}

impl RequestResult {
    /// Every result, in label order.
    pub const ALL: [RequestResult; 3] = [
        RequestResult::Ok,
        RequestResult::ClientError,
        RequestResult::ServerError,
    ];

    /// The result of an answer: `None` for success, else the protoo `errorCode`.
    pub fn of(error_code: Option<u16>) -> Self {
        match error_code {
            None => RequestResult::Ok,
            Some(400..=499) => RequestResult::ClientError,
            Some(_) => RequestResult::ServerError,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RequestResult::Ok => "ok",
            RequestResult::ClientError => "4xx",
            RequestResult::ServerError => "5xx",
        }
    }
}

/// Label values of `method`: the protoo methods this server knows, then `other`.
const METHOD_SLOTS: usize = METHODS.len() + 1;

/// Signaling requests by method and result, and their durations by method. A method this
/// server does not know counts as `other`, so clients cannot add series.
#[derive(Debug)]
pub struct SignalingMetrics {
    requests: [[AtomicU64; 3]; METHOD_SLOTS],
    durations: [AtomicHistogram<13>; METHOD_SLOTS],
}

impl Default for SignalingMetrics {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            durations: std::array::from_fn(|_| {
                AtomicHistogram::new(&SIGNALING_DURATION_BOUNDS, NANOS)
            }),
        }
    }
}

impl SignalingMetrics {
    /// One request of `method` answered with `result` after `elapsed`.
    pub fn record(&self, method: &str, result: RequestResult, elapsed: Duration) {
        let m = METHODS
            .iter()
            .position(|&k| k == method)
            .unwrap_or(METHODS.len());
        self.requests[m][result as usize].fetch_add(1, Ordering::Relaxed);
        self.durations[m].observe(saturating_nanos(elapsed));
    }

    /// `(method label, result, requests)` for every method and result.
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, RequestResult, u64)> + '_ {
        (0..METHOD_SLOTS).flat_map(move |m| {
            RequestResult::ALL.into_iter().map(move |r| {
                (
                    method_label(m),
                    r,
                    self.requests[m][r as usize].load(Ordering::Relaxed),
                )
            })
        })
    }

    /// `(method label, duration histogram)` for every method.
    pub fn durations(&self) -> impl Iterator<Item = (&'static str, &AtomicHistogram<13>)> + '_ {
        self.durations
            .iter()
            .enumerate()
            .map(|(m, h)| (method_label(m), h))
    }
}

fn method_label(slot: usize) -> &'static str {
    METHODS.get(slot).copied().unwrap_or("other")
}

/// Forwarding latency per ingress kind, measured by the node glue (see
/// [`crate::metrics`]'s module docs for what it covers).
#[derive(Debug)]
pub struct ForwardingLatency {
    by_ingress: [AtomicHistogram<14>; 3],
}

impl Default for ForwardingLatency {
    fn default() -> Self {
        Self {
            by_ingress: std::array::from_fn(|_| {
                AtomicHistogram::new(&FORWARDING_LATENCY_BOUNDS, NANOS)
            }),
        }
    }
}

impl ForwardingLatency {
    /// One RTP packet that came in on `ingress` and left after `elapsed`.
    #[inline]
    pub fn observe(&self, ingress: Kind, elapsed: Duration) {
        self.by_ingress[ingress as usize].observe(saturating_nanos(elapsed));
    }

    /// The histogram of `ingress`.
    pub fn of(&self, ingress: Kind) -> &AtomicHistogram<14> {
        &self.by_ingress[ingress as usize]
    }
}

/// Packets the glue could not hand to a socket, per WebRTC transport kind.
#[derive(Debug, Default)]
pub struct SendDrops {
    udp: AtomicU64,
    tcp: AtomicU64,
}

impl SendDrops {
    /// One packet of `p` dropped.
    #[inline]
    pub fn add(&self, p: Protocol) {
        match p {
            Protocol::Udp => &self.udp,
            Protocol::Tcp => &self.tcp,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Packets of `p` dropped so far.
    pub fn get(&self, p: Protocol) -> u64 {
        match p {
            Protocol::Udp => &self.udp,
            Protocol::Tcp => &self.tcp,
        }
        .load(Ordering::Relaxed)
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_collapse_into_other() {
        let s = SignalingMetrics::default();
        s.record("join", RequestResult::Ok, Duration::from_millis(2));
        for i in 0..100 {
            s.record(
                &format!("attack{i}"),
                RequestResult::of(Some(405)),
                Duration::ZERO,
            );
        }
        s.record("produce", RequestResult::of(Some(500)), Duration::ZERO);
        let got: Vec<_> = s.requests().filter(|r| r.2 > 0).collect();
        assert_eq!(
            got,
            [
                ("join", RequestResult::Ok, 1),
                ("produce", RequestResult::ServerError, 1),
                ("other", RequestResult::ClientError, 100),
            ]
        );
        assert_eq!(s.requests().count(), (METHODS.len() + 1) * 3);
        let join = s.durations().find(|(m, _)| *m == "join").unwrap().1;
        assert_eq!((join.count(), join.sum_raw()), (1, 2_000_000));
    }

    #[test]
    fn traffic_counts_packets_and_bytes_per_kind_and_direction() {
        let t = Traffic::default();
        t.observe(Kind::Udp, Direction::In, 1200);
        t.observe(Kind::Udp, Direction::In, 100);
        t.observe(Kind::Pipe, Direction::Out, 1209);
        let h = t.sizes(Kind::Udp, Direction::In);
        assert_eq!((h.count(), h.sum_raw()), (2, 1300));
        assert_eq!(t.sizes(Kind::Pipe, Direction::Out).count(), 1);
        assert_eq!(t.sizes(Kind::Tcp, Direction::In).count(), 0);
    }
}
