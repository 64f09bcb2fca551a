//! mediasoup ORTC objects the bot builds or reads (sans-IO): the capabilities it announces,
//! its producers' `rtpParameters`, `newConsumer` offers and `createWebRtcTransport` responses.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::Value;

use super::ice::IceParameters;
use super::BotError;
use crate::bot::media::HeaderExtensions;
use crate::bot::stats::Codec;
use crate::router::rtp_parameters::{
    uri, MediaKind, RtcpParameters, RtpCapabilities, RtpCodecParameters, RtpEncodingParameters,
    RtpHeaderExtensionParameters, RtpParameters,
};

/// One of the node's ICE candidates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceCandidate {
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub protocol: String,
}

/// The `createWebRtcTransport` response fields the bot uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportInfo {
    /// Transport id.
    pub id: String,
    /// ICE credentials of the node.
    pub ice_parameters: IceParameters,
    /// The node's candidates.
    pub ice_candidates: Vec<IceCandidate>,
    /// The node's DTLS fingerprints.
    pub dtls_parameters: crate::edge::dtls::DtlsParameters,
}

impl TransportInfo {
    /// Parses a `createWebRtcTransport` response.
    pub fn from_json(v: &Value) -> Result<Self, BotError> {
        serde_json::from_value(v.clone()).map_err(|e| BotError::Protocol {
            what: "createWebRtcTransport response",
            reason: e.to_string(),
        })
    }

    /// The address of the first candidate of `protocol` (`udp` or `tcp`).
    pub fn candidate(&self, tcp: bool) -> Result<SocketAddr, BotError> {
        let want = if tcp { "tcp" } else { "udp" };
        self.ice_candidates
            .iter()
            .filter(|c| c.protocol.eq_ignore_ascii_case(want))
            .find_map(|c| Some(SocketAddr::new(c.ip.parse::<IpAddr>().ok()?, c.port)))
            .ok_or(BotError::NoCandidate(want))
    }
}

fn is_bot_codec(mime: &str) -> bool {
    mime.eq_ignore_ascii_case("audio/opus") || mime.eq_ignore_ascii_case("video/VP8")
}

/// The capabilities the bot announces in `join`: the router's Opus and VP8 (with VP8's RTX)
/// and all its header extensions.
pub fn bot_rtp_capabilities(router: &RtpCapabilities) -> RtpCapabilities {
    let kept: Vec<u8> = router
        .codecs
        .iter()
        .filter(|c| is_bot_codec(&c.mime_type))
        .filter_map(|c| c.preferred_payload_type)
        .collect();
    RtpCapabilities {
        codecs: router
            .codecs
            .iter()
            .filter(|c| {
                is_bot_codec(&c.mime_type)
                    || (c.is_rtx() && c.apt().is_some_and(|apt| kept.contains(&apt)))
            })
            .cloned()
            .collect(),
        header_extensions: router.header_extensions.clone(),
    }
}

/// A producer's `rtpParameters` and the header extensions its source must write.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerParameters {
    /// What `produce` carries.
    pub rtp_parameters: RtpParameters,
    /// Extension ids for [`crate::bot::media`].
    pub extensions: HeaderExtensions,
}

/// Builds the `rtpParameters` of an Opus (audio) or VP8 (video) producer sending `ssrc` with
/// `mid`, using the router's payload type and preferred extension ids (mid, abs-send-time,
/// transport-wide-cc when the router offers them for the kind with a one-byte id).
pub fn producer_rtp_parameters(
    router: &RtpCapabilities,
    kind: MediaKind,
    mid: &str,
    ssrc: u32,
    cname: &str,
) -> Result<ProducerParameters, BotError> {
    let (mime, name) = match kind {
        MediaKind::Audio => ("audio/opus", "audio/opus"),
        MediaKind::Video => ("video/VP8", "video/VP8"),
    };
    let cap = router
        .codecs
        .iter()
        .find(|c| c.mime_type.eq_ignore_ascii_case(mime))
        .ok_or(BotError::MissingCodec(name))?;
    let payload_type = cap
        .preferred_payload_type
        .ok_or(BotError::MissingCodec(name))?;
    let mut parameters = crate::router::rtp_parameters::CodecParameters::new();
    if kind == MediaKind::Audio {
        parameters.insert("minptime", 10);
        parameters.insert("useinbandfec", 1);
    }
    let codec = RtpCodecParameters {
        mime_type: cap.mime_type.clone(),
        payload_type,
        clock_rate: cap.clock_rate,
        channels: cap.channels,
        parameters,
        rtcp_feedback: cap.rtcp_feedback.clone(),
    };
    let id_of = |u: &str| {
        router
            .header_extensions
            .iter()
            .find(|e| e.kind == kind && e.uri == u && (1..=14).contains(&e.preferred_id))
            .map(|e| e.preferred_id)
    };
    let mut header_extensions = Vec::new();
    let mut extensions = HeaderExtensions::default();
    let mut add = |u: &str, id: u8| {
        header_extensions.push(RtpHeaderExtensionParameters {
            uri: u.to_owned(),
            id,
            encrypt: false,
            parameters: Default::default(),
        })
    };
    if let Some(id) = id_of(uri::MID) {
        add(uri::MID, id);
        extensions.mid = Some((id, mid.to_owned()));
    }
    if let Some(id) = id_of(uri::ABS_SEND_TIME) {
        add(uri::ABS_SEND_TIME, id);
        extensions.abs_send_time = Some(id);
    }
    if let Some(id) = id_of(uri::TRANSPORT_WIDE_CC_01) {
        add(uri::TRANSPORT_WIDE_CC_01, id);
        extensions.transport_cc = Some(id);
    }
    Ok(ProducerParameters {
        rtp_parameters: RtpParameters {
            mid: Some(mid.to_owned()),
            codecs: vec![codec],
            header_extensions,
            encodings: vec![RtpEncodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            }],
            rtcp: RtcpParameters {
                cname: Some(cname.to_owned()),
                reduced_size: true,
                mux: None,
            },
        },
        extensions,
    })
}

/// Most simulcast encodings the bot sends.
pub const MAX_SIMULCAST_LAYERS: u8 = 3;

/// One simulcast encoding as Chrome sends a 640x480 camera with three encodings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulcastLayer {
    /// Picture width.
    pub width: u16,
    /// Picture height.
    pub height: u16,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in bit/s (sent as the encoding's `maxBitrate`).
    pub bitrate_bps: u32,
    /// `scaleResolutionDownBy` relative to the top layer.
    pub scale_down_by: f64,
}

/// The three layers, lowest first; with fewer encodings the top ones are used.
pub const SIMULCAST_LAYERS: [SimulcastLayer; MAX_SIMULCAST_LAYERS as usize] = [
    SimulcastLayer {
        width: 160,
        height: 120,
        fps: 15,
        bitrate_bps: 100_000,
        scale_down_by: 4.0,
    },
    SimulcastLayer {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_bps: 300_000,
        scale_down_by: 2.0,
    },
    SimulcastLayer {
        width: 640,
        height: 480,
        fps: 30,
        bitrate_bps: 900_000,
        scale_down_by: 1.0,
    },
];

/// One encoding of a simulcast producer: what its source sends.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulcastEncoding {
    /// Its SSRC.
    pub ssrc: u32,
    /// `r0`, `r1`, ... lowest first.
    pub rid: String,
    /// Size, rate and bitrate.
    pub layer: SimulcastLayer,
    /// Extension ids and values its source writes (mid, and rid when the router offers it).
    pub extensions: HeaderExtensions,
}

/// A simulcast VP8 producer's `rtpParameters` and its encodings' sources.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulcastParameters {
    /// What `produce` carries.
    pub rtp_parameters: RtpParameters,
    /// One per encoding, lowest first, as in `rtp_parameters.encodings`.
    pub encodings: Vec<SimulcastEncoding>,
}

/// Builds the `rtpParameters` of a VP8 simulcast producer with one encoding per SSRC in
/// `ssrcs` (1..=[`MAX_SIMULCAST_LAYERS`]), lowest first as mediasoup-client sends them: rids
/// `r0`, `r1`, ..., `scalabilityMode` L1T1, `maxBitrate` and `scaleResolutionDownBy` of the
/// top `ssrcs.len()` entries of [`SIMULCAST_LAYERS`]. Unlike Chrome's rid-only encodings each
/// also names its SSRC. Header extensions are those of [`producer_rtp_parameters`] plus
/// rtp-stream-id when the router offers it, which each source then writes with its rid.
pub fn simulcast_rtp_parameters(
    router: &RtpCapabilities,
    mid: &str,
    ssrcs: &[u32],
    cname: &str,
) -> Result<SimulcastParameters, BotError> {
    let n = ssrcs.len();
    if !(1..=usize::from(MAX_SIMULCAST_LAYERS)).contains(&n) {
        return Err(BotError::InvalidArgument(format!(
            "{n} simulcast encodings (1..={MAX_SIMULCAST_LAYERS})"
        )));
    }
    for (i, s) in ssrcs.iter().enumerate() {
        if ssrcs[..i].contains(s) {
            return Err(BotError::InvalidArgument(format!("ssrc {s} used twice")));
        }
    }
    let base = producer_rtp_parameters(router, MediaKind::Video, mid, ssrcs[0], cname)?;
    let mut rtp_parameters = base.rtp_parameters;
    let rid_id = router
        .header_extensions
        .iter()
        .find(|e| {
            e.kind == MediaKind::Video
                && e.uri == uri::RTP_STREAM_ID
                && (1..=14).contains(&e.preferred_id)
        })
        .map(|e| e.preferred_id);
    if let Some(id) = rid_id {
        rtp_parameters
            .header_extensions
            .push(RtpHeaderExtensionParameters {
                uri: uri::RTP_STREAM_ID.to_owned(),
                id,
                encrypt: false,
                parameters: Default::default(),
            });
    }
    let layers = &SIMULCAST_LAYERS[SIMULCAST_LAYERS.len() - n..];
    let mut encodings = Vec::with_capacity(n);
    rtp_parameters.encodings.clear();
    for (i, (&ssrc, layer)) in ssrcs.iter().zip(layers).enumerate() {
        let rid = format!("r{i}");
        rtp_parameters.encodings.push(RtpEncodingParameters {
            ssrc: Some(ssrc),
            rid: Some(rid.clone()),
            active: Some(true),
            scalability_mode: Some("L1T1".to_owned()),
            scale_resolution_down_by: Some(layer.scale_down_by),
            max_bitrate: Some(layer.bitrate_bps),
            ..Default::default()
        });
        let mut extensions = base.extensions.clone();
        extensions.rid = rid_id.map(|id| (id, rid.clone()));
        encodings.push(SimulcastEncoding {
            ssrc,
            rid,
            layer: *layer,
            extensions,
        });
    }
    Ok(SimulcastParameters {
        rtp_parameters,
        encodings,
    })
}

/// A consumer offered by `newConsumer`, reduced to what the receiver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStream {
    /// Consumer id.
    pub id: String,
    /// Producer id.
    pub producer_id: String,
    /// Producing peer.
    pub peer_id: String,
    /// `audio` or `video`.
    pub kind: MediaKind,
    /// Media SSRC the node sends.
    pub ssrc: u32,
    /// RTX SSRC, if any.
    pub rtx_ssrc: Option<u32>,
    /// Media codec.
    pub codec: Codec,
    /// Its clock rate.
    pub clock_rate: u32,
    /// The producer was paused when the consumer was created.
    pub producer_paused: bool,
}

impl ConsumerStream {
    /// Parses `newConsumer` data.
    pub fn from_request(data: &Value) -> Result<Self, BotError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct NewConsumer {
            id: String,
            producer_id: String,
            #[serde(default)]
            peer_id: String,
            kind: MediaKind,
            rtp_parameters: RtpParameters,
            #[serde(default)]
            producer_paused: bool,
        }
        let bad = |reason: String| BotError::Protocol {
            what: "newConsumer",
            reason,
        };
        let nc: NewConsumer =
            serde_json::from_value(data.clone()).map_err(|e| bad(e.to_string()))?;
        let enc = nc
            .rtp_parameters
            .encodings
            .first()
            .ok_or_else(|| bad("no encoding".into()))?;
        let ssrc = enc
            .ssrc
            .ok_or_else(|| bad("encoding without ssrc".into()))?;
        let media = nc
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| !c.is_rtx())
            .ok_or_else(|| bad("no media codec".into()))?;
        let codec = if media.mime_type.eq_ignore_ascii_case("audio/opus") {
            Codec::Opus
        } else if media.mime_type.eq_ignore_ascii_case("video/VP8") {
            Codec::Vp8
        } else if nc.kind == MediaKind::Audio {
            Codec::OtherAudio
        } else {
            Codec::OtherVideo
        };
        Ok(Self {
            id: nc.id,
            producer_id: nc.producer_id,
            peer_id: nc.peer_id,
            kind: nc.kind,
            ssrc,
            rtx_ssrc: enc.rtx.map(|r| r.ssrc),
            codec,
            clock_rate: media.clock_rate,
            producer_paused: nc.producer_paused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn router_caps() -> RtpCapabilities {
        crate::router::ortc::generate_router_rtp_capabilities(
            &crate::router::ortc::default_media_codecs(),
        )
        .unwrap()
    }

    #[test]
    fn producer_parameters_use_router_payload_types_and_extension_ids() {
        let caps = router_caps();
        let opus_pt = caps
            .codecs
            .iter()
            .find(|c| c.mime_type.eq_ignore_ascii_case("audio/opus"))
            .and_then(|c| c.preferred_payload_type)
            .unwrap();
        let p = producer_rtp_parameters(&caps, MediaKind::Audio, "0", 1234, "cn").unwrap();
        let rp = &p.rtp_parameters;
        assert_eq!(rp.mid.as_deref(), Some("0"));
        assert_eq!(rp.codecs.len(), 1);
        assert_eq!(rp.codecs[0].payload_type, opus_pt);
        assert_eq!(rp.codecs[0].clock_rate, 48000);
        assert_eq!(rp.encodings[0].ssrc, Some(1234));
        assert_eq!(rp.rtcp.cname.as_deref(), Some("cn"));
        let mid = rp
            .header_extensions
            .iter()
            .find(|e| e.uri == uri::MID)
            .unwrap();
        assert_eq!(p.extensions.mid, Some((mid.id, "0".to_owned())));
        crate::router::ortc::validate_rtp_parameters(rp).unwrap();

        let v = producer_rtp_parameters(&caps, MediaKind::Video, "1", 99, "cn").unwrap();
        assert!(v.rtp_parameters.codecs[0]
            .mime_type
            .eq_ignore_ascii_case("video/VP8"));
        assert!(v.extensions.transport_cc.is_some());
        crate::router::ortc::validate_rtp_parameters(&v.rtp_parameters).unwrap();
        // The JSON is what mediasoup-client sends.
        let j = serde_json::to_value(&v.rtp_parameters).unwrap();
        assert_eq!(j["encodings"][0]["ssrc"], 99);
        assert_eq!(j["mid"], "1");

        let empty = RtpCapabilities::default();
        assert!(matches!(
            producer_rtp_parameters(&empty, MediaKind::Video, "1", 1, "c"),
            Err(BotError::MissingCodec(_))
        ));
    }

    #[test]
    fn simulcast_parameters_three_encodings_lowest_first() {
        let caps = router_caps();
        let p = simulcast_rtp_parameters(&caps, "1", &[10, 20, 30], "cn").unwrap();
        let rp = &p.rtp_parameters;
        crate::router::ortc::validate_rtp_parameters(rp).unwrap();
        assert_eq!(rp.mid.as_deref(), Some("1"));
        assert!(rp.codecs[0].mime_type.eq_ignore_ascii_case("video/VP8"));
        let enc: Vec<(Option<u32>, Option<&str>, Option<&str>)> = rp
            .encodings
            .iter()
            .map(|e| (e.ssrc, e.rid.as_deref(), e.scalability_mode.as_deref()))
            .collect();
        assert_eq!(
            enc,
            vec![
                (Some(10), Some("r0"), Some("L1T1")),
                (Some(20), Some("r1"), Some("L1T1")),
                (Some(30), Some("r2"), Some("L1T1")),
            ]
        );
        let rates: Vec<Option<u32>> = rp.encodings.iter().map(|e| e.max_bitrate).collect();
        assert_eq!(rates, vec![Some(100_000), Some(300_000), Some(900_000)]);
        let scale: Vec<Option<f64>> = rp
            .encodings
            .iter()
            .map(|e| e.scale_resolution_down_by)
            .collect();
        assert_eq!(scale, vec![Some(4.0), Some(2.0), Some(1.0)]);
        // The rid extension is announced and each source writes its own rid and the mid.
        let ext_id = |u: &str| {
            rp.header_extensions
                .iter()
                .find(|e| e.uri == u)
                .map(|e| e.id)
        };
        let rid_id = ext_id(uri::RTP_STREAM_ID).unwrap();
        let mid_id = ext_id(uri::MID).unwrap();
        let sizes: Vec<(u32, u16, u16)> = p
            .encodings
            .iter()
            .map(|e| (e.ssrc, e.layer.width, e.layer.height))
            .collect();
        assert_eq!(sizes, vec![(10, 160, 120), (20, 320, 240), (30, 640, 480)]);
        for (i, e) in p.encodings.iter().enumerate() {
            assert_eq!(e.rid, format!("r{i}"));
            assert_eq!(e.extensions.rid, Some((rid_id, e.rid.clone())));
            assert_eq!(e.extensions.mid, Some((mid_id, "1".to_owned())));
        }
        // mediasoup-client's JSON.
        let j = serde_json::to_value(rp).unwrap();
        assert_eq!(j["encodings"][0]["rid"], "r0");
        assert_eq!(j["encodings"][2]["scalabilityMode"], "L1T1");
        assert_eq!(j["encodings"][1]["maxBitrate"], 300_000);

        // Fewer layers take the top ones.
        let two = simulcast_rtp_parameters(&caps, "1", &[1, 2], "cn").unwrap();
        let sizes: Vec<(&str, u16)> = two
            .encodings
            .iter()
            .map(|e| (e.rid.as_str(), e.layer.width))
            .collect();
        assert_eq!(sizes, vec![("r0", 320), ("r1", 640)]);
        // No rid extension offered: encodings keep their rids, sources write none.
        let mut no_rid = caps.clone();
        no_rid
            .header_extensions
            .retain(|e| e.uri != uri::RTP_STREAM_ID);
        let p = simulcast_rtp_parameters(&no_rid, "1", &[1, 2, 3], "cn").unwrap();
        assert!(p.encodings.iter().all(|e| e.extensions.rid.is_none()));
        assert_eq!(p.rtp_parameters.encodings[2].rid.as_deref(), Some("r2"));
        for bad in [&[][..], &[1, 2, 3, 4][..], &[5, 5][..]] {
            assert!(matches!(
                simulcast_rtp_parameters(&caps, "1", bad, "cn"),
                Err(BotError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn bot_capabilities_keep_opus_vp8_and_vp8_rtx() {
        let caps = bot_rtp_capabilities(&router_caps());
        let mimes: Vec<String> = caps
            .codecs
            .iter()
            .map(|c| c.mime_type.to_lowercase())
            .collect();
        assert_eq!(mimes, vec!["audio/opus", "video/vp8", "video/rtx"]);
        crate::router::ortc::validate_rtp_capabilities(&caps).unwrap();
    }

    #[test]
    fn consumer_stream_from_new_consumer() {
        let data = json!({
            "peerId": "alice", "producerId": "p1", "id": "c1", "kind": "video",
            "type": "simple", "appData": {}, "producerPaused": false,
            "rtpParameters": {
                "mid": "0",
                "codecs": [
                    {"mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000,
                     "parameters": {}, "rtcpFeedback": []},
                    {"mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
                     "parameters": {"apt": 101}, "rtcpFeedback": []}
                ],
                "headerExtensions": [],
                "encodings": [{"ssrc": 555, "rtx": {"ssrc": 556}}],
                "rtcp": {"cname": "x", "reducedSize": true}
            }
        });
        let s = ConsumerStream::from_request(&data).unwrap();
        assert_eq!(s.id, "c1");
        assert_eq!(s.ssrc, 555);
        assert_eq!(s.rtx_ssrc, Some(556));
        assert_eq!(s.codec, Codec::Vp8);
        assert_eq!(s.kind, MediaKind::Video);
        assert_eq!(s.clock_rate, 90000);
        for bad in [
            json!({}),
            json!({"id": "c", "producerId": "p", "kind": "video",
                   "rtpParameters": {"codecs": [], "encodings": [{"ssrc": 1}]}}),
            json!({"id": "c", "producerId": "p", "kind": "audio",
                   "rtpParameters": {"codecs": [{"mimeType": "audio/opus", "payloadType": 100,
                   "clockRate": 48000}], "encodings": [{}]}}),
        ] {
            assert!(ConsumerStream::from_request(&bad).is_err());
        }
    }

    #[test]
    fn transport_info_picks_candidates_by_protocol() {
        let v = json!({
            "id": "t1",
            "iceParameters": {"usernameFragment": "u", "password": "p", "iceLite": true},
            "iceCandidates": [
                {"foundation": "udpcandidate", "ip": "127.0.0.1", "port": 4000, "priority": 1,
                 "protocol": "udp", "type": "host"},
                {"foundation": "tcpcandidate", "ip": "127.0.0.1", "port": 4001, "priority": 1,
                 "protocol": "tcp", "type": "host", "tcpType": "passive"}
            ],
            "dtlsParameters": {"role": "auto", "fingerprints": [
                {"algorithm": "sha-256", "value": "AA:BB"}]},
            "sctpParameters": null
        });
        let t = TransportInfo::from_json(&v).unwrap();
        assert_eq!(t.candidate(false).unwrap().port(), 4000);
        assert_eq!(t.candidate(true).unwrap().port(), 4001);
        assert!(TransportInfo::from_json(&json!({"id": 1})).is_err());
    }
}
