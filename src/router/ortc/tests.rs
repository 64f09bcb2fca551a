//! Unit tests of [`super`]: capability generation, validation, mapping and consumer
//! parameters, against mediasoup's behaviour and captured Chromium fixtures.

use super::*;
use crate::router::rtp_parameters::ParameterValue;

const CHROME_CAPS: &str = include_str!("../../../tests/fixtures/chrome_rtp_capabilities.json");
const VP8_SIMULCAST: &str =
    include_str!("../../../tests/fixtures/chrome_producer_vp8_simulcast.json");
const OPUS: &str = include_str!("../../../tests/fixtures/chrome_producer_opus.json");

fn router_caps() -> RtpCapabilities {
    generate_router_rtp_capabilities(&default_media_codecs()).unwrap()
}
fn chrome_caps() -> RtpCapabilities {
    serde_json::from_str(CHROME_CAPS).unwrap()
}
fn vp8() -> RtpParameters {
    serde_json::from_str(VP8_SIMULCAST).unwrap()
}
fn opus() -> RtpParameters {
    serde_json::from_str(OPUS).unwrap()
}
/// Deterministic SSRC generator: 1000, 2000, 3000, ...
fn counter() -> impl FnMut() -> u32 {
    let mut n = 0;
    move || {
        n += 1000;
        n
    }
}
fn pts(codecs: &[RtpCodecParameters]) -> Vec<(String, u8)> {
    codecs
        .iter()
        .map(|c| (c.mime_type.clone(), c.payload_type))
        .collect()
}
fn uris(exts: &[RtpHeaderExtensionParameters]) -> Vec<(&str, u8)> {
    exts.iter().map(|e| (e.uri.as_str(), e.id)).collect()
}
fn consumable(params: &RtpParameters, kind: MediaKind) -> RtpParameters {
    let caps = router_caps();
    let mapping = get_producer_rtp_parameters_mapping(params, &caps, &mut counter()).unwrap();
    get_consumable_rtp_parameters(kind, params, &caps, &mapping).unwrap()
}

#[test]
fn router_capabilities_from_demo_codecs() {
    let caps = router_caps();
    let got: Vec<(&str, Option<u8>, Option<i64>)> = caps
        .codecs
        .iter()
        .map(|c| {
            (
                c.mime_type.as_str(),
                c.preferred_payload_type,
                c.parameters.get_i64("apt"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("audio/opus", Some(100), None),
            ("video/VP8", Some(101), None),
            ("video/rtx", Some(102), Some(101)),
            ("video/VP9", Some(103), None),
            ("video/rtx", Some(104), Some(103)),
            ("video/H264", Some(105), None),
            ("video/rtx", Some(106), Some(105)),
            ("video/H264", Some(107), None),
            ("video/rtx", Some(108), Some(107)),
        ]
    );
    let h264 = &caps.codecs[5].parameters;
    assert_eq!(
        h264.get("profile-level-id"),
        Some(&ParameterValue::from("4d0032"))
    );
    assert_eq!(h264.get_i64("level-asymmetry-allowed"), Some(1));
    assert_eq!(h264.get_i64("x-google-start-bitrate"), Some(1000));
    assert_eq!(caps.codecs[3].parameters.get_i64("profile-id"), Some(2));
    assert_eq!(caps.codecs[1].rtcp_feedback, video_feedback());
    assert_eq!(caps.codecs[0].channels, Some(2));
    assert_eq!(
        caps.codecs[0].rtcp_feedback,
        vec![
            RtcpFeedback::new("nack", ""),
            RtcpFeedback::new("transport-cc", "")
        ]
    );
    assert!(caps.codecs[2].rtcp_feedback.is_empty());

    let ext = |kind, u: &str| {
        caps.header_extensions
            .iter()
            .find(|e| e.kind == kind && e.uri == u)
            .map(|e| (e.preferred_id, e.direction))
    };
    use MediaKind::{Audio, Video};
    use RtpHeaderExtensionDirection::{Recvonly, Sendrecv};
    assert_eq!(ext(Audio, uri::MID), Some((1, Sendrecv)));
    assert_eq!(ext(Video, uri::RTP_STREAM_ID), Some((2, Recvonly)));
    assert_eq!(ext(Video, uri::REPAIRED_RTP_STREAM_ID), Some((3, Recvonly)));
    assert_eq!(ext(Video, uri::ABS_SEND_TIME), Some((4, Sendrecv)));
    assert_eq!(ext(Audio, uri::TRANSPORT_WIDE_CC_01), Some((5, Recvonly)));
    assert_eq!(ext(Video, uri::TRANSPORT_WIDE_CC_01), Some((5, Sendrecv)));
    assert_eq!(ext(Audio, uri::SSRC_AUDIO_LEVEL), Some((10, Sendrecv)));
    assert_eq!(ext(Video, uri::VIDEO_ORIENTATION), Some((11, Sendrecv)));
    assert_eq!(ext(Video, uri::TOFFSET), Some((12, Sendrecv)));
    assert_eq!(ext(Video, uri::ABS_CAPTURE_TIME), Some((13, Sendrecv)));
    assert_eq!(ext(Audio, uri::PLAYOUT_DELAY), Some((14, Sendrecv)));
    assert_eq!(caps.header_extensions.len(), 15);
    validate_rtp_capabilities(&caps).unwrap();
}

#[test]
fn router_capabilities_payload_type_rules() {
    // A configured preferred payload type is kept and not reused for others.
    let mut codecs = default_media_codecs();
    codecs[1].preferred_payload_type = Some(101);
    codecs[0].preferred_payload_type = Some(102);
    let caps = generate_router_rtp_capabilities(&codecs).unwrap();
    let all: Vec<u8> = caps
        .codecs
        .iter()
        .filter_map(|c| c.preferred_payload_type)
        .collect();
    assert_eq!(&all[..3], &[102, 101, 100]);
    let mut dedup = all.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len());

    // Static payload types of the supported codec (PCMU = 0) are used.
    let pcmu = cap(
        "audio/PCMU",
        None,
        8000,
        None,
        CodecParameters::new(),
        vec![],
    );
    let caps = generate_router_rtp_capabilities(std::slice::from_ref(&pcmu)).unwrap();
    assert_eq!(caps.codecs[0].preferred_payload_type, Some(0));
    assert_eq!(
        generate_router_rtp_capabilities(&[pcmu.clone(), pcmu]),
        Err(OrtcError::DuplicatedPreferredPayloadType(0))
    );
}

#[test]
fn router_capabilities_errors() {
    let foo = cap(
        "video/FOO",
        None,
        90000,
        None,
        CodecParameters::new(),
        vec![],
    );
    assert_eq!(
        generate_router_rtp_capabilities(&[foo]),
        Err(OrtcError::MediaCodecNotSupported("video/FOO".into()))
    );
    // Opus at the wrong clock rate is not a supported codec either.
    let opus = cap(
        "audio/opus",
        None,
        44100,
        Some(2),
        CodecParameters::new(),
        vec![],
    );
    assert!(matches!(
        generate_router_rtp_capabilities(&[opus]),
        Err(OrtcError::MediaCodecNotSupported(_))
    ));
    // 17 video codecs need 34 dynamic payload types; there are 32.
    let vp8 = cap(
        "video/VP8",
        None,
        90000,
        None,
        CodecParameters::new(),
        vec![],
    );
    assert_eq!(
        generate_router_rtp_capabilities(&vec![vp8; 17]),
        Err(OrtcError::PayloadTypesExhausted)
    );
    let mut bad = cap(
        "video/VP8",
        None,
        90000,
        None,
        CodecParameters::new(),
        vec![],
    );
    bad.kind = MediaKind::Audio;
    assert!(matches!(
        generate_router_rtp_capabilities(&[bad]),
        Err(OrtcError::KindMismatch { .. })
    ));
}

#[test]
fn chrome_capabilities_are_valid() {
    validate_rtp_capabilities(&chrome_caps()).unwrap();
    validate_rtp_capabilities(&supported_rtp_capabilities()).unwrap();
}

#[test]
fn invalid_capabilities_are_rejected() {
    let mut caps = chrome_caps();
    caps.codecs[0].mime_type = "opus".into();
    assert_eq!(
        validate_rtp_capabilities(&caps),
        Err(OrtcError::InvalidMimeType("opus".into()))
    );
    let mut caps = chrome_caps();
    caps.codecs[2].parameters.remove("apt");
    assert_eq!(
        validate_rtp_capabilities(&caps),
        Err(OrtcError::RtxWithoutApt(102))
    );
    let mut caps = chrome_caps();
    caps.header_extensions[0].preferred_id = 0;
    assert!(matches!(
        validate_rtp_capabilities(&caps),
        Err(OrtcError::InvalidHeaderExtensionId(_))
    ));
    let mut caps = chrome_caps();
    caps.codecs[1].clock_rate = 0;
    assert!(matches!(
        validate_rtp_capabilities(&caps),
        Err(OrtcError::InvalidClockRate(_))
    ));
}

#[test]
fn fixtures_are_valid_producer_parameters() {
    validate_rtp_parameters(&vp8()).unwrap();
    validate_rtp_parameters(&opus()).unwrap();
}

#[test]
fn vp8_simulcast_producer_mapping() {
    let mapping =
        get_producer_rtp_parameters_mapping(&vp8(), &router_caps(), &mut counter()).unwrap();
    assert_eq!(
        mapping.codecs,
        vec![
            RtpMappingCodec {
                payload_type: 96,
                mapped_payload_type: 101
            },
            RtpMappingCodec {
                payload_type: 97,
                mapped_payload_type: 102
            },
        ]
    );
    type Row<'a> = (Option<&'a str>, Option<u32>, Option<&'a str>, u32);
    let encs: Vec<Row<'_>> = mapping
        .encodings
        .iter()
        .map(|e| {
            (
                e.rid.as_deref(),
                e.ssrc,
                e.scalability_mode.as_deref(),
                e.mapped_ssrc,
            )
        })
        .collect();
    assert_eq!(
        encs,
        vec![
            (Some("r0"), None, Some("L1T3"), 1000),
            (Some("r1"), None, Some("L1T3"), 1001),
            (Some("r2"), None, Some("L1T3"), 1002),
        ]
    );
    // The mapping is sent to other nodes: check its JSON shape once.
    let json = serde_json::to_value(&mapping).unwrap();
    assert_eq!(json["codecs"][0]["mappedPayloadType"], 101);
    assert_eq!(json["encodings"][0]["mappedSsrc"], 1000);
    assert!(json["encodings"][0].get("ssrc").is_none());
}

#[test]
fn opus_producer_mapping() {
    let mapping =
        get_producer_rtp_parameters_mapping(&opus(), &router_caps(), &mut counter()).unwrap();
    assert_eq!(
        mapping.codecs,
        vec![RtpMappingCodec {
            payload_type: 111,
            mapped_payload_type: 100
        }]
    );
    assert_eq!(mapping.encodings.len(), 1);
    assert_eq!(mapping.encodings[0].ssrc, Some(2731590123));
    assert_eq!(mapping.encodings[0].mapped_ssrc, 1000);
}

fn h264_producer(plid: &str, mode: i64) -> RtpParameters {
    let mut p = vp8();
    p.codecs[0].mime_type = "video/H264".into();
    p.codecs[0].parameters = CodecParameters::new()
        .with("level-asymmetry-allowed", 1)
        .with("packetization-mode", mode)
        .with("profile-level-id", plid);
    p
}

#[test]
fn h264_producers_map_by_profile() {
    let caps = router_caps();
    let map = |p: &RtpParameters| {
        get_producer_rtp_parameters_mapping(p, &caps, &mut counter()).map(|m| {
            (
                m.codecs[0].mapped_payload_type,
                m.codecs[1].mapped_payload_type,
            )
        })
    };
    assert_eq!(map(&h264_producer("42e01f", 1)), Ok((107, 108)));
    assert_eq!(map(&h264_producer("4d001f", 1)), Ok((105, 106)));
    assert_eq!(map(&h264_producer("4d0032", 1)), Ok((105, 106)));
    // Baseline (not constrained), High, and packetization-mode 0 are not in the router.
    for (plid, mode) in [("42001f", 1), ("640032", 1), ("42e01f", 0)] {
        assert_eq!(
            map(&h264_producer(plid, mode)),
            Err(OrtcError::UnsupportedCodec {
                mime_type: "video/H264".into(),
                payload_type: 96
            }),
            "{plid} mode {mode}"
        );
    }
}

#[test]
fn vp9_profile_must_match() {
    let caps = router_caps();
    let mut p = vp8();
    p.codecs[0].mime_type = "video/VP9".into();
    p.codecs[0].parameters = CodecParameters::new().with("profile-id", 2);
    let m = get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()).unwrap();
    assert_eq!(m.codecs[0].mapped_payload_type, 103);
    p.codecs[0].parameters = CodecParameters::new().with("profile-id", 0);
    assert!(matches!(
        get_producer_rtp_parameters_mapping(&p, &caps, &mut counter()),
        Err(OrtcError::UnsupportedCodec { .. })
    ));
}

#[test]
fn unknown_codec_is_unsupported() {
    let mut p = vp8();
    p.codecs[0].mime_type = "video/FOO".into();
    validate_rtp_parameters(&p).unwrap();
    let err = get_producer_rtp_parameters_mapping(&p, &router_caps(), &mut counter()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported codec [mimeType:video/FOO, payloadType:96]"
    );
}

#[test]
fn vp8_consumable_parameters() {
    let c = consumable(&vp8(), MediaKind::Video);
    assert_eq!(
        pts(&c.codecs),
        vec![("video/VP8".into(), 101), ("video/rtx".into(), 102)]
    );
    // Router feedback, producer parameters.
    assert_eq!(c.codecs[0].rtcp_feedback, video_feedback());
    assert!(c.codecs[0].parameters.is_empty());
    assert_eq!(c.codecs[1].apt(), Some(101));
    assert_eq!(
        uris(&c.header_extensions),
        vec![
            (uri::MID, 1),
            (uri::ABS_SEND_TIME, 4),
            (uri::TRANSPORT_WIDE_CC_01, 5),
            (uri::VIDEO_ORIENTATION, 11),
            (uri::TOFFSET, 12),
            (uri::ABS_CAPTURE_TIME, 13),
            (uri::PLAYOUT_DELAY, 14),
        ]
    );
    assert_eq!(c.encodings.len(), 3);
    for (i, e) in c.encodings.iter().enumerate() {
        assert_eq!(e.ssrc, Some(1000 + i as u32));
        assert_eq!(e.rid, None);
        assert_eq!(e.scalability_mode.as_deref(), Some("L1T3"));
    }
    assert_eq!(c.encodings[2].max_bitrate, Some(5_000_000));
    assert_eq!(c.rtcp.cname.as_deref(), Some("pF2Vw4mJhZ9kqT8x"));
    assert!(c.rtcp.reduced_size);
    assert_eq!(c.mid, None);
}

#[test]
fn opus_consumable_parameters() {
    let c = consumable(&opus(), MediaKind::Audio);
    assert_eq!(pts(&c.codecs), vec![("audio/opus".into(), 100)]);
    assert_eq!(c.codecs[0].channels, Some(2));
    assert_eq!(c.codecs[0].parameters.get_i64("useinbandfec"), Some(1));
    // Audio transport-cc is receive-only in the router: not offered to consumers.
    assert_eq!(
        uris(&c.header_extensions),
        vec![
            (uri::MID, 1),
            (uri::ABS_SEND_TIME, 4),
            (uri::SSRC_AUDIO_LEVEL, 10),
            (uri::ABS_CAPTURE_TIME, 13),
            (uri::PLAYOUT_DELAY, 14),
        ]
    );
    assert_eq!(c.encodings.len(), 1);
    assert_eq!(c.encodings[0].ssrc, Some(1000));
}

#[test]
fn consumable_rejects_a_foreign_mapping() {
    let caps = router_caps();
    let mapping = get_producer_rtp_parameters_mapping(&opus(), &caps, &mut counter()).unwrap();
    assert_eq!(
        get_consumable_rtp_parameters(MediaKind::Video, &vp8(), &caps, &mapping),
        Err(OrtcError::InvalidRtpMapping)
    );
    let mut short = get_producer_rtp_parameters_mapping(&vp8(), &caps, &mut counter()).unwrap();
    short.encodings.pop();
    assert_eq!(
        get_consumable_rtp_parameters(MediaKind::Video, &vp8(), &caps, &short),
        Err(OrtcError::InvalidRtpMapping)
    );
}

#[test]
fn vp8_simulcast_consumer_gets_one_layered_encoding() {
    let c = consumable(&vp8(), MediaKind::Video);
    let caps = chrome_caps();
    assert_eq!(can_consume(&c, &caps), Ok(true));
    let mut gen = || 555_000u32;
    let p = get_consumer_rtp_parameters(&c, &caps, false, &mut gen).unwrap();
    assert_eq!(
        pts(&p.codecs),
        vec![("video/VP8".into(), 101), ("video/rtx".into(), 102)]
    );
    // transport-cc negotiated, so REMB is dropped; the endpoint's feedback order is kept.
    let fb: Vec<(&str, &str)> = p.codecs[0]
        .rtcp_feedback
        .iter()
        .map(|f| (f.r#type.as_str(), f.parameter.as_str()))
        .collect();
    assert_eq!(
        fb,
        vec![
            ("transport-cc", ""),
            ("ccm", "fir"),
            ("nack", ""),
            ("nack", "pli")
        ]
    );
    // Chrome does not accept abs-capture-time.
    assert_eq!(
        uris(&p.header_extensions),
        vec![
            (uri::MID, 1),
            (uri::ABS_SEND_TIME, 4),
            (uri::TRANSPORT_WIDE_CC_01, 5),
            (uri::VIDEO_ORIENTATION, 11),
            (uri::TOFFSET, 12),
            (uri::PLAYOUT_DELAY, 14),
        ]
    );
    assert_eq!(
        p.encodings,
        vec![RtpEncodingParameters {
            ssrc: Some(555_000),
            rtx: Some(RtpEncodingParametersRtx { ssrc: 555_001 }),
            scalability_mode: Some("S3T3".into()),
            max_bitrate: Some(5_000_000),
            ..Default::default()
        }]
    );
    assert_eq!(p.rtcp.cname.as_deref(), Some("pF2Vw4mJhZ9kqT8x"));
}

#[test]
fn opus_consumer() {
    let c = consumable(&opus(), MediaKind::Audio);
    let caps = chrome_caps();
    assert_eq!(can_consume(&c, &caps), Ok(true));
    let p = get_consumer_rtp_parameters(&c, &caps, false, &mut counter()).unwrap();
    assert_eq!(pts(&p.codecs), vec![("audio/opus".into(), 100)]);
    // Without the transport-cc extension (audio), only abs-send-time: no BWE feedback left.
    assert!(p.codecs[0].rtcp_feedback.is_empty());
    assert_eq!(
        uris(&p.header_extensions),
        vec![
            (uri::MID, 1),
            (uri::ABS_SEND_TIME, 4),
            (uri::SSRC_AUDIO_LEVEL, 10)
        ]
    );
    assert_eq!(
        p.encodings,
        vec![RtpEncodingParameters {
            ssrc: Some(1000),
            ..Default::default()
        }]
    );
}

#[test]
fn consumer_without_the_codec_cannot_consume() {
    let c = consumable(&vp8(), MediaKind::Video);
    let mut caps = chrome_caps();
    caps.codecs
        .retain(|c| !c.mime_type.eq_ignore_ascii_case("video/VP8"));
    assert_eq!(can_consume(&c, &caps), Ok(false));
    assert_eq!(
        get_consumer_rtp_parameters(&c, &caps, false, &mut counter()),
        Err(OrtcError::NoCompatibleCodecs)
    );
    // Supporting only the RTX codec is not enough either.
    let rtx_only = RtpCapabilities {
        codecs: vec![chrome_caps().codecs[2].clone()],
        header_extensions: vec![],
    };
    assert_eq!(can_consume(&c, &rtx_only), Ok(false));
    assert_eq!(can_consume(&c, &RtpCapabilities::default()), Ok(false));
    // Invalid capabilities are an error, not a "no".
    let mut bad = chrome_caps();
    bad.codecs[0].mime_type = "bogus".into();
    assert!(can_consume(&c, &bad).is_err());
}

#[test]
fn consumer_without_rtx_gets_no_rtx_ssrc() {
    let c = consumable(&vp8(), MediaKind::Video);
    let mut caps = chrome_caps();
    caps.codecs.retain(|c| !c.is_rtx());
    let p = get_consumer_rtp_parameters(&c, &caps, false, &mut counter()).unwrap();
    assert_eq!(pts(&p.codecs), vec![("video/VP8".into(), 101)]);
    assert_eq!(p.encodings[0].rtx, None);
}

#[test]
fn single_encoding_producer_keeps_its_scalability_mode() {
    let mut producer = vp8();
    producer.encodings.truncate(1);
    let c = consumable(&producer, MediaKind::Video);
    let p = get_consumer_rtp_parameters(&c, &chrome_caps(), false, &mut counter()).unwrap();
    assert_eq!(p.encodings[0].scalability_mode.as_deref(), Some("L1T3"));
}

#[test]
fn pipe_consumer_keeps_all_encodings() {
    let c = consumable(&vp8(), MediaKind::Video);
    let p = get_consumer_rtp_parameters(&c, &chrome_caps(), true, &mut counter()).unwrap();
    let ssrcs: Vec<(Option<u32>, Option<u32>)> = p
        .encodings
        .iter()
        .map(|e| (e.ssrc, e.rtx.map(|r| r.ssrc)))
        .collect();
    assert_eq!(
        ssrcs,
        vec![
            (Some(1000), Some(2000)),
            (Some(1001), Some(2001)),
            (Some(1002), Some(2002))
        ]
    );
    assert_eq!(p.encodings[0].scalability_mode.as_deref(), Some("L1T3"));
}

#[test]
fn pipe_parameters() {
    let c = consumable(&vp8(), MediaKind::Video);
    let p = get_pipe_rtp_parameters(&c, true, &mut counter());
    assert_eq!(
        pts(&p.codecs),
        vec![("video/VP8".into(), 101), ("video/rtx".into(), 102)]
    );
    assert_eq!(
        p.codecs[0].rtcp_feedback,
        vec![
            RtcpFeedback::new("nack", ""),
            RtcpFeedback::new("nack", "pli"),
            RtcpFeedback::new("ccm", "fir")
        ]
    );
    assert_eq!(
        uris(&p.header_extensions),
        vec![
            (uri::VIDEO_ORIENTATION, 11),
            (uri::TOFFSET, 12),
            (uri::ABS_CAPTURE_TIME, 13),
            (uri::PLAYOUT_DELAY, 14),
        ]
    );
    assert_eq!(p.encodings.len(), 3);
    assert_eq!(
        p.encodings[1].rtx,
        Some(RtpEncodingParametersRtx { ssrc: 2001 })
    );

    let no_rtx = get_pipe_rtp_parameters(&c, false, &mut counter());
    assert_eq!(pts(&no_rtx.codecs), vec![("video/VP8".into(), 101)]);
    assert_eq!(no_rtx.codecs[0].rtcp_feedback.len(), 2);
    assert!(no_rtx.encodings.iter().all(|e| e.rtx.is_none()));

    let audio =
        get_pipe_rtp_parameters(&consumable(&opus(), MediaKind::Audio), true, &mut counter());
    assert!(audio.encodings[0].rtx.is_none());
    assert_eq!(uris(&audio.header_extensions).len(), 3);
}

#[test]
fn malformed_producer_parameters_are_rejected() {
    let check = |f: &dyn Fn(&mut RtpParameters), want: OrtcError| {
        let mut p = vp8();
        f(&mut p);
        assert_eq!(validate_rtp_parameters(&p), Err(want));
    };
    check(
        &|p| p.codecs[1].payload_type = 96,
        OrtcError::DuplicatedPayloadType(96),
    );
    check(
        &|p| p.codecs[1].payload_type = 200,
        OrtcError::InvalidPayloadType(200),
    );
    check(
        &|p| {
            p.codecs[1].parameters.remove("apt");
        },
        OrtcError::RtxWithoutApt(97),
    );
    check(
        &|p| p.codecs[1].parameters.insert("apt", "x"),
        OrtcError::RtxWithoutApt(97),
    );
    check(
        &|p| p.codecs[1].parameters.insert("apt", 55),
        OrtcError::RtxAptUnknown {
            payload_type: 97,
            apt: 55,
        },
    );
    check(
        &|p| p.codecs[1].parameters.insert("apt", 97),
        OrtcError::RtxAptNotMedia {
            payload_type: 97,
            apt: 97,
        },
    );
    check(&|p| p.codecs.clear(), OrtcError::NoMediaCodecs);
    check(
        &|p| p.codecs[0].mime_type = "VP8".into(),
        OrtcError::InvalidMimeType("VP8".into()),
    );
    check(
        &|p| p.codecs[0].clock_rate = 0,
        OrtcError::InvalidClockRate("video/VP8".into()),
    );
    check(&|p| p.encodings.clear(), OrtcError::NoEncodings);
    check(&|p| p.mid = Some(String::new()), OrtcError::EmptyMid);
    check(
        &|p| {
            p.encodings[1].rid = None;
            p.encodings[1].ssrc = Some(1234);
        },
        OrtcError::MixedEncodings,
    );
    check(&|p| p.encodings[2].rid = None, OrtcError::MixedEncodings);
    check(
        &|p| p.encodings[2].rid = Some("r0".into()),
        OrtcError::DuplicatedRid("r0".into()),
    );
    check(
        &|p| p.encodings[2].rid = Some("r 2".into()),
        OrtcError::InvalidRid("r 2".into()),
    );
    check(
        &|p| {
            for e in &mut p.encodings {
                e.scalability_mode = Some("L3T3".into());
            }
        },
        OrtcError::SimulcastWithSvc,
    );
    check(
        &|p| p.encodings[0].scalability_mode = Some("bogus".into()),
        OrtcError::InvalidScalabilityMode("bogus".into()),
    );
    check(
        &|p| p.encodings[0].codec_payload_type = Some(97),
        OrtcError::UnknownCodecPayloadType(97),
    );
    check(
        &|p| p.header_extensions[1].id = 4,
        OrtcError::DuplicatedHeaderExtensionId(4),
    );
    check(
        &|p| p.header_extensions[0].id = 0,
        OrtcError::InvalidHeaderExtensionId(uri::MID.into()),
    );
    check(
        &|p| {
            p.mid = None;
            p.encodings.truncate(1);
            p.encodings[0].rid = None;
        },
        OrtcError::UnidentifiedEncoding,
    );
    // With a mid, a single unidentified encoding is fine (the mid identifies the stream).
    let mut p = vp8();
    p.encodings.truncate(1);
    p.encodings[0].rid = None;
    validate_rtp_parameters(&p).unwrap();
    // Duplicate SSRCs, including the RTX one.
    let mut p = opus();
    p.encodings[0].rtx = Some(RtpEncodingParametersRtx { ssrc: 2731590123 });
    assert_eq!(
        validate_rtp_parameters(&p),
        Err(OrtcError::DuplicatedSsrc(2731590123))
    );
}

#[test]
fn error_messages_are_readable() {
    assert_eq!(
        OrtcError::DuplicatedPayloadType(96).to_string(),
        "duplicated payloadType 96"
    );
    assert_eq!(
        OrtcError::MixedEncodings.to_string(),
        "encodings must all have a rid or all have an ssrc"
    );
    assert_eq!(
        OrtcError::NoCompatibleCodecs.to_string(),
        "no compatible media codecs"
    );
}

#[test]
fn random_ssrcs_stay_in_range() {
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let s = random_ssrc(&mut rng);
        assert!((100_000_000..1_000_000_000).contains(&s));
    }
}
