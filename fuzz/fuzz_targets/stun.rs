//! Feeds arbitrary bytes to the STUN parser, the integrity/fingerprint checks and an ICE-lite
//! server. Nothing may panic; a parsed message must stay consistent with its bytes.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pipemesh::edge::ice::{IceServer, Protocol, Tuple};
use pipemesh::edge::stun::{local_ufrag_of_request, StunMessage};

fuzz_target!(|data: &[u8]| {
    let _ = local_ufrag_of_request(data);
    if let Ok(msg) = StunMessage::parse(data) {
        assert_eq!(msg.bytes().len(), data.len());
        let _ = msg.verify_integrity(b"fuzzpassword");
        let _ = msg.verify_fingerprint();
        let _ = (msg.username(), msg.xor_mapped_address(), msg.error_code());
    }

    // Use the message's own ufrag as ours so the integrity path is reached too.
    let ufrag = local_ufrag_of_request(data).unwrap_or("fuzz").to_owned();
    let mut ice = IceServer::new(ufrag, "fuzzpassword", Duration::from_secs(30));
    let now = Instant::now();
    let tuple = Tuple {
        protocol: Protocol::Udp,
        remote: SocketAddr::from(([127, 0, 0, 1], 5000)),
    };
    let mut out = Vec::new();
    if ice.handle_stun_bytes(now, tuple, data, &mut out).is_ok() && !out.is_empty() {
        // Whatever we answer must itself be a well-formed STUN message.
        let reply = StunMessage::parse(&out).expect("our own response parses");
        assert!(reply.verify_fingerprint());
    }
    while ice.poll_event().is_some() {}
    ice.handle_timeout(now + Duration::from_secs(31));
});
