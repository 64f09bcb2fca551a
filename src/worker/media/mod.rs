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
pub use ingress::handle_packet;
pub use producer::Producer;
pub use timers::room_timeout;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::room::Room;
use super::{Output, Transport, Worker};
use crate::edge::demux::{classify, PacketClass};
use crate::edge::ice::{IceOutcome, Tuple};
use crate::ids::{ConsumerId, PeerId, ProducerId, TransportId};
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

type Outputs = VecDeque<Output>;
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
    let mut buf = Vec::with_capacity(64);
    for (ssrc, kind, seq) in reqs {
        match kind {
            KeyFrameRequestKind::Pli => rtcp_core::write_pli(&mut buf, RTCP_SENDER_SSRC, ssrc),
            KeyFrameRequestKind::Fir => rtcp_core::write_fir(&mut buf, RTCP_SENDER_SSRC, ssrc, seq),
        }
    }
    send_rtcp(transports, &producer.transport, &buf, outputs);
}

/// Encrypts and sends an RTCP compound packet on a transport's selected tuple.
fn send_rtcp(transports: &mut Transports, id: &TransportId, plain: &[u8], outputs: &mut Outputs) {
    let Some(t) = transports.get_mut(id) else {
        return;
    };
    let Some(tuple) = t.ice.selected_tuple() else {
        return;
    };
    let Some(ctx) = t.srtp_out.as_mut() else {
        return;
    };
    if let Ok(enc) = ctx.encrypt_rtcp(plain) {
        outputs.push_back(Output::Transmit { tuple, data: enc });
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
