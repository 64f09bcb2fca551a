//! Capability negotiation with mediasoup's semantics, as pure functions: the router's RTP
//! capabilities, validation of what clients send, the producer -> router mapping of payload
//! types and SSRCs, the router-side ("consumable") parameters of a producer, and the
//! parameters of each consumer (WebRTC or pipe).
//!
//! This module owns no state, reads no clock and draws no randomness of its own: callers pass
//! an SSRC generator (see [`random_ssrc`]). Errors are [`OrtcError`], whose messages are sent
//! to clients as protoo error reasons.
//!
//! Codec matching (mediasoup's `matchCodecs`, with the H264 and VP9 profile rules) is in
//! `matching.rs`; the tests of the public functions are in `tests.rs`.

use crate::router::rtp_parameters::{
    parse_mime_type, uri, Codec, CodecParameters, MediaKind, RtcpFeedback, RtcpParameters,
    RtpCapabilities, RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters,
    RtpEncodingParametersRtx, RtpHeaderExtension, RtpHeaderExtensionDirection,
    RtpHeaderExtensionParameters, RtpParameters, ScalabilityMode,
};
use serde::{Deserialize, Serialize};

mod matching;
#[cfg(test)]
mod tests;

use matching::{match_capabilities, match_codecs};

/// Errors of capability negotiation and parameter validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrtcError {
    /// A mimeType is not `audio/<subtype>` or `video/<subtype>`.
    #[error("invalid codec mimeType {0:?}")]
    InvalidMimeType(String),
    /// A codec capability's `kind` disagrees with its mimeType.
    #[error("codec kind {kind} does not match mimeType {mime_type:?}")]
    KindMismatch {
        /// The declared kind.
        kind: MediaKind,
        /// The mimeType.
        mime_type: String,
    },
    /// A codec has a zero clock rate.
    #[error("invalid clockRate 0 in codec {0:?}")]
    InvalidClockRate(String),
    /// A payload type is outside 0..=127.
    #[error("invalid payloadType {0} (must be 0-127)")]
    InvalidPayloadType(u8),
    /// Two codecs of the RTP parameters share a payload type.
    #[error("duplicated payloadType {0}")]
    DuplicatedPayloadType(u8),
    /// An RTX codec has no numeric `apt` parameter.
    #[error("RTX codec with payloadType {0} has no valid apt parameter")]
    RtxWithoutApt(u8),
    /// An RTX codec's `apt` names no codec of the parameters.
    #[error("apt {apt} of RTX codec {payload_type} points to a non existing codec")]
    RtxAptUnknown {
        /// Payload type of the RTX codec.
        payload_type: u8,
        /// Its apt.
        apt: u8,
    },
    /// An RTX codec's `apt` names a codec that is not a media codec.
    #[error("apt {apt} of RTX codec {payload_type} points to a non media codec")]
    RtxAptNotMedia {
        /// Payload type of the RTX codec.
        payload_type: u8,
        /// Its apt.
        apt: u8,
    },
    /// The RTP parameters have no codecs, or none that carries media.
    #[error("no media codecs found")]
    NoMediaCodecs,
    /// The RTP parameters have no encodings.
    #[error("empty encodings")]
    NoEncodings,
    /// The mid is present but empty.
    #[error("empty mid")]
    EmptyMid,
    /// Several encodings, not all identified the same way (all by rid or all by ssrc).
    #[error("encodings must all have a rid or all have an ssrc")]
    MixedEncodings,
    /// A single encoding with neither ssrc nor rid, and no mid to identify the stream.
    #[error("encoding has no ssrc or rid, and rtpParameters has no mid")]
    UnidentifiedEncoding,
    /// Two encodings share a rid.
    #[error("duplicated encoding rid {0:?}")]
    DuplicatedRid(String),
    /// Two encodings (or an encoding and an RTX stream) share an ssrc.
    #[error("duplicated encoding ssrc {0}")]
    DuplicatedSsrc(u32),
    /// A rid is empty, longer than 16 characters or not alphanumeric/'-'/'_' (RFC 8851).
    #[error("invalid encoding rid {0:?}")]
    InvalidRid(String),
    /// An encoding's codecPayloadType names no media codec of the parameters.
    #[error("encoding codecPayloadType {0} is not a media codec of rtpParameters")]
    UnknownCodecPayloadType(u8),
    /// Simulcast (several encodings) combined with an encoding of several spatial layers.
    #[error("cannot use both simulcast and encodings with multiple SVC spatial layers")]
    SimulcastWithSvc,
    /// A scalabilityMode string cannot be parsed.
    #[error("invalid scalabilityMode {0:?}")]
    InvalidScalabilityMode(String),
    /// A header extension id of 0 (ids are 1-255).
    #[error("invalid header extension id 0 for {0:?}")]
    InvalidHeaderExtensionId(String),
    /// Two header extensions share an id.
    #[error("duplicated header extension id {0}")]
    DuplicatedHeaderExtensionId(u8),
    /// A header extension has an empty uri.
    #[error("header extension with empty uri")]
    EmptyHeaderExtensionUri,
    /// A media codec in the router configuration is not supported by pipemesh.
    #[error("media codec not supported [mimeType:{0}]")]
    MediaCodecNotSupported(String),
    /// Two router codecs ask for the same preferred payload type.
    #[error("duplicated codec preferredPayloadType {0}")]
    DuplicatedPreferredPayloadType(u8),
    /// The router configuration needs more dynamic payload types than exist.
    #[error("cannot allocate more dynamic codec payload types")]
    PayloadTypesExhausted,
    /// A producer codec matches no router codec.
    #[error("unsupported codec [mimeType:{mime_type}, payloadType:{payload_type}]")]
    UnsupportedCodec {
        /// The producer codec's mimeType.
        mime_type: String,
        /// The producer codec's payload type.
        payload_type: u8,
    },
    /// A producer RTX codec's media codec has no RTX codec in the router.
    #[error("no RTX codec for router codec with payloadType {0}")]
    NoRtxForCodec(u8),
    /// An [`RtpMapping`] does not describe the RTP parameters it was given with.
    #[error("RTP mapping does not match the RTP parameters")]
    InvalidRtpMapping,
    /// The consumer supports none of the producer's media codecs.
    #[error("no compatible media codecs")]
    NoCompatibleCodecs,
}

/// The mapping of a producer's payload types and SSRCs to the router's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMapping {
    /// Producer payload type -> router payload type, for media and RTX codecs.
    pub codecs: Vec<RtpMappingCodec>,
    /// One entry per producer encoding, in order.
    pub encodings: Vec<RtpMappingEncoding>,
}

/// One codec of an [`RtpMapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMappingCodec {
    /// Payload type the producer uses.
    pub payload_type: u8,
    /// Payload type the router uses.
    pub mapped_payload_type: u8,
}

/// One encoding of an [`RtpMapping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMappingEncoding {
    /// SSRC the producer uses, when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// rid the producer uses, when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// The encoding's scalability mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// SSRC the router uses for this encoding.
    pub mapped_ssrc: u32,
}

/// A random SSRC in mediasoup's range (100000000..1000000000), leaving room to add small
/// offsets (per-encoding SSRCs are `base + i`, RTX is `ssrc + 1`) without wrapping.
pub fn random_ssrc<R: rand::Rng + ?Sized>(rng: &mut R) -> u32 {
    rng.random_range(100_000_000..1_000_000_000)
}

/// Dynamic payload types in allocation order (as mediasoup: 100-127, then 96-99).
const DYNAMIC_PAYLOAD_TYPES: [u8; 32] = [
    100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
    119, 120, 121, 122, 123, 124, 125, 126, 127, 96, 97, 98, 99,
];

fn video_feedback() -> Vec<RtcpFeedback> {
    vec![
        RtcpFeedback::new("nack", ""),
        RtcpFeedback::new("nack", "pli"),
        RtcpFeedback::new("ccm", "fir"),
        RtcpFeedback::new("goog-remb", ""),
        RtcpFeedback::new("transport-cc", ""),
    ]
}

fn cap(
    mime_type: &str,
    preferred_payload_type: Option<u8>,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: CodecParameters,
    rtcp_feedback: Vec<RtcpFeedback>,
) -> RtpCodecCapability {
    let kind = if mime_type.starts_with("video/") {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    RtpCodecCapability {
        kind,
        mime_type: mime_type.to_owned(),
        preferred_payload_type,
        clock_rate,
        channels,
        parameters,
        rtcp_feedback,
    }
}

fn ext(kind: MediaKind, uri: &str, id: u8, dir: RtpHeaderExtensionDirection) -> RtpHeaderExtension {
    RtpHeaderExtension {
        kind,
        uri: uri.to_owned(),
        preferred_id: id,
        preferred_encrypt: false,
        direction: dir,
    }
}

/// Everything pipemesh can route: mediasoup's supported codecs and header extensions (the
/// header extensions carry mediasoup's preferred ids and directions).
pub fn supported_rtp_capabilities() -> RtpCapabilities {
    use MediaKind::{Audio, Video};
    use RtpHeaderExtensionDirection::{Recvonly, Sendrecv};
    let p = CodecParameters::new;
    let audio_fb = || {
        vec![
            RtcpFeedback::new("nack", ""),
            RtcpFeedback::new("transport-cc", ""),
        ]
    };
    let tcc = || vec![RtcpFeedback::new("transport-cc", "")];
    let multiopus = |channels: u8, mapping: &str, streams: i64, coupled: i64| {
        cap(
            "audio/multiopus",
            None,
            48000,
            Some(channels),
            p().with("channel_mapping", mapping)
                .with("num_streams", streams)
                .with("coupled_streams", coupled),
            audio_fb(),
        )
    };
    let asym = || p().with("level-asymmetry-allowed", 1);
    let mut codecs = vec![
        cap("audio/opus", None, 48000, Some(2), p(), audio_fb()),
        multiopus(4, "0,1,2,3", 2, 2),
        multiopus(6, "0,4,1,2,3,5", 4, 2),
        multiopus(8, "0,6,1,2,3,4,5,7", 5, 3),
        cap("audio/PCMU", Some(0), 8000, None, p(), tcc()),
        cap("audio/PCMA", Some(8), 8000, None, p(), tcc()),
        cap("audio/ISAC", None, 32000, None, p(), tcc()),
        cap("audio/ISAC", None, 16000, None, p(), tcc()),
        cap("audio/G722", Some(9), 8000, None, p(), tcc()),
        cap("audio/iLBC", None, 8000, None, p(), tcc()),
    ];
    for rate in [24000, 16000, 12000, 8000] {
        codecs.push(cap("audio/SILK", None, rate, None, p(), tcc()));
    }
    for rate in [32000, 16000, 8000] {
        codecs.push(cap("audio/CN", Some(13), rate, None, p(), vec![]));
    }
    for rate in [48000, 32000, 16000, 8000] {
        codecs.push(cap("audio/telephone-event", None, rate, None, p(), vec![]));
    }
    codecs.extend([
        cap("video/VP8", None, 90000, None, p(), video_feedback()),
        cap("video/VP9", None, 90000, None, p(), video_feedback()),
        cap("video/H264", None, 90000, None, asym(), video_feedback()),
        cap(
            "video/H264-SVC",
            None,
            90000,
            None,
            asym(),
            video_feedback(),
        ),
        cap("video/H265", None, 90000, None, asym(), video_feedback()),
    ]);
    let header_extensions = vec![
        ext(Audio, uri::MID, 1, Sendrecv),
        ext(Video, uri::MID, 1, Sendrecv),
        ext(Video, uri::RTP_STREAM_ID, 2, Recvonly),
        ext(Video, uri::REPAIRED_RTP_STREAM_ID, 3, Recvonly),
        ext(Audio, uri::ABS_SEND_TIME, 4, Sendrecv),
        ext(Video, uri::ABS_SEND_TIME, 4, Sendrecv),
        // Audio only takes transport-cc when receiving, as mediasoup.
        ext(Audio, uri::TRANSPORT_WIDE_CC_01, 5, Recvonly),
        ext(Video, uri::TRANSPORT_WIDE_CC_01, 5, Sendrecv),
        ext(Audio, uri::SSRC_AUDIO_LEVEL, 10, Sendrecv),
        ext(Video, uri::VIDEO_ORIENTATION, 11, Sendrecv),
        ext(Video, uri::TOFFSET, 12, Sendrecv),
        ext(Audio, uri::ABS_CAPTURE_TIME, 13, Sendrecv),
        ext(Video, uri::ABS_CAPTURE_TIME, 13, Sendrecv),
        ext(Audio, uri::PLAYOUT_DELAY, 14, Sendrecv),
        ext(Video, uri::PLAYOUT_DELAY, 14, Sendrecv),
    ];
    RtpCapabilities {
        codecs,
        header_extensions,
    }
}

/// The router media codecs of mediasoup-demo's `server/config.js`: Opus, VP8, VP9 profile 2,
/// H264 Main (4d0032) and H264 Constrained Baseline (42e01f).
pub fn default_media_codecs() -> Vec<RtpCodecCapability> {
    let start = |p: CodecParameters| p.with("x-google-start-bitrate", 1000);
    let h264 = |plid: &str| {
        start(
            CodecParameters::new()
                .with("packetization-mode", 1)
                .with("profile-level-id", plid)
                .with("level-asymmetry-allowed", 1),
        )
    };
    vec![
        cap(
            "audio/opus",
            None,
            48000,
            Some(2),
            CodecParameters::new(),
            vec![],
        ),
        cap(
            "video/VP8",
            None,
            90000,
            None,
            start(CodecParameters::new()),
            vec![],
        ),
        cap(
            "video/VP9",
            None,
            90000,
            None,
            start(CodecParameters::new().with("profile-id", 2)),
            vec![],
        ),
        cap("video/h264", None, 90000, None, h264("4d0032"), vec![]),
        cap("video/h264", None, 90000, None, h264("42e01f"), vec![]),
    ]
}

/// Builds the router's RTP capabilities from its configured media codecs, as mediasoup's
/// `generateRouterRtpCapabilities`: each codec takes the supported codec it matches (with the
/// configured parameters merged over it), keeps a configured preferred payload type or gets
/// the next free dynamic one, and every video codec is followed by an RTX codec (`apt`).
/// Header extensions are all the supported ones.
pub fn generate_router_rtp_capabilities(
    media_codecs: &[RtpCodecCapability],
) -> Result<RtpCapabilities, OrtcError> {
    let supported = supported_rtp_capabilities();
    let mut dynamic: Vec<u8> = DYNAMIC_PAYLOAD_TYPES.to_vec();
    // Preferred payload types configured anywhere are reserved up front, so an RTX codec
    // allocated early cannot take one a later codec asks for.
    for mc in media_codecs {
        if let Some(pt) = mc.preferred_payload_type {
            dynamic.retain(|&d| d != pt);
        }
    }
    let mut dynamic = dynamic.into_iter();
    let mut codecs: Vec<RtpCodecCapability> = Vec::new();

    for media_codec in media_codecs {
        validate_codec_capability(media_codec)?;
        let Some(supported_codec) = supported
            .codecs
            .iter()
            .find(|s| match_capabilities(media_codec, s, false).is_ok())
        else {
            return Err(OrtcError::MediaCodecNotSupported(
                media_codec.mime_type.clone(),
            ));
        };
        let mut codec = supported_codec.clone();
        codec.preferred_payload_type = match (
            media_codec.preferred_payload_type,
            supported_codec.preferred_payload_type,
        ) {
            (Some(pt), _) | (None, Some(pt)) => Some(pt),
            (None, None) => Some(dynamic.next().ok_or(OrtcError::PayloadTypesExhausted)?),
        };
        let pt = codec.preferred_payload_type.unwrap_or_default();
        if codecs.iter().any(|c| c.preferred_payload_type == Some(pt)) {
            return Err(OrtcError::DuplicatedPreferredPayloadType(pt));
        }
        codec.parameters.merge(&media_codec.parameters);
        let kind = codec.kind;
        let clock_rate = codec.clock_rate;
        codecs.push(codec);

        if kind == MediaKind::Video {
            let rtx_pt = dynamic.next().ok_or(OrtcError::PayloadTypesExhausted)?;
            codecs.push(RtpCodecCapability {
                kind,
                mime_type: format!("{kind}/rtx"),
                preferred_payload_type: Some(rtx_pt),
                clock_rate,
                channels: None,
                parameters: CodecParameters::new().with("apt", i64::from(pt)),
                rtcp_feedback: vec![],
            });
        }
    }

    Ok(RtpCapabilities {
        codecs,
        header_extensions: supported.header_extensions,
    })
}

fn validate_mime_type(mime_type: &str) -> Result<MediaKind, OrtcError> {
    parse_mime_type(mime_type)
        .map(|(kind, _)| kind)
        .ok_or_else(|| OrtcError::InvalidMimeType(mime_type.to_owned()))
}

fn validate_codec_capability(codec: &RtpCodecCapability) -> Result<(), OrtcError> {
    let kind = validate_mime_type(&codec.mime_type)?;
    if kind != codec.kind {
        return Err(OrtcError::KindMismatch {
            kind: codec.kind,
            mime_type: codec.mime_type.clone(),
        });
    }
    if codec.clock_rate == 0 {
        return Err(OrtcError::InvalidClockRate(codec.mime_type.clone()));
    }
    if let Some(pt) = codec.preferred_payload_type {
        if pt > 127 {
            return Err(OrtcError::InvalidPayloadType(pt));
        }
    }
    if codec.is_rtx() && codec.apt().is_none() {
        return Err(OrtcError::RtxWithoutApt(
            codec.preferred_payload_type.unwrap_or_default(),
        ));
    }
    Ok(())
}

/// Validates RTP capabilities (a client's, from `join`, or a configured router's): valid
/// mimeTypes agreeing with `kind`, non-zero clock rates, payload types within 0..=127, RTX
/// codecs with an `apt`, and header extensions with a uri and a non-zero id.
pub fn validate_rtp_capabilities(caps: &RtpCapabilities) -> Result<(), OrtcError> {
    for codec in &caps.codecs {
        validate_codec_capability(codec)?;
    }
    for ext in &caps.header_extensions {
        if ext.uri.is_empty() {
            return Err(OrtcError::EmptyHeaderExtensionUri);
        }
        if ext.preferred_id == 0 {
            return Err(OrtcError::InvalidHeaderExtensionId(ext.uri.clone()));
        }
    }
    Ok(())
}

/// Whether a rid is valid per RFC 8851 and fits the one-byte RTP header extension.
fn is_valid_rid(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= 16
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validates a producer's RTP parameters as mediasoup (client-side checks plus the worker's):
/// non-empty mid if any; codecs with valid mimeTypes, clock rates and unique payload types in
/// 0..=127; every RTX codec's `apt` naming a media codec; at least one media codec; header
/// extensions with a uri and unique non-zero ids; at least one encoding; several encodings all
/// identified by rid or all by ssrc (unique, rids per RFC 8851); a single encoding with
/// neither only when there is a mid; `codecPayloadType` naming a media codec; valid
/// scalability modes, and no simulcast of multi-spatial-layer encodings.
pub fn validate_rtp_parameters(params: &RtpParameters) -> Result<(), OrtcError> {
    if params.mid.as_deref() == Some("") {
        return Err(OrtcError::EmptyMid);
    }
    validate_codecs(&params.codecs)?;
    validate_header_extensions(&params.header_extensions)?;
    validate_encodings(params)
}

fn validate_codecs(codecs: &[RtpCodecParameters]) -> Result<(), OrtcError> {
    let mut seen = [false; 128];
    for codec in codecs {
        validate_mime_type(&codec.mime_type)?;
        if codec.clock_rate == 0 {
            return Err(OrtcError::InvalidClockRate(codec.mime_type.clone()));
        }
        let pt = codec.payload_type;
        let slot = seen
            .get_mut(usize::from(pt))
            .ok_or(OrtcError::InvalidPayloadType(pt))?;
        if *slot {
            return Err(OrtcError::DuplicatedPayloadType(pt));
        }
        *slot = true;
    }
    for codec in codecs.iter().filter(|c| c.is_rtx()) {
        let pt = codec.payload_type;
        let apt = codec.apt().ok_or(OrtcError::RtxWithoutApt(pt))?;
        let target =
            codecs
                .iter()
                .find(|c| c.payload_type == apt)
                .ok_or(OrtcError::RtxAptUnknown {
                    payload_type: pt,
                    apt,
                })?;
        if !is_media_codec(target) {
            return Err(OrtcError::RtxAptNotMedia {
                payload_type: pt,
                apt,
            });
        }
    }
    if !codecs.iter().any(is_media_codec) {
        return Err(OrtcError::NoMediaCodecs);
    }
    Ok(())
}

/// Media codecs are those that are not RTX/FEC/RED/CN/DTMF; unknown subtypes count as media
/// (the router's capabilities decide later whether they are supported).
fn is_media_codec(codec: &RtpCodecParameters) -> bool {
    Codec::from_mime_type(&codec.mime_type).is_none_or(Codec::is_media)
}

fn validate_header_extensions(exts: &[RtpHeaderExtensionParameters]) -> Result<(), OrtcError> {
    let mut seen = [false; 256];
    for ext in exts {
        if ext.uri.is_empty() {
            return Err(OrtcError::EmptyHeaderExtensionUri);
        }
        if ext.id == 0 {
            return Err(OrtcError::InvalidHeaderExtensionId(ext.uri.clone()));
        }
        // `seen` has 256 entries, so any u8 id indexes it.
        let slot = &mut seen[usize::from(ext.id)];
        if *slot {
            return Err(OrtcError::DuplicatedHeaderExtensionId(ext.id));
        }
        *slot = true;
    }
    Ok(())
}

fn validate_encodings(params: &RtpParameters) -> Result<(), OrtcError> {
    let encodings = &params.encodings;
    if encodings.is_empty() {
        return Err(OrtcError::NoEncodings);
    }
    if encodings.len() > 1 {
        let all_rid = encodings.iter().all(|e| e.rid.is_some());
        let all_ssrc = encodings.iter().all(|e| e.ssrc.is_some());
        if !all_rid && !all_ssrc {
            return Err(OrtcError::MixedEncodings);
        }
    } else if params.mid.is_none()
        && encodings
            .iter()
            .all(|e| e.rid.is_none() && e.ssrc.is_none())
    {
        return Err(OrtcError::UnidentifiedEncoding);
    }
    let mut rids: Vec<&str> = Vec::new();
    let mut ssrcs: Vec<u32> = Vec::new();
    for enc in encodings {
        if let Some(rid) = enc.rid.as_deref() {
            if !is_valid_rid(rid) {
                return Err(OrtcError::InvalidRid(rid.to_owned()));
            }
            if rids.contains(&rid) {
                return Err(OrtcError::DuplicatedRid(rid.to_owned()));
            }
            rids.push(rid);
        }
        for ssrc in enc.ssrc.into_iter().chain(enc.rtx.map(|r| r.ssrc)) {
            if ssrcs.contains(&ssrc) {
                return Err(OrtcError::DuplicatedSsrc(ssrc));
            }
            ssrcs.push(ssrc);
        }
        if let Some(pt) = enc.codec_payload_type {
            if !params
                .codecs
                .iter()
                .any(|c| c.payload_type == pt && is_media_codec(c))
            {
                return Err(OrtcError::UnknownCodecPayloadType(pt));
            }
        }
        if let Some(mode) = enc.scalability_mode.as_deref() {
            let parsed = ScalabilityMode::parse(mode)
                .map_err(|_| OrtcError::InvalidScalabilityMode(mode.to_owned()))?;
            if parsed.spatial_layers > 1 && encodings.len() > 1 {
                return Err(OrtcError::SimulcastWithSvc);
            }
        }
    }
    Ok(())
}

/// Maps a producer's codecs and encodings onto the router's, as mediasoup's
/// `getProducerRtpParametersMapping`: every media codec must strictly match a router codec
/// (H264 profile / packetization-mode, VP9 profile-id included), every RTX codec maps to the
/// router RTX codec of its media codec, and each encoding gets a router SSRC (`ssrc_gen()` for
/// the first, then consecutive), keeping its rid, ssrc and scalability mode.
/// Call [`validate_rtp_parameters`] first.
pub fn get_producer_rtp_parameters_mapping(
    params: &RtpParameters,
    router_caps: &RtpCapabilities,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> Result<RtpMapping, OrtcError> {
    let mut mapping = RtpMapping::default();

    for codec in params.codecs.iter().filter(|c| !c.is_rtx()) {
        let cap = router_caps
            .codecs
            .iter()
            .find(|cap| match_codecs(codec.into(), (*cap).into(), true).is_ok())
            .and_then(|cap| cap.preferred_payload_type)
            .ok_or_else(|| OrtcError::UnsupportedCodec {
                mime_type: codec.mime_type.clone(),
                payload_type: codec.payload_type,
            })?;
        mapping.codecs.push(RtpMappingCodec {
            payload_type: codec.payload_type,
            mapped_payload_type: cap,
        });
    }

    for codec in params.codecs.iter().filter(|c| c.is_rtx()) {
        let apt = codec
            .apt()
            .ok_or(OrtcError::RtxWithoutApt(codec.payload_type))?;
        let mapped_media = mapping
            .codecs
            .iter()
            .find(|m| m.payload_type == apt)
            .map(|m| m.mapped_payload_type)
            .ok_or(OrtcError::RtxAptUnknown {
                payload_type: codec.payload_type,
                apt,
            })?;
        let mapped_rtx = router_caps
            .codecs
            .iter()
            .find(|c| c.is_rtx() && c.apt() == Some(mapped_media))
            .and_then(|c| c.preferred_payload_type)
            .ok_or(OrtcError::NoRtxForCodec(mapped_media))?;
        mapping.codecs.push(RtpMappingCodec {
            payload_type: codec.payload_type,
            mapped_payload_type: mapped_rtx,
        });
    }

    let base = ssrc_gen();
    for (i, enc) in params.encodings.iter().enumerate() {
        mapping.encodings.push(RtpMappingEncoding {
            ssrc: enc.ssrc,
            rid: enc.rid.clone(),
            scalability_mode: enc.scalability_mode.clone(),
            mapped_ssrc: base.wrapping_add(u32::try_from(i).unwrap_or(u32::MAX)),
        });
    }
    Ok(mapping)
}

/// The router-side ("consumable") RTP parameters of a producer, as mediasoup's
/// `getConsumableRtpParameters`: router payload types (producer codec parameters kept, router
/// RTCP feedback), each media codec followed by the router's RTX codec, the router's header
/// extensions of this kind that the router can send (sendrecv/sendonly, router ids), one
/// encoding per producer encoding carrying its mapped SSRC (no rid, rtx or
/// codecPayloadType), and the producer's cname with reduced-size RTCP.
pub fn get_consumable_rtp_parameters(
    kind: MediaKind,
    params: &RtpParameters,
    router_caps: &RtpCapabilities,
    mapping: &RtpMapping,
) -> Result<RtpParameters, OrtcError> {
    let mut out = RtpParameters::default();

    for codec in params.codecs.iter().filter(|c| !c.is_rtx()) {
        let mapped_pt = mapping
            .codecs
            .iter()
            .find(|m| m.payload_type == codec.payload_type)
            .map(|m| m.mapped_payload_type)
            .ok_or(OrtcError::InvalidRtpMapping)?;
        let cap = router_caps
            .codecs
            .iter()
            .find(|c| c.preferred_payload_type == Some(mapped_pt))
            .ok_or(OrtcError::InvalidRtpMapping)?;
        out.codecs.push(RtpCodecParameters {
            mime_type: cap.mime_type.clone(),
            payload_type: mapped_pt,
            clock_rate: cap.clock_rate,
            channels: cap.channels,
            parameters: codec.parameters.clone(),
            rtcp_feedback: cap.rtcp_feedback.clone(),
        });
        if let Some(rtx) = router_caps
            .codecs
            .iter()
            .find(|c| c.is_rtx() && c.apt() == Some(mapped_pt))
        {
            out.codecs.push(RtpCodecParameters {
                mime_type: rtx.mime_type.clone(),
                payload_type: rtx.preferred_payload_type.unwrap_or_default(),
                clock_rate: rtx.clock_rate,
                channels: None,
                parameters: rtx.parameters.clone(),
                rtcp_feedback: rtx.rtcp_feedback.clone(),
            });
        }
    }

    out.header_extensions = router_caps
        .header_extensions
        .iter()
        .filter(|e| {
            e.kind == kind
                && matches!(
                    e.direction,
                    RtpHeaderExtensionDirection::Sendrecv | RtpHeaderExtensionDirection::Sendonly
                )
        })
        .map(|e| RtpHeaderExtensionParameters {
            uri: e.uri.clone(),
            id: e.preferred_id,
            encrypt: e.preferred_encrypt,
            parameters: CodecParameters::new(),
        })
        .collect();

    if mapping.encodings.len() != params.encodings.len() {
        return Err(OrtcError::InvalidRtpMapping);
    }
    for (enc, mapped) in params.encodings.iter().zip(&mapping.encodings) {
        out.encodings.push(RtpEncodingParameters {
            ssrc: Some(mapped.mapped_ssrc),
            rid: None,
            rtx: None,
            codec_payload_type: None,
            ..enc.clone()
        });
    }

    out.rtcp = RtcpParameters {
        cname: params.rtcp.cname.clone(),
        reduced_size: true,
        mux: None,
    };
    Ok(out)
}

/// Whether an endpoint with `caps` can consume a producer with these consumable parameters:
/// the first consumable codec the endpoint supports (strict match) is a media codec.
/// Fails only if `caps` is invalid.
pub fn can_consume(consumable: &RtpParameters, caps: &RtpCapabilities) -> Result<bool, OrtcError> {
    validate_rtp_capabilities(caps)?;
    let first = consumable.codecs.iter().find(|codec| {
        caps.codecs
            .iter()
            .any(|cap| match_codecs(cap.into(), (*codec).into(), true).is_ok())
    });
    Ok(first.is_some_and(|c| !c.is_rtx()))
}

/// Consumer codecs: the consumable codecs the endpoint supports, each with the endpoint's
/// RTCP feedback; RTX codecs whose media codec did not survive are dropped. Returns the codecs
/// and whether RTX was negotiated.
fn consumer_codecs(
    consumable: &RtpParameters,
    caps: &RtpCapabilities,
) -> Result<(Vec<RtpCodecParameters>, bool), OrtcError> {
    let mut codecs: Vec<RtpCodecParameters> = Vec::new();
    for codec in &consumable.codecs {
        if let Some(cap) = caps
            .codecs
            .iter()
            .find(|cap| match_codecs((*cap).into(), codec.into(), true).is_ok())
        {
            codecs.push(RtpCodecParameters {
                rtcp_feedback: cap.rtcp_feedback.clone(),
                ..codec.clone()
            });
        }
    }
    let media_pts: Vec<u8> = codecs
        .iter()
        .filter(|c| !c.is_rtx())
        .map(|c| c.payload_type)
        .collect();
    codecs.retain(|c| !c.is_rtx() || c.apt().is_some_and(|apt| media_pts.contains(&apt)));
    match codecs.first() {
        Some(first) if !first.is_rtx() => {}
        _ => return Err(OrtcError::NoCompatibleCodecs),
    }
    let rtx = codecs.iter().any(RtpCodecParameters::is_rtx);
    Ok((codecs, rtx))
}

/// Keeps transport-cc feedback if the transport-cc extension is negotiated, else REMB if
/// abs-send-time is, else neither (mediasoup's rule).
fn reduce_bwe_feedback(params: &mut RtpParameters) {
    let has = |u: &str| params.header_extensions.iter().any(|e| e.uri == u);
    let drop: &[&str] = if has(uri::TRANSPORT_WIDE_CC_01) {
        &["goog-remb"]
    } else if has(uri::ABS_SEND_TIME) {
        &["transport-cc"]
    } else {
        &["transport-cc", "goog-remb"]
    };
    for codec in &mut params.codecs {
        codec
            .rtcp_feedback
            .retain(|fb| !drop.contains(&fb.r#type.as_str()));
    }
}

/// The RTP parameters of a consumer, as mediasoup's `getConsumerRtpParameters` (RTX enabled):
/// the consumable codecs the endpoint supports (media codec plus its RTX), the consumable
/// header extensions the endpoint accepts with the same id for the same kind, BWE feedback
/// reduced to what the extensions allow, and
/// - for a regular consumer (`pipe == false`), a single encoding with a fresh SSRC, an RTX
///   SSRC (`ssrc + 1`) when RTX is negotiated, the highest `maxBitrate` of the producer's
///   encodings, and a scalability mode telling mediasoup-client the layers: `S{n}T{m}` for a
///   simulcast producer of n encodings with m temporal layers, or the producer's own mode;
/// - for a pipe consumer, every consumable encoding with consecutive fresh SSRCs (and RTX
///   SSRCs when negotiated).
///
/// Fails with [`OrtcError::NoCompatibleCodecs`] when the endpoint supports no media codec.
pub fn get_consumer_rtp_parameters(
    consumable: &RtpParameters,
    caps: &RtpCapabilities,
    pipe: bool,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> Result<RtpParameters, OrtcError> {
    let (codecs, rtx) = consumer_codecs(consumable, caps)?;
    // mediasoup matches extensions on uri and id only; we also require the kind, so an audio
    // consumer does not get an extension the endpoint accepts only for video.
    let kind = codecs
        .first()
        .and_then(|c| parse_mime_type(&c.mime_type))
        .map(|(kind, _)| kind);
    let mut out = RtpParameters {
        mid: None,
        codecs,
        header_extensions: consumable
            .header_extensions
            .iter()
            .filter(|e| {
                caps.header_extensions
                    .iter()
                    .any(|c| c.preferred_id == e.id && c.uri == e.uri && Some(c.kind) == kind)
            })
            .cloned()
            .collect(),
        encodings: vec![],
        rtcp: consumable.rtcp.clone(),
    };
    reduce_bwe_feedback(&mut out);

    if pipe {
        out.encodings = numbered_encodings(&consumable.encodings, rtx, ssrc_gen);
        return Ok(out);
    }

    let ssrc = ssrc_gen();
    let encodings = &consumable.encodings;
    let mut scalability_mode = encodings.iter().find_map(|e| e.scalability_mode.clone());
    if encodings.len() > 1 {
        let temporal =
            ScalabilityMode::parse_or_default(scalability_mode.as_deref()).temporal_layers;
        scalability_mode = Some(format!("S{}T{}", encodings.len(), temporal));
    }
    let max_bitrate = encodings.iter().filter_map(|e| e.max_bitrate).max();
    out.encodings.push(RtpEncodingParameters {
        ssrc: Some(ssrc),
        rtx: rtx.then(|| RtpEncodingParametersRtx {
            ssrc: ssrc.wrapping_add(1),
        }),
        scalability_mode,
        max_bitrate: max_bitrate.filter(|&b| b > 0),
        ..Default::default()
    });
    Ok(out)
}

/// Copies encodings giving them consecutive fresh SSRCs (and RTX SSRCs when `rtx`).
fn numbered_encodings(
    encodings: &[RtpEncodingParameters],
    rtx: bool,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> Vec<RtpEncodingParameters> {
    let base = ssrc_gen();
    let base_rtx = if rtx { ssrc_gen() } else { 0 };
    encodings
        .iter()
        .zip(0u32..)
        .map(|(enc, i)| RtpEncodingParameters {
            ssrc: Some(base.wrapping_add(i)),
            rtx: rtx.then(|| RtpEncodingParametersRtx {
                ssrc: base_rtx.wrapping_add(i),
            }),
            ..enc.clone()
        })
        .collect()
}

/// The RTP parameters of a producer's stream as it crosses a pipe transport to another
/// router, as mediasoup's `getPipeConsumerRtpParameters`: all consumable codecs (RTX only when
/// `enable_rtx`) with feedback limited to PLI, FIR and (with RTX) NACK; header extensions
/// without the transport-level ones (mid, abs-send-time, transport-cc), since a pipe does no
/// BUNDLE or bandwidth estimation; and every encoding with consecutive fresh SSRCs.
pub fn get_pipe_rtp_parameters(
    consumable: &RtpParameters,
    enable_rtx: bool,
    ssrc_gen: &mut impl FnMut() -> u32,
) -> RtpParameters {
    let codecs: Vec<RtpCodecParameters> = consumable
        .codecs
        .iter()
        .filter(|c| enable_rtx || !c.is_rtx())
        .map(|c| {
            let mut c = c.clone();
            c.rtcp_feedback.retain(|fb| {
                matches!(
                    (fb.r#type.as_str(), fb.parameter.as_str()),
                    ("nack", "pli") | ("ccm", "fir")
                ) || (enable_rtx && fb.r#type == "nack" && fb.parameter.is_empty())
            });
            c
        })
        .collect();
    let header_extensions = consumable
        .header_extensions
        .iter()
        .filter(|e| {
            ![uri::MID, uri::ABS_SEND_TIME, uri::TRANSPORT_WIDE_CC_01].contains(&e.uri.as_str())
        })
        .cloned()
        .collect();
    // Unlike mediasoup, no RTX SSRCs are announced for a stream without an RTX codec (audio).
    let rtx = codecs.iter().any(RtpCodecParameters::is_rtx);
    RtpParameters {
        mid: None,
        codecs,
        header_extensions,
        encodings: numbered_encodings(&consumable.encodings, rtx, ssrc_gen),
        rtcp: consumable.rtcp.clone(),
    }
}
