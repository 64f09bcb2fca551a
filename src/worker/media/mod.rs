//! The media path: producers and consumers, the per-packet forwarding from one to many, RTCP
//! in both directions, and the periodic RTCP work (reports, NACKs, keyframe requests).
//!
//! Per packet, the path copies the decrypted packet once into a reusable buffer per
//! consumer, rewrites it in place ([`StreamRewriter`]), stores it for retransmission in the
//! consumer's preallocated [`RetransmissionBuffer`] and encrypts it for the consumer's
//! transport. Nothing else allocates per consumer per packet; SRTP itself (webrtc-srtp)
//! returns a fresh buffer, which is the known remaining cost.
//!
//! Files: [`producer`] and [`consumer`] hold the per-stream state, `ingress` the packet path
//! (STUN, RTP fan-out, RTCP from clients), `timers` the periodic work.

mod consumer;
mod ingress;
mod producer;
mod timers;

pub use consumer::Consumer;
pub(super) use ingress::forward;
pub use ingress::handle_packet;
pub use producer::{PipeSource, Producer, Source};
pub(super) use timers::limit_piped_layers;
pub use timers::room_timeout;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::room::Room;
use super::{Output, Transport, Worker};
use crate::edge::demux::{classify, PacketClass};
use crate::edge::ice::{IceOutcome, Tuple};
use crate::ids::{ConsumerId, NodeId, PeerId, ProducerId, TransportId};
use crate::metrics::{Direction, Feedback, PipeFeedback};
use crate::pipe::shedding::withheld;
use crate::pipe::wire::{datagram_header_len, write_datagram, ControlMessage, DatagramKind};
use crate::router::keyframe::{self, VideoCodec, Vp8Rewriter};
use crate::router::ortc;
use crate::router::rtcp_core::{
    self, parse_compound, KeyFrameRequestKind, KeyFrameRequestManager, NackConfig, NackGenerator,
    ReceiveStats, RtcpItem, SendStats, TwccRecorder,
};
use crate::router::rtp_parameters::ScalabilityMode;
use crate::router::rtp_parameters::{Codec, MediaKind, RtpCapabilities, RtpParameters};
use crate::router::rtx::{RetransmissionBuffer, RetransmissionConfig, RtxEncoder};
use crate::router::seq::{RtpView, StreamRewriter};
use crate::router::simulcast::{
    Forward, LayerPacket, SimulcastConfig, SimulcastEvent, SimulcastSelector,
};
use crate::signaling::server::ToPeer;
use crate::timing::{KEYFRAME_REQUEST_THROTTLE, RTCP_REPORT_INTERVAL};

use super::Outputs;
type Transports = std::collections::HashMap<TransportId, Transport>;

const URI_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const URI_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const URI_RRID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
const URI_TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// SSRC our RTCP feedback and receiver reports are sent from.
const RTCP_SENDER_SSRC: u32 = 1;

/// Where an incoming SSRC goes.
#[derive(Clone, Debug)]
pub struct StreamRef {
    /// The producer.
    pub producer: ProducerId,
    /// Index of the encoding in the producer's RTP parameters.
    pub encoding: usize,
    /// Whether this SSRC carries the encoding's RTX stream.
    pub rtx: bool,
}

/// Receiver side of transport-wide congestion control for a producing transport.
pub struct TwccIn {
    /// Header extension id the client uses.
    pub ext_id: u8,
    /// Arrival record and feedback builder.
    pub recorder: TwccRecorder,
    /// A media SSRC of the transport, named in feedback packets.
    pub media_ssrc: u32,
}

impl TwccIn {
    /// Writes due feedback into `buf` (cleared first); true when there is some to send.
    pub fn poll_feedback(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        self.recorder
            .poll_feedback(now, RTCP_SENDER_SSRC, self.media_ssrc, buf)
            > 0
    }
}

/// `getTransportStats`.
pub fn transport_stats(t: &Transport) -> Value {
    json!([{
        "type": "webrtc-transport",
        "transportId": t.id,
        "iceState": format!("{:?}", t.ice.state()).to_lowercase(),
        "iceSelectedTuple": t.ice.selected_tuple().map(|tu| json!({
            "remoteIp": tu.remote.ip().to_string(), "remotePort": tu.remote.port(),
            "protocol": format!("{:?}", tu.protocol).to_lowercase(),
        })),
        "dtlsState": format!("{:?}", t.dtls).to_lowercase(),
    }])
}

pub(super) fn send_keyframe_requests(
    producer: &Producer,
    reqs: Vec<(u32, KeyFrameRequestKind, u8)>,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    if reqs.is_empty() {
        return;
    }
    let transport = match &producer.source {
        Source::Transport(t) => t,
        Source::Pipe(pipe) => {
            // A piped producer's keyframe comes from its publisher on the origin node: ask
            // there (already throttled per encoding here; the origin throttles again).
            for (ssrc, _, _) in reqs {
                send_pipe_keyframe_request(producer, pipe, Some(ssrc), outputs);
            }
            return;
        }
    };
    let mut buf = Vec::with_capacity(64);
    let mut sent = FeedbackCount::default();
    for (ssrc, kind, seq) in reqs {
        sent.keyframe_request(kind);
        match kind {
            KeyFrameRequestKind::Pli => rtcp_core::write_pli(&mut buf, RTCP_SENDER_SSRC, ssrc),
            KeyFrameRequestKind::Fir => rtcp_core::write_fir(&mut buf, RTCP_SENDER_SSRC, ssrc, seq),
        }
    }
    if send_rtcp(transports, transport, &buf, outputs) {
        sent.count_out(outputs);
    }
}

/// RTCP feedback messages written into one compound packet, counted once it is sent.
#[derive(Default)]
pub(super) struct FeedbackCount {
    nacks: u64,
    plis: u64,
    firs: u64,
}

impl FeedbackCount {
    /// One keyframe request of `kind` written.
    pub(super) fn keyframe_request(&mut self, kind: KeyFrameRequestKind) {
        match kind {
            KeyFrameRequestKind::Pli => self.plis += 1,
            KeyFrameRequestKind::Fir => self.firs += 1,
        }
    }

    /// `n` NACK messages written.
    pub(super) fn nacks(&mut self, n: usize) {
        self.nacks += n as u64;
    }

    /// The packet was sent to a client: count its feedback out.
    pub(super) fn count_out(&self, outputs: &Outputs) {
        let m = &outputs.counters.media;
        for (f, n) in [
            (Feedback::Nack, self.nacks),
            (Feedback::Pli, self.plis),
            (Feedback::Fir, self.firs),
        ] {
            if n > 0 {
                m.rtcp_feedback(f, Direction::Out, n);
            }
        }
    }
}

/// Sends a KeyFrameRequest for the encoding with `ssrc` (all when `None`) to a piped
/// producer's origin, if it is subscribed (the resubscription asks for one anyway).
pub(super) fn send_pipe_keyframe_request(
    producer: &Producer,
    pipe: &PipeSource,
    ssrc: Option<u32>,
    outputs: &mut Outputs,
) {
    if pipe.stream_ids.is_empty() {
        return;
    }
    let encoding = match ssrc {
        Some(s) => match producer
            .encoding_of_ssrc(s)
            .and_then(|e| u8::try_from(e).ok())
        {
            Some(e) => Some(e),
            None => return,
        },
        None => None,
    };
    outputs.push_back(Output::PipeControl {
        node: pipe.node.clone(),
        msg: ControlMessage::KeyFrameRequest {
            producer_id: producer.id.clone(),
            encoding,
        },
    });
    outputs
        .counters
        .media
        .pipe_feedback(PipeFeedback::KeyFrameRequest, Direction::Out, 1);
}

/// Origin side: sends one packet of a producer encoding to every node it is piped to. The
/// packet (already in router space) gets the encoding's consumable SSRC, which the far node's
/// pipe producer expects, and is kept for the far nodes' NACKs. One datagram is built and
/// shared by every link (stream ids are per origin, not per link). Nodes whose link sheds the
/// encoding's layer (`shed`: levels above 0, see [`crate::pipe::shedding::withheld`]) do not
/// get it; it is still kept for the others' NACKs.
pub(super) fn pipe_out(
    p: &mut Producer,
    now: Instant,
    encoding: usize,
    packet: &[u8],
    outputs: &mut Outputs,
    counters: &crate::worker::WorkerCounters,
    shed: &std::collections::HashMap<NodeId, u8>,
) {
    let (Some(&sid), Some(ssrc)) = (p.pipe_stream_ids.get(encoding), p.consumable_ssrc(encoding))
    else {
        return;
    };
    let Ok(header) = datagram_header_len(sid) else {
        return;
    };
    let mut dg = Vec::with_capacity(header + packet.len());
    if write_datagram(DatagramKind::Rtp, sid, packet, &mut dg).is_err() {
        counters.pipe_malformed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // The packet parsed as RTP, so it has the 12-byte fixed header.
    if let Some(s) = dg.get_mut(header + 8..header + 12) {
        s.copy_from_slice(&ssrc.to_be_bytes());
    }
    if let (Some(buf), Some(seq)) = (p.pipe_buffers.get_mut(encoding), packet.get(2..4)) {
        let _ = buf.insert(now, u16::from_be_bytes([seq[0], seq[1]]), &dg[header..]);
    }
    let data = bytes::Bytes::from(dg);
    let encodings = p.pipe_stream_ids.len();
    for node in &p.piped_to {
        if !shed.is_empty()
            && shed
                .get(node)
                .is_some_and(|&level| withheld(encoding, encodings, level))
        {
            counters.pipe_shed_packets.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counters.pipe_rtp_sent.fetch_add(1, Ordering::Relaxed);
        outputs.push_back(Output::PipeDatagram {
            node: node.clone(),
            data: data.clone(),
        });
    }
}

/// Encrypts and sends an RTCP compound packet on a transport's selected tuple; false when it
/// could not (no transport, no selected tuple, no SRTP yet, encryption failed).
fn send_rtcp(
    transports: &mut Transports,
    id: &TransportId,
    plain: &[u8],
    outputs: &mut Outputs,
) -> bool {
    let Some(t) = transports.get_mut(id) else {
        return false;
    };
    let Some(tuple) = t.ice.selected_tuple() else {
        return false;
    };
    let Some(ctx) = t.srtp_out.as_mut() else {
        return false;
    };
    match ctx.encrypt_rtcp(plain) {
        Ok(enc) => {
            outputs.push_back(Output::Transmit { tuple, data: enc });
            true
        }
        Err(_) => false,
    }
}

/// Sends transport-wide-cc feedback to a publishing client when due.
pub fn send_twcc_feedback(
    t: &mut Transport,
    now: Instant,
    buf: &mut Vec<u8>,
    outputs: &mut Outputs,
) {
    let Some(twcc) = t.twcc_in.as_mut() else {
        return;
    };
    if !twcc.poll_feedback(now, buf) {
        return;
    }
    let Some(tuple) = t.ice.selected_tuple() else {
        return;
    };
    let Some(ctx) = t.srtp_out.as_mut() else {
        return;
    };
    if let Ok(enc) = ctx.encrypt_rtcp(buf) {
        outputs.push_back(Output::Transmit { tuple, data: enc });
    }
    buf.clear();
}

/// NTP time (RFC 3550 64-bit format) for reports: the worker's NTP origin plus the monotonic
/// time since it. The origin is an input ([`super::WorkerConfig::ntp_origin`]) so this core
/// never reads the wall clock.
pub(super) fn ntp_now(origin: (Instant, u64), now: Instant) -> u64 {
    let d = now.saturating_duration_since(origin.0);
    let add = (d.as_secs() << 32) | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000);
    origin.1.wrapping_add(add)
}
