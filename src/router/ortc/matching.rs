//! Codec matching as mediasoup's `ortc.ts` does it (`matchCodecs`): mimeType, clock rate and
//! channels, multiopus layout, and in strict mode the H264 packetization-mode/profile and VP9
//! profile-id rules. Used by capability generation, producer mapping and consumer parameters.

use crate::router::rtp_parameters::{
    h264, parse_mime_type, Codec, CodecParameters, MediaKind, RtpCodecCapability,
    RtpCodecParameters,
};

/// The parts of a codec that matching looks at, common to capabilities and parameters.
#[derive(Clone, Copy)]
pub(super) struct CodecView<'a> {
    mime_type: &'a str,
    clock_rate: u32,
    channels: Option<u8>,
    parameters: &'a CodecParameters,
}

impl<'a> From<&'a RtpCodecCapability> for CodecView<'a> {
    fn from(c: &'a RtpCodecCapability) -> Self {
        Self {
            mime_type: &c.mime_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
        }
    }
}

impl<'a> From<&'a RtpCodecParameters> for CodecView<'a> {
    fn from(c: &'a RtpCodecParameters) -> Self {
        Self {
            mime_type: &c.mime_type,
            clock_rate: c.clock_rate,
            channels: c.channels,
            parameters: &c.parameters,
        }
    }
}

impl CodecView<'_> {
    /// Channels as mediasoup normalizes them: 1 when unset for audio, none for video.
    fn normalized_channels(&self) -> Option<u8> {
        match parse_mime_type(self.mime_type) {
            Some((MediaKind::Audio, _)) => Some(self.channels.unwrap_or(1)),
            _ => None,
        }
    }
}

/// Codec matching as mediasoup's `matchCodecs`: same mimeType (case-insensitive), clock rate
/// and channels; multiopus stream layout; and when `strict`, H264 packetization-mode and
/// profile compatibility and VP9 profile-id. On an H264 strict match, returns the
/// profile-level-id an answer would carry.
pub(super) fn match_codecs(
    a: CodecView<'_>,
    b: CodecView<'_>,
    strict: bool,
) -> Result<Option<String>, ()> {
    if !a.mime_type.eq_ignore_ascii_case(b.mime_type)
        || a.clock_rate != b.clock_rate
        || a.normalized_channels() != b.normalized_channels()
    {
        return Err(());
    }
    match Codec::from_mime_type(a.mime_type) {
        Some(Codec::MultiOpus) => {
            for key in ["num_streams", "coupled_streams"] {
                if a.parameters.get_i64(key) != b.parameters.get_i64(key) {
                    return Err(());
                }
            }
        }
        Some(Codec::H264 | Codec::H264Svc) if strict => {
            let mode = |p: &CodecParameters| p.get_i64("packetization-mode").unwrap_or(0);
            if mode(a.parameters) != mode(b.parameters)
                || !h264::is_same_profile(a.parameters, b.parameters)
            {
                return Err(());
            }
            return h264::generate_profile_level_id_for_answer(a.parameters, b.parameters)
                .map_err(|_| ());
        }
        Some(Codec::Vp9) if strict => {
            let profile = |p: &CodecParameters| p.get_i64("profile-id").unwrap_or(0);
            if profile(a.parameters) != profile(b.parameters) {
                return Err(());
            }
        }
        _ => {}
    }
    Ok(None)
}

/// [`match_codecs`] between two capabilities.
pub(super) fn match_capabilities(
    a: &RtpCodecCapability,
    b: &RtpCodecCapability,
    strict: bool,
) -> Result<Option<String>, ()> {
    match_codecs(a.into(), b.into(), strict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(
        mime: &str,
        clock_rate: u32,
        channels: Option<u8>,
        p: CodecParameters,
    ) -> RtpCodecParameters {
        RtpCodecParameters {
            mime_type: mime.into(),
            payload_type: 100,
            clock_rate,
            channels,
            parameters: p,
            rtcp_feedback: Vec::new(),
        }
    }

    fn m(
        a: &RtpCodecParameters,
        b: &RtpCodecParameters,
        strict: bool,
    ) -> Result<Option<String>, ()> {
        match_codecs(a.into(), b.into(), strict)
    }

    #[test]
    fn mime_clock_rate_and_normalized_channels() {
        let opus = codec("audio/opus", 48_000, Some(2), CodecParameters::new());
        assert_eq!(
            m(
                &opus,
                &codec("AUDIO/OPUS", 48_000, Some(2), CodecParameters::new()),
                true
            ),
            Ok(None)
        );
        assert!(m(
            &opus,
            &codec("audio/opus", 16_000, Some(2), CodecParameters::new()),
            false
        )
        .is_err());
        assert!(m(
            &opus,
            &codec("audio/opus", 48_000, None, CodecParameters::new()),
            false
        )
        .is_err());
        // Audio without channels means mono; video channels are ignored.
        let pcmu = codec("audio/PCMU", 8_000, None, CodecParameters::new());
        assert!(m(
            &pcmu,
            &codec("audio/PCMU", 8_000, Some(1), CodecParameters::new()),
            true
        )
        .is_ok());
        let vp8 = codec("video/VP8", 90_000, None, CodecParameters::new());
        assert!(m(
            &vp8,
            &codec("video/VP8", 90_000, Some(3), CodecParameters::new()),
            true
        )
        .is_ok());
    }

    #[test]
    fn strict_checks_only_apply_when_strict() {
        let vp9 = |p: i64| {
            codec(
                "video/VP9",
                90_000,
                None,
                CodecParameters::new().with("profile-id", p),
            )
        };
        assert!(m(&vp9(0), &vp9(2), true).is_err());
        assert!(m(&vp9(0), &vp9(2), false).is_ok());
        let h264 = |mode: i64| {
            codec(
                "video/H264",
                90_000,
                None,
                CodecParameters::new()
                    .with("packetization-mode", mode)
                    .with("profile-level-id", "42e01f"),
            )
        };
        assert!(m(&h264(1), &h264(0), true).is_err());
        assert_eq!(m(&h264(1), &h264(0), false), Ok(None));
        assert!(matches!(m(&h264(1), &h264(1), true), Ok(Some(_))));
    }
}
