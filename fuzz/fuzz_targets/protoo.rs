//! Arbitrary bytes as a signaling text frame: parse, then type any request.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pipemesh::signaling::protoo::{ClientRequest, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = Message::parse(text) {
        let _ = msg.to_text();
        if let Message::Request { method, data, .. } = msg {
            let _ = ClientRequest::parse(&method, data);
        }
    }
});
