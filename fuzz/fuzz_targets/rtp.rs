//! Fuzzes the per-packet RTP path: header parsing, RFC 8285 extension lookup and remapping,
//! codec keyframe detection, VP8 descriptor rewriting, the in-place setters and RTX
//! encapsulation round trips. None of it may panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipemesh::router::keyframe::{layer_info, VideoCodec, Vp8Rewriter};
use pipemesh::router::rtx::{rtx_decode, rtx_encode};
use pipemesh::router::seq::RtpView;

fuzz_target!(|data: &[u8]| {
    // Codec parsers on the raw bytes as a payload.
    for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
        let _ = layer_info(codec, data);
    }

    let Ok(view) = RtpView::parse(data) else {
        return;
    };
    for id in 0..=255u8 {
        let _ = view.extension(id);
    }
    let _ = view.sdes_str(1);
    let _ = view.transport_wide_seq(3);
    let _ = view.abs_send_time(2);
    let _ = view.audio_level(1);
    view.for_each_extension(|_, _| {});
    for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
        let _ = layer_info(codec, view.payload());
    }
    let header_len = view.header_len();
    let payload_len = view.payload_len();

    // In-place mutation on a copy.
    let mut copy = data.to_vec();
    let mut m = RtpView::parse(&mut copy[..]).expect("a copy of a valid packet parses");
    m.set_marker(true);
    m.set_payload_type(0xFF);
    m.set_sequence_number(0xFFFF);
    m.set_timestamp(u32::MAX);
    m.set_ssrc(0x1234_5678);
    let _ = m.set_transport_wide_seq(3, 7);
    let _ = m.set_abs_send_time(2, 0xFF_FFFF);
    let mut map = [0u8; 256];
    for (i, v) in map.iter_mut().enumerate() {
        *v = data.get(i % data.len().max(1)).copied().unwrap_or(0);
    }
    m.remap_extension_ids(&map);
    let _ = Vp8Rewriter::new().rewrite(m.payload_mut());
    // Mutations never change the layout.
    let again = RtpView::parse(&copy[..]).expect("mutated packet still parses");
    assert_eq!(again.header_len(), header_len);
    assert_eq!(again.payload_len(), payload_len);

    // RTX round trip restores the payload.
    let mut rtx = vec![0u8; data.len() + 2];
    if let Ok(n) = rtx_encode(data, 1, 97, 5, &mut rtx) {
        let mut back = vec![0u8; n];
        let k = rtx_decode(&rtx[..n], 96, 2, &mut back).expect("own RTX decodes");
        let orig = RtpView::parse(&back[..k]).expect("decoded packet parses");
        assert_eq!(orig.payload(), view.payload());
        assert_eq!(orig.sequence_number(), view.sequence_number());
    }
});
