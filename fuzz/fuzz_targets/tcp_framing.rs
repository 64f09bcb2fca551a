//! Feeds arbitrary chunks to the RFC 4571 frame decoder. Nothing may panic, frames must respect
//! the configured maximum and the buffer must stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipemesh::edge::demux::{classify, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    // First byte picks the maximum frame length and the chunk size.
    let max = 1 + usize::from(cfg) * 8;
    let chunk = 1 + usize::from(cfg % 17);
    let mut dec = FrameDecoder::new(max);
    'outer: for piece in rest.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            let n = dec.push(piece);
            piece = &piece[n..];
            loop {
                match dec.next_frame() {
                    Ok(Some(frame)) => {
                        assert!(!frame.is_empty() && frame.len() <= max);
                        let _ = classify(frame);
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            assert!(dec.buffered() <= max + 2);
            if n == 0 {
                // Only possible if the decoder failed; stop feeding.
                break 'outer;
            }
        }
    }
});
