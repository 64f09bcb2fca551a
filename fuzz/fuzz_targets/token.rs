//! Room tokens from the network: arbitrary strings into the verifier, and correctly signed
//! tokens with arbitrary header and payload JSON (so that claim decoding is reached past the
//! signature check, which random input never passes).
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pipemesh::auth::{verify, AuthSecret};

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-sec";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // SECRET is 32 bytes, the minimum: accepted.
    let secret = AuthSecret::new(SECRET.to_vec()).unwrap();
    let token = if mode & 1 == 0 {
        let Ok(t) = std::str::from_utf8(rest) else {
            return;
        };
        t.to_owned()
    } else {
        // header 0xff payload, each base64url-encoded, signed with the secret.
        let (header, payload) = match rest.iter().position(|&b| b == 0xff) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&b"{\"alg\":\"HS256\"}"[..], rest),
        };
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
        let sig = ring::hmac::sign(&key, msg.as_bytes());
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };
    let now = NOW.wrapping_add(u64::from(mode >> 1) * 1_000_000);
    // Never panics; any answer is fine.
    let _ = verify(&secret, &token, "room", "peer", now);
});
