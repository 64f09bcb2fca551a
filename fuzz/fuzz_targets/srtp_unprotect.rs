//! Fuzzes SRTP/SRTCP unprotection of both profiles: arbitrary bytes into `unprotect_rtp`,
//! `unprotect_rtcp` and the `decrypt_*` drop-ins. None of it may panic, and since nothing
//! authenticates, no SSRC state may be created; a genuine packet still round-trips after.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipemesh::srtp::{Profile, SrtpContext};

fuzz_target!(|data: &[u8]| {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let key = [7u8; 16];
        let salt = vec![9u8; profile.salt_len()];
        let mut rx = SrtpContext::new(profile, &key, &salt).expect("valid keys");
        let mut tx = SrtpContext::new(profile, &key, &salt).expect("valid keys");

        let _ = rx.unprotect_rtp(&mut data.to_vec());
        let _ = rx.unprotect_rtcp(&mut data.to_vec());
        let _ = rx.decrypt_rtp(data);
        let _ = rx.decrypt_rtcp(data);
        // Protection of arbitrary input must not panic either.
        let _ = tx.protect_rtp(&mut data.to_vec());
        let _ = tx.protect_rtcp(&mut data.to_vec());

        // The receiver learned nothing: a genuine packet on a fresh SSRC still decrypts.
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0xFE, 0xED, 0xFA, 0xCE, 1, 2, 3];
        let plain = pkt.clone();
        let mut tx2 = SrtpContext::new(profile, &key, &salt).expect("valid keys");
        tx2.protect_rtp(&mut pkt).expect("protect");
        rx.unprotect_rtp(&mut pkt).expect("genuine packet decrypts");
        assert_eq!(pkt, plain);
    }
});
