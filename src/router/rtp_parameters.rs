//! RTP capability and parameter types, serialized exactly as mediasoup does (camelCase JSON,
//! optional fields omitted when unset), plus the small parsers that interpret their contents:
//! [`Codec`] (from a mimeType), [`ScalabilityMode`] ("L1T3", "S3T3") and [`h264`]
//! profile-level-id handling (RFC 6184).
//!
//! This module owns only data shapes and parsing. It makes no negotiation decisions; those
//! live in [`super::ortc`]. Nothing here panics on input from the network.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Header extension URIs pipemesh knows about (the ones mediasoup supports).
pub mod uri {
    /// Media identification (BUNDLE demultiplexing).
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    /// RTP stream id (simulcast rid).
    pub const RTP_STREAM_ID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    /// Repaired RTP stream id (rid of an RTX stream).
    pub const REPAIRED_RTP_STREAM_ID: &str =
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    /// Absolute send time (REMB bandwidth estimation).
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    /// Transport-wide sequence number (transport-cc bandwidth estimation).
    pub const TRANSPORT_WIDE_CC_01: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    /// Client-to-mixer audio level.
    pub const SSRC_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    /// Coordination of video orientation.
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    /// Transmission time offset.
    pub const TOFFSET: &str = "urn:ietf:params:rtp-hdrext:toffset";
    /// Absolute capture time.
    pub const ABS_CAPTURE_TIME: &str =
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
    /// Playout delay limits.
    pub const PLAYOUT_DELAY: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
}

/// Media kind of a codec, header extension, producer or consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl MediaKind {
    /// The lowercase name used in mimeTypes and JSON ("audio" / "video").
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a mimeType ("video/VP8") into its kind and subtype, case-insensitively on the kind.
/// Returns `None` unless it is `audio/<x>` or `video/<x>` with a non-empty subtype.
pub fn parse_mime_type(mime_type: &str) -> Option<(MediaKind, &str)> {
    let (kind, subtype) = mime_type.split_once('/')?;
    if subtype.is_empty() {
        return None;
    }
    let kind = if kind.eq_ignore_ascii_case("audio") {
        MediaKind::Audio
    } else if kind.eq_ignore_ascii_case("video") {
        MediaKind::Video
    } else {
        return None;
    };
    Some((kind, subtype))
}

/// One value of a codec (fmtp) or header extension parameter. mediasoup keeps numbers as JSON
/// numbers and strings as JSON strings (`packetization-mode: 1`, `profile-level-id: "42e01f"`),
/// and so do we.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParameterValue {
    /// An integer (`apt`, `packetization-mode`, `profile-id`, ...).
    Integer(i64),
    /// A non-integer number (rare, kept for round-tripping).
    Float(f64),
    /// A string (`profile-level-id`, `channel_mapping`, ...).
    String(String),
}

impl ParameterValue {
    /// The value as an integer: an integer as is, or a string holding a decimal integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParameterValue::Integer(n) => Some(*n),
            ParameterValue::Float(_) => None,
            ParameterValue::String(s) => s.trim().parse().ok(),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParameterValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for ParameterValue {
    fn from(n: i64) -> Self {
        ParameterValue::Integer(n)
    }
}

impl From<&str> for ParameterValue {
    fn from(s: &str) -> Self {
        ParameterValue::String(s.to_owned())
    }
}

impl From<String> for ParameterValue {
    fn from(s: String) -> Self {
        ParameterValue::String(s)
    }
}

/// Codec (fmtp) or header extension parameters, keyed by name. Serializes as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CodecParameters(pub BTreeMap<String, ParameterValue>);

impl CodecParameters {
    /// An empty parameter set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder-style insert, handy for literals.
    pub fn with(mut self, key: &str, value: impl Into<ParameterValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub fn insert(&mut self, key: &str, value: impl Into<ParameterValue>) {
        self.0.insert(key.to_owned(), value.into());
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&ParameterValue> {
        self.0.get(key)
    }

    /// The value of `key` as an integer (see [`ParameterValue::as_i64`]).
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(ParameterValue::as_i64)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<ParameterValue> {
        self.0.remove(key)
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every parameter of `other`, overriding ours on conflicts.
    pub fn merge(&mut self, other: &CodecParameters) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

/// An RTCP feedback mechanism a codec supports ("nack", "nack pli", "ccm fir", "goog-remb",
/// "transport-cc"). `parameter` is always serialized, as the empty string when absent, like
/// mediasoup's normalized output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtcpFeedback {
    /// Feedback type, e.g. "nack".
    #[serde(rename = "type")]
    pub r#type: String,
    /// Feedback parameter, e.g. "pli"; empty when none.
    #[serde(default)]
    pub parameter: String,
}

impl RtcpFeedback {
    /// A feedback entry; pass "" for no parameter.
    pub fn new(r#type: &str, parameter: &str) -> Self {
        Self {
            r#type: r#type.to_owned(),
            parameter: parameter.to_owned(),
        }
    }
}

/// Direction of a header extension in capabilities, from the router's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtpHeaderExtensionDirection {
    /// Sent and received.
    #[default]
    Sendrecv,
    /// Only sent.
    Sendonly,
    /// Only received.
    Recvonly,
    /// Neither.
    Inactive,
}

/// A codec in RTP capabilities (router or endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecCapability {
    /// Media kind; must agree with the mimeType.
    pub kind: MediaKind,
    /// mimeType, e.g. "video/VP8" (case-insensitive when compared).
    pub mime_type: String,
    /// Preferred payload type; the router's capabilities always set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_payload_type: Option<u8>,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels; absent means 1 for audio and is meaningless for video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec-specific (fmtp) parameters.
    #[serde(default)]
    pub parameters: CodecParameters,
    /// Supported RTCP feedback.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// A header extension in RTP capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtension {
    /// Media kind the extension applies to.
    pub kind: MediaKind,
    /// Extension URI.
    pub uri: String,
    /// Preferred id (1-14 one-byte, up to 255 two-byte).
    pub preferred_id: u8,
    /// Whether it should be encrypted (RFC 6904); pipemesh never encrypts extensions.
    #[serde(default)]
    pub preferred_encrypt: bool,
    /// Direction, from the router's point of view.
    #[serde(default)]
    pub direction: RtpHeaderExtensionDirection,
}

/// RTP capabilities: what an endpoint (or the router) can send/receive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCapabilities {
    /// Supported codecs, in preference order.
    #[serde(default)]
    pub codecs: Vec<RtpCodecCapability>,
    /// Supported header extensions.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtension>,
}

/// A codec in RTP parameters (a concrete stream description).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecParameters {
    /// mimeType, e.g. "video/VP8".
    pub mime_type: String,
    /// Payload type (0-127).
    pub payload_type: u8,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels; absent means 1 for audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec-specific (fmtp) parameters; RTX carries `apt` here.
    #[serde(default)]
    pub parameters: CodecParameters,
    /// Negotiated RTCP feedback.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// A header extension in RTP parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionParameters {
    /// Extension URI.
    pub uri: String,
    /// Negotiated id.
    pub id: u8,
    /// Whether it is encrypted.
    #[serde(default)]
    pub encrypt: bool,
    /// Extension parameters (normally empty).
    #[serde(default)]
    pub parameters: CodecParameters,
}

/// The RTX stream of an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtpEncodingParametersRtx {
    /// SSRC of the RTX stream.
    pub ssrc: u32,
}

/// One encoding (simulcast layer or the single stream) of RTP parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpEncodingParameters {
    /// Media SSRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// RTP stream id (simulcast layer name, e.g. "r0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Payload type of the media codec this encoding uses (first media codec when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_payload_type: Option<u8>,
    /// RTX stream for this encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtx: Option<RtpEncodingParametersRtx>,
    /// Discontinuous transmission (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtx: Option<bool>,
    /// Scalability mode, e.g. "L1T3" (see [`ScalabilityMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// Resolution downscale factor (simulcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_resolution_down_by: Option<f64>,
    /// Maximum bitrate in bps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
    /// Maximum framerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_framerate: Option<f64>,
    /// Adaptive packet time (audio), as set by mediasoup-client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_ptime: Option<bool>,
    /// Sender priority ("very-low" ... "high"), as set by mediasoup-client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Network priority, as set by mediasoup-client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_priority: Option<String>,
    /// Whether the encoding is active, as set by mediasoup-client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

fn default_true() -> bool {
    true
}

/// RTCP parameters of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtcpParameters {
    /// CNAME used in RTCP SDES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// Reduced-size RTCP (RFC 5506); defaults to true.
    #[serde(default = "default_true")]
    pub reduced_size: bool,
    /// RTCP multiplexed with RTP (always true with WebRTC); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mux: Option<bool>,
}

impl Default for RtcpParameters {
    fn default() -> Self {
        Self {
            cname: None,
            reduced_size: true,
            mux: None,
        }
    }
}

/// RTP parameters: a concrete description of what a producer sends or a consumer receives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpParameters {
    /// MID of the m= section (BUNDLE), when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Codecs: media codecs and their RTX codecs.
    pub codecs: Vec<RtpCodecParameters>,
    /// Header extensions in use.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// Encodings (one per simulcast layer).
    #[serde(default)]
    pub encodings: Vec<RtpEncodingParameters>,
    /// RTCP parameters.
    #[serde(default)]
    pub rtcp: RtcpParameters,
}

/// A codec pipemesh recognizes, parsed from a mimeType case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// audio/opus.
    Opus,
    /// audio/multiopus (surround Opus).
    MultiOpus,
    /// audio/PCMU.
    Pcmu,
    /// audio/PCMA.
    Pcma,
    /// audio/G722.
    G722,
    /// audio/ISAC.
    Isac,
    /// audio/iLBC.
    Ilbc,
    /// audio/SILK.
    Silk,
    /// audio/CN (comfort noise).
    Cn,
    /// audio/telephone-event (DTMF).
    TelephoneEvent,
    /// video/VP8.
    Vp8,
    /// video/VP9.
    Vp9,
    /// video/H264.
    H264,
    /// video/H264-SVC.
    H264Svc,
    /// video/H265.
    H265,
    /// video/AV1.
    Av1,
    /// audio/rtx or video/rtx (RFC 4588 retransmission).
    Rtx,
    /// audio/red or video/red (redundancy).
    Red,
    /// video/ulpfec.
    Ulpfec,
    /// video/flexfec.
    Flexfec,
}

impl Codec {
    /// Parses a mimeType ("video/vp8", "VIDEO/VP8" ...). `None` for malformed or unknown ones,
    /// and for a known subtype under the wrong kind ("audio/VP8").
    pub fn from_mime_type(mime_type: &str) -> Option<Codec> {
        let (kind, subtype) = parse_mime_type(mime_type)?;
        let sub = subtype.to_ascii_lowercase();
        let codec = match (kind, sub.as_str()) {
            (_, "rtx") => Codec::Rtx,
            (_, "red") => Codec::Red,
            (MediaKind::Audio, "opus") => Codec::Opus,
            (MediaKind::Audio, "multiopus") => Codec::MultiOpus,
            (MediaKind::Audio, "pcmu") => Codec::Pcmu,
            (MediaKind::Audio, "pcma") => Codec::Pcma,
            (MediaKind::Audio, "g722") => Codec::G722,
            (MediaKind::Audio, "isac") => Codec::Isac,
            (MediaKind::Audio, "ilbc") => Codec::Ilbc,
            (MediaKind::Audio, "silk") => Codec::Silk,
            (MediaKind::Audio, "cn") => Codec::Cn,
            (MediaKind::Audio, "telephone-event") => Codec::TelephoneEvent,
            (MediaKind::Video, "vp8") => Codec::Vp8,
            (MediaKind::Video, "vp9") => Codec::Vp9,
            (MediaKind::Video, "h264") => Codec::H264,
            (MediaKind::Video, "h264-svc") => Codec::H264Svc,
            (MediaKind::Video, "h265") => Codec::H265,
            (MediaKind::Video, "av1") => Codec::Av1,
            (MediaKind::Video, "ulpfec") => Codec::Ulpfec,
            (MediaKind::Video, "flexfec") => Codec::Flexfec,
            _ => return None,
        };
        Some(codec)
    }

    /// Whether this codec carries media (as opposed to retransmission, FEC, redundancy,
    /// comfort noise or DTMF), i.e. can be the codec of an encoding.
    pub fn is_media(self) -> bool {
        !matches!(
            self,
            Codec::Rtx
                | Codec::Red
                | Codec::Ulpfec
                | Codec::Flexfec
                | Codec::Cn
                | Codec::TelephoneEvent
        )
    }
}

/// Whether a mimeType is an RTX one ("audio/rtx", "video/RTX").
pub fn is_rtx_mime_type(mime_type: &str) -> bool {
    matches!(parse_mime_type(mime_type), Some((_, sub)) if sub.eq_ignore_ascii_case("rtx"))
}

impl RtpCodecParameters {
    /// Whether this is an RTX codec.
    pub fn is_rtx(&self) -> bool {
        is_rtx_mime_type(&self.mime_type)
    }

    /// The RTX `apt` (associated payload type), if present and a valid payload type.
    pub fn apt(&self) -> Option<u8> {
        self.parameters
            .get_i64("apt")
            .and_then(|n| u8::try_from(n).ok())
    }
}

impl RtpCodecCapability {
    /// Whether this is an RTX codec.
    pub fn is_rtx(&self) -> bool {
        is_rtx_mime_type(&self.mime_type)
    }

    /// The RTX `apt` (associated payload type), if present and a valid payload type.
    pub fn apt(&self) -> Option<u8> {
        self.parameters
            .get_i64("apt")
            .and_then(|n| u8::try_from(n).ok())
    }
}

/// Error parsing a scalability mode string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScalabilityModeError {
    /// The string is not of the form `L<n>T<m>` or `S<n>T<m>` with n, m in 1..=99.
    #[error("invalid scalabilityMode {0:?} (expected e.g. \"L1T3\" or \"S3T3\")")]
    Invalid(String),
}

/// A parsed scalability mode (W3C webrtc-svc): spatial and temporal layer counts.
/// `L` modes have inter-layer prediction, `S` modes are simulcast-like; mediasoup treats both
/// the same way, as do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalabilityMode {
    /// Number of spatial layers (1..=99).
    pub spatial_layers: u8,
    /// Number of temporal layers (1..=99).
    pub temporal_layers: u8,
    /// Whether it is a "_KEY" (K-SVC) mode.
    pub ksvc: bool,
}

impl Default for ScalabilityMode {
    fn default() -> Self {
        Self {
            spatial_layers: 1,
            temporal_layers: 1,
            ksvc: false,
        }
    }
}

impl ScalabilityMode {
    /// Parses "L1T3", "S3T3", "L3T3_KEY", ... Like mediasoup, anything after the recognized
    /// prefix other than "_KEY" (e.g. the "h" of "L1T3h") is ignored.
    pub fn parse(s: &str) -> Result<Self, ScalabilityModeError> {
        let err = || ScalabilityModeError::Invalid(s.to_owned());
        let rest = s
            .strip_prefix('L')
            .or_else(|| s.strip_prefix('S'))
            .ok_or_else(err)?;
        let (spatial_layers, rest) = take_layer_count(rest).ok_or_else(err)?;
        let rest = rest.strip_prefix('T').ok_or_else(err)?;
        let (temporal_layers, rest) = take_layer_count(rest).ok_or_else(err)?;
        Ok(Self {
            spatial_layers,
            temporal_layers,
            ksvc: rest.starts_with("_KEY"),
        })
    }

    /// mediasoup's lenient reading: absent or invalid modes mean one spatial and one temporal
    /// layer.
    pub fn parse_or_default(s: Option<&str>) -> Self {
        s.and_then(|s| Self::parse(s).ok()).unwrap_or_default()
    }
}

/// Reads a layer count of 1 or 2 decimal digits not starting with 0.
fn take_layer_count(s: &str) -> Option<(u8, &str)> {
    let digits = s.bytes().take(2).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || s.starts_with('0') {
        return None;
    }
    // `digits` counts ASCII bytes at the start, so this split is on a char boundary.
    let (num, rest) = s.split_at(digits);
    Some((num.parse().ok()?, rest))
}

/// H.264 `profile-level-id` handling (RFC 6184 section 8.1), with the semantics of libwebrtc
/// and of the `h264-profile-level-id` package mediasoup uses: parse the three hex bytes
/// (profile_idc, profile-iop, level_idc) into a profile and a level, compare profiles and pick
/// the level of an answer.
pub mod h264 {
    use super::{CodecParameters, ParameterValue};

    /// H.264 profile, as far as SDP negotiation distinguishes them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Profile {
        /// Constrained Baseline (42e0xx, 4d80xx ...).
        ConstrainedBaseline,
        /// Baseline (4200xx).
        Baseline,
        /// Main (4d00xx).
        Main,
        /// Constrained High (640cxx).
        ConstrainedHigh,
        /// High (6400xx).
        High,
        /// Predictive High 4:4:4 (f400xx).
        PredictiveHigh444,
    }

    /// H.264 level. The discriminant is the `level_idc` byte, except level 1b (signalled as
    /// level_idc 11 with constraint_set3 set, or 0x0b under some profiles).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    #[repr(u8)]
    #[allow(missing_docs)]
    pub enum Level {
        L1b = 0,
        L1 = 10,
        L1_1 = 11,
        L1_2 = 12,
        L1_3 = 13,
        L2 = 20,
        L2_1 = 21,
        L2_2 = 22,
        L3 = 30,
        L3_1 = 31,
        L3_2 = 32,
        L4 = 40,
        L4_1 = 41,
        L4_2 = 42,
        L5 = 50,
        L5_1 = 51,
        L5_2 = 52,
    }

    impl Level {
        fn from_idc(idc: u8) -> Option<Level> {
            use Level::*;
            Some(match idc {
                10 => L1,
                11 => L1_1,
                12 => L1_2,
                13 => L1_3,
                20 => L2,
                21 => L2_1,
                22 => L2_2,
                30 => L3,
                31 => L3_1,
                32 => L3_2,
                40 => L4,
                41 => L4_1,
                42 => L4_2,
                50 => L5,
                51 => L5_1,
                52 => L5_2,
                _ => return None,
            })
        }

        /// Whether `self` is a lower level than `other` (1b sits between 1 and 1.1).
        pub fn is_less_than(self, other: Level) -> bool {
            match (self, other) {
                (Level::L1b, o) => o != Level::L1 && o != Level::L1b,
                (s, Level::L1b) => s == Level::L1,
                (s, o) => (s as u8) < (o as u8),
            }
        }

        /// The lower of two levels.
        pub fn min(self, other: Level) -> Level {
            if self.is_less_than(other) {
                self
            } else {
                other
            }
        }
    }

    /// A parsed `profile-level-id`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ProfileLevelId {
        /// The profile.
        pub profile: Profile,
        /// The level.
        pub level: Level,
    }

    /// What an absent `profile-level-id` means: Constrained Baseline level 3.1 ("42e01f"),
    /// as libwebrtc and mediasoup assume.
    pub const DEFAULT_PROFILE_LEVEL_ID: ProfileLevelId = ProfileLevelId {
        profile: Profile::ConstrainedBaseline,
        level: Level::L3_1,
    };

    /// constraint_set3 flag in profile-iop (marks level 1b when level_idc is 11).
    const CONSTRAINT_SET3: u8 = 0x10;

    /// (profile_idc, pattern over profile-iop from MSB, profile). 'x' = don't care.
    const PROFILE_PATTERNS: [(u8, &str, Profile); 9] = [
        (0x42, "x1xx0000", Profile::ConstrainedBaseline),
        (0x4D, "1xxx0000", Profile::ConstrainedBaseline),
        (0x58, "11xx0000", Profile::ConstrainedBaseline),
        (0x42, "x0xx0000", Profile::Baseline),
        (0x58, "10xx0000", Profile::Baseline),
        (0x4D, "0x0x0000", Profile::Main),
        (0x64, "00000000", Profile::High),
        (0x64, "00001100", Profile::ConstrainedHigh),
        (0xF4, "00000000", Profile::PredictiveHigh444),
    ];

    fn pattern_matches(pattern: &str, value: u8) -> bool {
        let mut mask = 0u8;
        let mut expected = 0u8;
        for (i, c) in pattern.bytes().enumerate().take(8) {
            let bit = 0x80u8 >> i;
            if c != b'x' {
                mask |= bit;
            }
            if c == b'1' {
                expected |= bit;
            }
        }
        value & mask == expected
    }

    impl ProfileLevelId {
        /// Parses a 6-hex-digit `profile-level-id` ("42e01f"). `None` when malformed or when
        /// the profile or level is not one RFC 6184 negotiation knows.
        pub fn parse(s: &str) -> Option<ProfileLevelId> {
            if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let n = u32::from_str_radix(s, 16).ok()?;
            if n == 0 {
                return None;
            }
            let [_, profile_idc, profile_iop, level_idc] = n.to_be_bytes();
            let level = if level_idc == Level::L1_1 as u8 {
                if profile_iop & CONSTRAINT_SET3 != 0 {
                    Level::L1b
                } else {
                    Level::L1_1
                }
            } else {
                Level::from_idc(level_idc)?
            };
            PROFILE_PATTERNS
                .iter()
                .find(|(idc, pattern, _)| {
                    *idc == profile_idc && pattern_matches(pattern, profile_iop)
                })
                .map(|&(_, _, profile)| ProfileLevelId { profile, level })
        }

        /// The canonical 6-hex-digit string. `None` for level 1b under a profile that cannot
        /// express it.
        pub fn to_hex(&self) -> Option<String> {
            if self.level == Level::L1b {
                return match self.profile {
                    Profile::ConstrainedBaseline => Some("42f00b".to_owned()),
                    Profile::Baseline => Some("42100b".to_owned()),
                    Profile::Main => Some("4d100b".to_owned()),
                    _ => None,
                };
            }
            let prefix = match self.profile {
                Profile::ConstrainedBaseline => "42e0",
                Profile::Baseline => "4200",
                Profile::Main => "4d00",
                Profile::ConstrainedHigh => "640c",
                Profile::High => "6400",
                Profile::PredictiveHigh444 => "f400",
            };
            Some(format!("{prefix}{:02x}", self.level as u8))
        }
    }

    /// Error choosing an answer `profile-level-id`.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum H264Error {
        /// A `profile-level-id` could not be parsed.
        #[error("invalid H264 profile-level-id")]
        InvalidProfileLevelId,
        /// The two sides use different profiles.
        #[error("H264 profiles do not match")]
        ProfileMismatch,
        /// The chosen profile/level has no string form (level 1b under a high profile).
        #[error("H264 profile-level-id for answer cannot be expressed")]
        Unexpressible,
    }

    /// The raw `profile-level-id` of some codec parameters as a string. A number (what SDP
    /// parsers make of an all-digit value such as "640032") is zero-padded back to 6 digits.
    pub fn profile_level_id_string(params: &CodecParameters) -> Option<String> {
        match params.get("profile-level-id")? {
            ParameterValue::String(s) => Some(s.clone()),
            ParameterValue::Integer(n) => Some(format!("{n:06}")),
            ParameterValue::Float(_) => None,
        }
    }

    /// The profile-level-id of codec parameters: the default when absent, `None` if invalid.
    pub fn parse_sdp_profile_level_id(params: &CodecParameters) -> Option<ProfileLevelId> {
        match profile_level_id_string(params) {
            Some(s) => ProfileLevelId::parse(&s),
            None if params.get("profile-level-id").is_some() => None,
            None => Some(DEFAULT_PROFILE_LEVEL_ID),
        }
    }

    /// Whether both parameter sets name valid profile-level-ids of the same profile.
    pub fn is_same_profile(a: &CodecParameters, b: &CodecParameters) -> bool {
        match (parse_sdp_profile_level_id(a), parse_sdp_profile_level_id(b)) {
            (Some(a), Some(b)) => a.profile == b.profile,
            _ => false,
        }
    }

    /// Whether `level-asymmetry-allowed=1`.
    pub fn is_level_asymmetry_allowed(params: &CodecParameters) -> bool {
        params.get_i64("level-asymmetry-allowed") == Some(1)
    }

    /// The `profile-level-id` to put in an answer, given our (`local`) supported parameters
    /// and the `remote` offered ones: the common profile, and our level when both sides allow
    /// level asymmetry, else the lower of the two. `Ok(None)` when neither side names one.
    pub fn generate_profile_level_id_for_answer(
        local: &CodecParameters,
        remote: &CodecParameters,
    ) -> Result<Option<String>, H264Error> {
        if local.get("profile-level-id").is_none() && remote.get("profile-level-id").is_none() {
            return Ok(None);
        }
        let l = parse_sdp_profile_level_id(local).ok_or(H264Error::InvalidProfileLevelId)?;
        let r = parse_sdp_profile_level_id(remote).ok_or(H264Error::InvalidProfileLevelId)?;
        if l.profile != r.profile {
            return Err(H264Error::ProfileMismatch);
        }
        let level = if is_level_asymmetry_allowed(local) && is_level_asymmetry_allowed(remote) {
            l.level
        } else {
            l.level.min(r.level)
        };
        ProfileLevelId {
            profile: r.profile,
            level,
        }
        .to_hex()
        .map(Some)
        .ok_or(H264Error::Unexpressible)
    }
}

#[cfg(test)]
mod tests {
    use super::h264::{self, Level, Profile, ProfileLevelId};
    use super::*;
    use serde_json::{json, Value};

    const CHROME_CAPS: &str = include_str!("../../tests/fixtures/chrome_rtp_capabilities.json");
    const VP8_SIMULCAST: &str =
        include_str!("../../tests/fixtures/chrome_producer_vp8_simulcast.json");
    const OPUS: &str = include_str!("../../tests/fixtures/chrome_producer_opus.json");

    #[test]
    fn chrome_capabilities_round_trip_exactly() {
        let caps: RtpCapabilities = serde_json::from_str(CHROME_CAPS).unwrap();
        assert_eq!(caps.codecs.len(), 9);
        assert_eq!(caps.codecs[0].kind, MediaKind::Audio);
        assert_eq!(caps.codecs[0].channels, Some(2));
        assert_eq!(caps.codecs[1].channels, None);
        let original: Value = serde_json::from_str(CHROME_CAPS).unwrap();
        assert_eq!(serde_json::to_value(&caps).unwrap(), original);
    }

    #[test]
    fn producer_parameters_round_trip_and_defaults() {
        let opus: RtpParameters = serde_json::from_str(OPUS).unwrap();
        let original: Value = serde_json::from_str(OPUS).unwrap();
        assert_eq!(serde_json::to_value(&opus).unwrap(), original);

        // The simulcast fixture omits rtcp.reducedSize, as mediasoup-client does.
        let vp8: RtpParameters = serde_json::from_str(VP8_SIMULCAST).unwrap();
        assert!(vp8.rtcp.reduced_size);
        assert_eq!(vp8.encodings.len(), 3);
        assert_eq!(vp8.encodings[2].rid.as_deref(), Some("r2"));
        assert_eq!(vp8.encodings[2].max_bitrate, Some(5_000_000));
        assert_eq!(vp8.encodings[0].scale_resolution_down_by, Some(4.0));
        assert_eq!(vp8.codecs[1].apt(), Some(96));
        assert!(vp8.codecs[1].is_rtx());
    }

    #[test]
    fn optional_fields_are_omitted_and_parameters_keep_their_json_type() {
        let codec = RtpCodecParameters {
            mime_type: "video/H264".into(),
            payload_type: 107,
            clock_rate: 90000,
            channels: None,
            parameters: CodecParameters::new()
                .with("packetization-mode", 1)
                .with("profile-level-id", "42e01f"),
            rtcp_feedback: vec![RtcpFeedback::new("nack", "")],
        };
        assert_eq!(
            serde_json::to_value(&codec).unwrap(),
            json!({
                "mimeType": "video/H264", "payloadType": 107, "clockRate": 90000,
                "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f"},
                "rtcpFeedback": [{"type": "nack", "parameter": ""}]
            })
        );
        let enc = RtpEncodingParameters {
            ssrc: Some(5),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&enc).unwrap(), json!({"ssrc": 5}));
        let rtcp: RtcpParameters = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            serde_json::to_value(&rtcp).unwrap(),
            json!({"reducedSize": true})
        );
    }

    #[test]
    fn minimal_json_from_clients_gets_defaults() {
        let caps: RtpCapabilities = serde_json::from_value(json!({})).unwrap();
        assert!(caps.codecs.is_empty() && caps.header_extensions.is_empty());
        let ext: RtpHeaderExtension = serde_json::from_value(
            json!({"kind": "video", "uri": super::uri::MID, "preferredId": 1}),
        )
        .unwrap();
        assert_eq!(ext.direction, RtpHeaderExtensionDirection::Sendrecv);
        assert!(!ext.preferred_encrypt);
        let fb: RtcpFeedback = serde_json::from_value(json!({"type": "nack"})).unwrap();
        assert_eq!(fb.parameter, "");
    }

    #[test]
    fn malformed_json_is_rejected_not_panicking() {
        // A boolean codec parameter, a kind that is neither audio nor video, a negative pt.
        assert!(serde_json::from_value::<CodecParameters>(json!({"apt": true})).is_err());
        assert!(serde_json::from_value::<RtpHeaderExtension>(
            json!({"kind": "data", "uri": "x", "preferredId": 1})
        )
        .is_err());
        assert!(serde_json::from_value::<RtpCodecParameters>(
            json!({"mimeType": "audio/opus", "payloadType": -1, "clockRate": 48000})
        )
        .is_err());
        assert!(serde_json::from_value::<RtpParameters>(json!({"encodings": []})).is_err());
    }

    #[test]
    fn parameter_values() {
        assert_eq!(ParameterValue::Integer(7).as_i64(), Some(7));
        assert_eq!(ParameterValue::from("12").as_i64(), Some(12));
        assert_eq!(ParameterValue::from("x").as_i64(), None);
        assert_eq!(ParameterValue::Float(1.5).as_i64(), None);
        let mut a = CodecParameters::new().with("a", 1).with("b", "x");
        a.merge(&CodecParameters::new().with("b", 2));
        assert_eq!(a.get_i64("b"), Some(2));
        assert_eq!(a.remove("a"), Some(ParameterValue::Integer(1)));
    }

    #[test]
    fn codec_from_mime_type() {
        assert_eq!(Codec::from_mime_type("video/VP8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime_type("VIDEO/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime_type("audio/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime_type("video/rtx"), Some(Codec::Rtx));
        assert_eq!(Codec::from_mime_type("video/H264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime_type("audio/VP8"), None);
        assert_eq!(Codec::from_mime_type("video/FOO"), None);
        assert_eq!(Codec::from_mime_type("vp8"), None);
        assert_eq!(Codec::from_mime_type("video/"), None);
        assert_eq!(Codec::from_mime_type(""), None);
        assert!(Codec::Vp8.is_media());
        assert!(!Codec::Rtx.is_media());
        assert_eq!(
            parse_mime_type("Audio/opus"),
            Some((MediaKind::Audio, "opus"))
        );
    }

    #[test]
    fn scalability_modes() {
        let m = ScalabilityMode::parse("L1T3").unwrap();
        assert_eq!((m.spatial_layers, m.temporal_layers, m.ksvc), (1, 3, false));
        let m = ScalabilityMode::parse("S3T3").unwrap();
        assert_eq!((m.spatial_layers, m.temporal_layers), (3, 3));
        assert!(ScalabilityMode::parse("L3T3_KEY").unwrap().ksvc);
        assert_eq!(ScalabilityMode::parse("L12T2").unwrap().spatial_layers, 12);
        assert_eq!(ScalabilityMode::parse("L1T3h").unwrap().temporal_layers, 3);
        for bad in [
            "", "L", "L1", "L0T1", "L1T0", "X1T1", "LT3", "L1X3", "l1t3", "L1T", "é",
        ] {
            assert!(ScalabilityMode::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ScalabilityMode::parse_or_default(None),
            ScalabilityMode::default()
        );
        assert_eq!(
            ScalabilityMode::parse_or_default(Some("junk")).temporal_layers,
            1
        );
        assert_eq!(
            ScalabilityMode::parse_or_default(Some("L1T2")).temporal_layers,
            2
        );
    }

    fn plid(s: &str) -> Option<(Profile, Level)> {
        ProfileLevelId::parse(s).map(|p| (p.profile, p.level))
    }

    #[test]
    fn h264_profile_level_id_parsing() {
        assert_eq!(
            plid("42e01f"),
            Some((Profile::ConstrainedBaseline, Level::L3_1))
        );
        assert_eq!(
            plid("42E01F"),
            Some((Profile::ConstrainedBaseline, Level::L3_1))
        );
        assert_eq!(plid("42001f"), Some((Profile::Baseline, Level::L3_1)));
        assert_eq!(plid("4d001f"), Some((Profile::Main, Level::L3_1)));
        assert_eq!(plid("4d0032"), Some((Profile::Main, Level::L5)));
        assert_eq!(
            plid("4d801f"),
            Some((Profile::ConstrainedBaseline, Level::L3_1))
        );
        assert_eq!(plid("640032"), Some((Profile::High, Level::L5)));
        assert_eq!(plid("64001f"), Some((Profile::High, Level::L3_1)));
        assert_eq!(
            plid("640c1f"),
            Some((Profile::ConstrainedHigh, Level::L3_1))
        );
        assert_eq!(
            plid("f4001f"),
            Some((Profile::PredictiveHigh444, Level::L3_1))
        );
        assert_eq!(
            plid("42f00b"),
            Some((Profile::ConstrainedBaseline, Level::L1b))
        );
        assert_eq!(
            plid("42e00b"),
            Some((Profile::ConstrainedBaseline, Level::L1_1))
        );
        for bad in [
            "", "42e01", "42e01f0", "zzzzzz", "000000", "42e0ff", "ff001f", "4d201f", "+2e01f",
        ] {
            assert_eq!(plid(bad), None, "{bad:?}");
        }
        for s in [
            "42e01f", "42001f", "4d0032", "640032", "640c1f", "42f00b", "4d100b",
        ] {
            assert_eq!(
                ProfileLevelId::parse(s).unwrap().to_hex().as_deref(),
                Some(s)
            );
        }
        let high_1b = ProfileLevelId {
            profile: Profile::High,
            level: Level::L1b,
        };
        assert_eq!(high_1b.to_hex(), None);
    }

    #[test]
    fn h264_levels_order_with_1b() {
        assert!(Level::L1.is_less_than(Level::L1b));
        assert!(Level::L1b.is_less_than(Level::L1_1));
        assert!(!Level::L1b.is_less_than(Level::L1));
        assert!(!Level::L1b.is_less_than(Level::L1b));
        assert!(Level::L3_1.is_less_than(Level::L5));
        assert_eq!(Level::L5.min(Level::L3_1), Level::L3_1);
    }

    #[test]
    fn h264_answer_profile_level_id() {
        let p = |s: &str, asym: bool| {
            let p = CodecParameters::new().with("profile-level-id", s);
            if asym {
                p.with("level-asymmetry-allowed", 1)
            } else {
                p
            }
        };
        let answer = h264::generate_profile_level_id_for_answer;
        assert_eq!(
            answer(&p("4d001f", true), &p("4d0032", true)),
            Ok(Some("4d001f".into()))
        );
        assert_eq!(
            answer(&p("4d0032", false), &p("4d001f", true)),
            Ok(Some("4d001f".into()))
        );
        assert_eq!(
            answer(&p("42e01f", true), &p("42001f", true)),
            Err(h264::H264Error::ProfileMismatch)
        );
        assert_eq!(
            answer(&p("nothex", true), &p("42e01f", true)),
            Err(h264::H264Error::InvalidProfileLevelId)
        );
        // Absent on one side means 42e01f.
        assert_eq!(
            answer(&CodecParameters::new(), &p("42e01f", false)),
            Ok(Some("42e01f".into()))
        );
        assert_eq!(
            answer(&CodecParameters::new(), &CodecParameters::new()),
            Ok(None)
        );
        assert!(h264::is_same_profile(
            &CodecParameters::new(),
            &p("42e01f", false)
        ));
        assert!(!h264::is_same_profile(
            &p("42001f", false),
            &p("42e01f", false)
        ));
        // An all-digit id that an SDP parser turned into a number still parses.
        let numeric = CodecParameters::new().with("profile-level-id", 640032);
        assert_eq!(
            h264::parse_sdp_profile_level_id(&numeric).map(|p| p.profile),
            Some(Profile::High)
        );
        assert!(h264::is_level_asymmetry_allowed(&p("42e01f", true)));
        assert!(!h264::is_level_asymmetry_allowed(&p("42e01f", false)));
    }
}
