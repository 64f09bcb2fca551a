//! Capability negotiation against what the real mediasoup-client sends from Chromium,
//! captured by `tests/browser/capture-fixtures.mjs` (see tests/fixtures/captured_chrome_README.txt).

use pipemesh::router::ortc;
use pipemesh::router::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};

fn router_caps() -> RtpCapabilities {
    ortc::generate_router_rtp_capabilities(&ortc::default_media_codecs()).expect("default codecs")
}
fn chrome_caps() -> RtpCapabilities {
    serde_json::from_str(include_str!(
        "fixtures/captured_chrome_rtp_capabilities.json"
    ))
    .expect("caps parse")
}
fn producer(json: &str) -> RtpParameters {
    serde_json::from_str(json).expect("rtpParameters parse")
}

fn negotiate(kind: MediaKind, params: &RtpParameters) -> RtpParameters {
    ortc::validate_rtp_parameters(params).expect("Chrome's producer parameters are valid");
    let caps = router_caps();
    let mut next = 1000u32;
    let mapping = ortc::get_producer_rtp_parameters_mapping(params, &caps, &mut || {
        next += 2;
        next
    })
    .expect("mapping");
    let consumable =
        ortc::get_consumable_rtp_parameters(kind, params, &caps, &mapping).expect("consumable");
    let chrome = chrome_caps();
    assert!(ortc::can_consume(&consumable, &chrome).expect("can_consume"));
    ortc::get_consumer_rtp_parameters(&consumable, &chrome, false, &mut || {
        next += 2;
        next
    })
    .expect("consumer parameters")
}

#[test]
fn captured_device_capabilities_validate() {
    let caps = chrome_caps();
    ortc::validate_rtp_capabilities(&caps).expect("valid");
    assert!(caps
        .codecs
        .iter()
        .any(|c| c.mime_type.eq_ignore_ascii_case("audio/opus")));
    assert!(caps
        .codecs
        .iter()
        .any(|c| c.mime_type.eq_ignore_ascii_case("video/VP8")));
}

#[test]
fn captured_opus_producer_is_consumable_by_chrome() {
    let params = producer(include_str!("fixtures/captured_chrome_producer_audio.json"));
    let c = negotiate(MediaKind::Audio, &params);
    assert!(c.codecs[0].mime_type.eq_ignore_ascii_case("audio/opus"));
    assert_eq!(c.encodings.len(), 1);
    assert!(c.encodings[0].ssrc.is_some());
}

#[test]
fn captured_simulcast_producer_gives_one_encoding_with_layers() {
    let params = producer(include_str!(
        "fixtures/captured_chrome_producer_video_simulcast.json"
    ));
    assert_eq!(
        params.encodings.len(),
        3,
        "mediasoup-client sends three rid encodings"
    );
    assert!(params
        .encodings
        .iter()
        .all(|e| e.rid.is_some() && e.ssrc.is_none()));
    let c = negotiate(MediaKind::Video, &params);
    assert!(c.codecs[0].mime_type.eq_ignore_ascii_case("video/VP8"));
    assert!(c
        .codecs
        .iter()
        .any(|x| x.mime_type.eq_ignore_ascii_case("video/rtx")));
    assert_eq!(c.encodings.len(), 1);
    let e = &c.encodings[0];
    assert!(e.ssrc.is_some() && e.rtx.is_some());
    assert_eq!(e.scalability_mode.as_deref().map(|m| &m[..2]), Some("S3"));
}
