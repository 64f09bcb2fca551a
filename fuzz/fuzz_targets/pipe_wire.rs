//! Arbitrary bytes as a pipe datagram and, in chunks, as the pipe control stream. Nothing may
//! panic; whatever decodes must re-encode to bytes that decode to the same thing, and the
//! control decoder's buffer must stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipemesh::pipe::wire::{
    decode_control_body, encode_control, parse_datagram_with_max, write_datagram_with_max,
    ControlDecoder, WireError,
};

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    // First byte picks the datagram packet limit, the control limit and the chunk size.
    let max_packet = 1 + usize::from(cfg) * 8;
    let max_message = 1 + usize::from(cfg) * 64;
    let chunk = 1 + usize::from(cfg % 23);

    if let Ok(d) = parse_datagram_with_max(rest, max_packet) {
        assert!(!d.packet.is_empty() && d.packet.len() <= max_packet);
        let mut out = Vec::new();
        write_datagram_with_max(d.kind, d.stream_id, d.packet, max_packet, &mut out)
            .expect("a parsed datagram re-encodes");
        // We write the shortest varint; the input may have used a longer one.
        assert!(out.len() <= rest.len());
        assert_eq!(parse_datagram_with_max(&out, max_packet), Ok(d));
    }

    let mut dec = ControlDecoder::new(max_message);
    'feed: for piece in rest.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            let n = dec.push(piece);
            piece = &piece[n..];
            loop {
                match dec.next() {
                    Ok(Some(msg)) => check_round_trip(&msg),
                    Ok(None) => break,
                    Err(e) if e.is_skippable() => {}
                    Err(_) => {
                        assert!(dec.is_failed());
                        break 'feed;
                    }
                }
            }
            assert!(dec.buffered() <= 4 + max_message);
            if n == 0 {
                break 'feed;
            }
        }
    }
});

/// Encode, decode, encode again: both encodings must be identical. (Bytes are compared rather
/// than values because codec parameters may hold a NaN float, which is not equal to itself.)
fn check_round_trip(msg: &pipemesh::pipe::wire::ControlMessage) {
    let mut first = Vec::new();
    match encode_control(msg, &mut first) {
        Ok(()) => {}
        // Input that used compact (array) structs can grow past the limit once fields are named.
        Err(WireError::MessageTooLarge { .. }) => return,
        Err(e) => panic!("a decoded message failed to encode: {e}"),
    }
    let again = decode_control_body(&first[4..]).expect("a re-encoded message decodes");
    let mut second = Vec::new();
    encode_control(&again, &mut second).expect("encodes twice");
    assert_eq!(first, second);
}
