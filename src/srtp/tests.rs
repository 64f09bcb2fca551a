//! Known-answer vectors (RFC 3711 Appendix B, RFC 7714 §16/§17, libsrtp's self-test),
//! interop both ways with `webrtc-srtp`, replay and forgery handling, and garbage input.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use webrtc_srtp::context::Context as Theirs;
use webrtc_srtp::protection_profile::ProtectionProfile;

use super::suite::{self, Suite};
use super::*;

const PROFILES: [Profile; 2] = [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().expect("length")
}

/// Master key and salt of `profile`, different per `fill`.
fn master(profile: Profile, fill: u8) -> (Vec<u8>, Vec<u8>) {
    let key = (0..16)
        .map(|i| fill.wrapping_mul(31).wrapping_add(i))
        .collect();
    let salt = (0..profile.salt_len() as u8)
        .map(|i| fill ^ 0xA5 ^ i.wrapping_mul(7))
        .collect();
    (key, salt)
}

fn pair(profile: Profile) -> (SrtpContext, SrtpContext) {
    let (k, s) = master(profile, 1);
    (
        SrtpContext::new(profile, &k, &s).unwrap(),
        SrtpContext::new(profile, &k, &s).unwrap(),
    )
}

fn theirs(profile: Profile, fill: u8) -> Theirs {
    let (k, s) = master(profile, fill);
    Theirs::new(&k, &s, profile.into(), None, None).unwrap()
}

fn ours(profile: Profile, fill: u8) -> SrtpContext {
    let (k, s) = master(profile, fill);
    SrtpContext::new(profile, &k, &s).unwrap()
}

/// An RTP packet: optional CSRCs and one-byte-header extension, payload of `len` bytes.
fn rtp(seq: u16, ssrc: u32, len: usize, csrcs: u8, ext: bool) -> Vec<u8> {
    let mut p = vec![0x80 | (csrcs & 0x0F) | if ext { 0x10 } else { 0 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..u32::from(csrcs) {
        p.extend_from_slice(&(0x1000 + c).to_be_bytes());
    }
    if ext {
        p.extend_from_slice(&[
            0xBE, 0xDE, 0x00, 0x02, 0x10, 0xAA, 0x21, 0xBB, 0xCC, 0, 0, 0,
        ]);
    }
    p.extend((0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seq as u8)));
    p
}

/// An RTCP receiver report from `ssrc` (plus some payload).
fn rtcp(ssrc: u32, n: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0x00, 0x07];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..24u8).map(|i| i ^ n));
    p
}

// ---------------------------------------------------------------- known answers

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key: [u8; 16] = arr("2B7E151628AED2A6ABF7158809CF4F3C");
    let aes = <aes::Aes128 as aes::cipher::KeyInit>::new(&key.into());
    let salt: [u8; 14] = arr("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
    let iv = suite::cm_iv(&salt, 0, 0);
    assert_eq!(iv[..], hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")[..]);
    // 65282 blocks, the segment length of the appendix.
    let mut ks = vec![0u8; 1_044_512];
    suite::cm_apply(&aes, iv, &mut ks);
    assert_eq!(
        ks[..48],
        hex("E03EAD0935C95E80E166B16DD92B4EB4
             D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0")[..]
    );
    assert_eq!(
        ks[ks.len() - 48..],
        hex("EC8CDF7398607CB0F2D21675EA9EA1E4
             362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44")[..]
    );
}

#[test]
fn rfc3711_b3_key_derivation() {
    let key: [u8; 16] = arr("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut out = [0u8; 16];
    suite::derive(&key, &salt, suite::LABEL_RTP_ENCRYPTION, &mut out);
    assert_eq!(out[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
    let mut out = [0u8; 14];
    suite::derive(&key, &salt, suite::LABEL_RTP_SALT, &mut out);
    assert_eq!(out[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    // The appendix lists 94 bytes of the authentication key (several PRF blocks).
    let mut out = [0u8; 94];
    suite::derive(&key, &salt, suite::LABEL_RTP_AUTH, &mut out);
    assert_eq!(
        out[..],
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
        )[..]
    );
}

/// libsrtp's GCM test material: a 12-byte master salt is zero-padded on the right.
#[test]
fn gcm_key_derivation_pads_the_12_byte_salt() {
    let key: [u8; 16] = arr("000102030405060708090a0b0c0d0e0f");
    let salt = hex("a0a1a2a3a4a5a6a7a8a9aaab");
    let mut k = [0u8; 16];
    let mut s = [0u8; 12];
    suite::derive(&key, &salt, suite::LABEL_RTP_ENCRYPTION, &mut k);
    assert_eq!(k[..], hex("077c6143cb221bc355ff23d5f984a16e")[..]);
    suite::derive(&key, &salt, suite::LABEL_RTP_SALT, &mut s);
    assert_eq!(s[..], hex("9af3e95364ebac9c99c5a7c4")[..]);
    suite::derive(&key, &salt, suite::LABEL_RTCP_ENCRYPTION, &mut k);
    assert_eq!(k[..], hex("615dcd9042600666f6fd4d9e4fe4519f")[..]);
    suite::derive(&key, &salt, suite::LABEL_RTCP_SALT, &mut s);
    assert_eq!(s[..], hex("fcca937b9112a500dac72269")[..]);
}

/// RFC 7714 §16/§17 give session keys directly: key 00..0f, salt "Quid pro quo".
fn rfc7714_context() -> SrtpContext {
    let key: [u8; 16] = arr("000102030405060708090a0b0c0d0e0f");
    let salt: [u8; 12] = arr("517569642070726f2071756f");
    SrtpContext::with_suite(Profile::AeadAes128Gcm, Suite::gcm(&key, salt, &key, salt))
}

const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                           20646976 69736120 696e2070 61727465 73207472 6573";
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

#[test]
fn rfc7714_16_1_srtp_aead_aes_128_gcm() {
    let want = hex(
        "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
         0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
    );
    let mut pkt = hex(RFC7714_RTP);
    rfc7714_context().protect_rtp(&mut pkt).unwrap();
    assert_eq!(pkt, want);

    let mut rx = rfc7714_context();
    rx.unprotect_rtp(&mut pkt).unwrap();
    assert_eq!(pkt, hex(RFC7714_RTP));
    let mut again = want.clone();
    assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
}

#[test]
fn rfc7714_17_1_srtcp_aead_aes_128_gcm() {
    let want = hex(
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
         c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
         45d9eade 800005d4",
    );
    let mut pkt = hex(RFC7714_RTCP);
    rfc7714_context()
        .protect_rtcp_with_index(&mut pkt, 0x4d61_7273, 0x5d4)
        .unwrap();
    assert_eq!(pkt, want);

    let mut rx = rfc7714_context();
    rx.unprotect_rtcp(&mut pkt).unwrap();
    assert_eq!(pkt, hex(RFC7714_RTCP));
    let mut again = want;
    assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
}

/// §17.3: E = 0, authenticated but not encrypted.
#[test]
fn rfc7714_17_3_srtcp_tag_only() {
    let mut wire = hex(
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
         deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790
         125f62b3 000005d4",
    );
    let mut forged = wire.clone();
    forged[20] ^= 1;
    let mut rx = rfc7714_context();
    assert_eq!(rx.unprotect_rtcp(&mut forged), Err(SrtpError::AuthFailed));
    rx.unprotect_rtcp(&mut wire).unwrap();
    assert_eq!(wire, hex(RFC7714_RTCP));
}

/// libsrtp's `srtp_validate` self-test vectors (RFC 3711 B.3 master key and salt).
#[test]
fn libsrtp_aes_cm_hmac_sha1_80_vectors() {
    let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let ctx = || SrtpContext::new(Profile::Aes128CmHmacSha1_80, &key, &salt).unwrap();

    let plain = hex("800f1234 decafbad cafebabe abababab abababab abababab abababab");
    let want = hex(
        "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 b78d6acc
         99ea179b 8dbb",
    );
    let mut pkt = plain.clone();
    ctx().protect_rtp(&mut pkt).unwrap();
    assert_eq!(pkt, want);
    ctx().unprotect_rtp(&mut pkt).unwrap();
    assert_eq!(pkt, plain);

    let plain = hex("81c8000b cafebabe abababab abababab abababab abababab");
    let want = hex(
        "81c8000b cafebabe 7128035b e487b9bd bef89041 f977a5a8 80000001 993e08cd
         54d6c123 0798",
    );
    let mut pkt = plain.clone();
    // The first SRTCP index is 1.
    ctx().protect_rtcp(&mut pkt).unwrap();
    assert_eq!(pkt, want);
    ctx().unprotect_rtcp(&mut pkt).unwrap();
    assert_eq!(pkt, plain);
}

// ---------------------------------------------------------------- interop with webrtc-srtp

/// Sequence numbers that cross a wrap (ROC 0 -> 1), with some reordering.
fn wrap_seqs() -> Vec<u16> {
    let mut v: Vec<u16> = (65_500..=65_535).collect();
    v.extend(0..40u16);
    v.swap(30, 38); // 65530 <-> 2: a late packet from before the wrap and an early one
    v
}

#[test]
fn ours_protect_then_webrtc_srtp_decrypts_across_the_wrap() {
    for profile in PROFILES {
        let mut tx = ours(profile, 7);
        let mut rx = theirs(profile, 7);
        for (i, seq) in wrap_seqs().into_iter().enumerate() {
            for (csrcs, ext) in [(0, false), (2, true)] {
                let ssrc = 0x1111_0000 + u32::from(csrcs);
                let plain = rtp(seq, ssrc, 100 + i * 10, csrcs, ext);
                let enc = tx.encrypt_rtp(&plain).unwrap();
                assert_eq!(enc.len(), plain.len() + profile.rtp_overhead());
                let dec = rx
                    .decrypt_rtp(&enc)
                    .unwrap_or_else(|e| panic!("{profile:?} seq {seq}: {e}"));
                assert_eq!(dec[..], plain[..], "{profile:?} seq {seq}");
            }
        }
        for n in 0..20 {
            let plain = rtcp(0x2222_0000 + u32::from(n % 2), n);
            let enc = tx.encrypt_rtcp(&plain).unwrap();
            assert_eq!(enc.len(), plain.len() + profile.rtcp_overhead());
            assert_eq!(rx.decrypt_rtcp(&enc).unwrap()[..], plain[..], "{profile:?}");
        }
    }
}

#[test]
fn webrtc_srtp_encrypts_then_ours_unprotects_across_the_wrap() {
    for profile in PROFILES {
        let mut tx = theirs(profile, 9);
        let mut rx = ours(profile, 9);
        // webrtc-srtp itself only follows in-order wraps: send in order.
        let mut seqs = wrap_seqs();
        seqs.sort_by_key(|&s| (s < 1000, s));
        for (i, seq) in seqs.into_iter().enumerate() {
            for (csrcs, ext) in [(0, false), (3, true)] {
                let ssrc = 0x3333_0000 + u32::from(csrcs);
                let plain = rtp(seq, ssrc, 50 + i * 17, csrcs, ext);
                let enc = tx.encrypt_rtp(&plain).unwrap();
                let dec = rx
                    .decrypt_rtp(&enc)
                    .unwrap_or_else(|e| panic!("{profile:?} seq {seq}: {e}"));
                assert_eq!(dec[..], plain[..], "{profile:?} seq {seq}");
                // In place gives the same.
                let mut again = enc.to_vec();
                assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
            }
        }
        for n in 0..20 {
            let plain = rtcp(0x4444_0000 + u32::from(n % 3), n);
            let enc = tx.encrypt_rtcp(&plain).unwrap();
            assert_eq!(rx.decrypt_rtcp(&enc).unwrap()[..], plain[..], "{profile:?}");
            assert_eq!(rx.decrypt_rtcp(&enc), Err(SrtpError::Replayed));
        }
    }
}

#[test]
fn ours_and_webrtc_srtp_produce_identical_bytes() {
    for profile in PROFILES {
        let mut a = ours(profile, 3);
        let mut b = theirs(profile, 3);
        for seq in [0u16, 1, 2, 65_535] {
            let plain = rtp(seq, 0xABCD_EF01, 1200, 1, true);
            assert_eq!(
                a.encrypt_rtp(&plain).unwrap(),
                b.encrypt_rtp(&plain).unwrap()
            );
        }
        let plain = rtcp(0xABCD_EF01, 1);
        assert_eq!(
            a.encrypt_rtcp(&plain).unwrap(),
            b.encrypt_rtcp(&plain).unwrap()
        );
    }
}

// ---------------------------------------------------------------- state

#[test]
fn outbound_roc_increments_on_wrap() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        for seq in [65_534u16, 65_535, 0, 1] {
            let mut p = rtp(seq, 5, 20, 0, false);
            tx.protect_rtp(&mut p).unwrap();
            rx.unprotect_rtp(&mut p).unwrap();
        }
        assert_eq!(tx.tx_rtp[&5].roc, 1);
        assert_eq!(rx.rx_rtp[&5].highest, (1 << 16) | 1);
        // A late retransmission from before the wrap still uses ROC 0.
        let mut late = rtp(65_533, 5, 20, 0, false);
        tx.protect_rtp(&mut late).unwrap();
        rx.unprotect_rtp(&mut late).unwrap();
        assert_eq!(late, rtp(65_533, 5, 20, 0, false));
    }
}

#[test]
fn replays_and_too_old_packets_are_rejected() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let mut sent = Vec::new();
        for seq in 0..300u16 {
            let mut p = rtp(seq, 9, 30, 0, false);
            tx.protect_rtp(&mut p).unwrap();
            sent.push(p);
        }
        // Deliver 0..=200 except 150, then 150 late (inside the window).
        for (i, p) in sent.iter().enumerate().take(201) {
            if i != 150 {
                rx.unprotect_rtp(&mut p.clone()).unwrap();
            }
        }
        rx.unprotect_rtp(&mut sent[150].clone()).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut sent[150].clone()),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            rx.unprotect_rtp(&mut sent[200].clone()),
            Err(SrtpError::Replayed)
        );
        // 200 - 72 = 128 behind: outside the window.
        assert_eq!(
            rx.unprotect_rtp(&mut sent[72].clone()),
            Err(SrtpError::Replayed)
        );
        rx.unprotect_rtp(&mut sent[299].clone()).unwrap();
        // A jump clears the window: 201 (98 behind) is still accepted.
        rx.unprotect_rtp(&mut sent[201].clone()).unwrap();

        let mut r = rtcp(9, 1);
        tx.protect_rtcp(&mut r).unwrap();
        rx.unprotect_rtcp(&mut r.clone()).unwrap();
        assert_eq!(rx.unprotect_rtcp(&mut r), Err(SrtpError::Replayed));
    }
}

/// Every single-bit flip fails, and leaves the receiver able to take the genuine packet.
#[test]
fn one_flipped_bit_fails_and_changes_nothing() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        for seq in [10u16, 11] {
            let plain = rtp(seq, 77, 40, 1, true);
            let mut genuine = plain.clone();
            tx.protect_rtp(&mut genuine).unwrap();
            for bit in 0..genuine.len() * 8 {
                let mut forged = genuine.clone();
                forged[bit / 8] ^= 1 << (bit % 8);
                let r = rx.unprotect_rtp(&mut forged);
                assert!(r.is_err(), "{profile:?} bit {bit} accepted");
                if bit >= 32 {
                    // Past the first word the header still parses: the tag decides.
                    assert!(
                        matches!(r, Err(SrtpError::AuthFailed | SrtpError::TooShort)),
                        "{profile:?} bit {bit}: {r:?}"
                    );
                }
            }
            // Nothing was learned from the forgeries: not the SSRC, not the index.
            if seq == 10 {
                assert!(rx.rx_rtp.is_empty());
            }
            rx.unprotect_rtp(&mut genuine).unwrap();
            assert_eq!(genuine, plain);
        }

        let plain = rtcp(78, 5);
        let mut genuine = plain.clone();
        tx.protect_rtcp(&mut genuine).unwrap();
        for bit in 0..genuine.len() * 8 {
            let mut forged = genuine.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                rx.unprotect_rtcp(&mut forged).is_err(),
                "{profile:?} rtcp bit {bit} accepted"
            );
        }
        assert!(rx.rx_rtcp.is_empty());
        rx.unprotect_rtcp(&mut genuine).unwrap();
        assert_eq!(genuine, plain);
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5EED_5127);
    for profile in PROFILES {
        let mut ctx = ours(profile, 11);
        for i in 0..20_000 {
            let len = rng.random_range(0..200);
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf[..]);
            if i % 2 == 0 && len > 0 {
                // Mostly-valid headers reach deeper.
                buf[0] = 0x80 | (buf[0] & 0x3F);
            }
            let _ = ctx.unprotect_rtp(&mut buf.clone());
            let _ = ctx.unprotect_rtcp(&mut buf.clone());
            let _ = ctx.decrypt_rtp(&buf);
            let _ = ctx.decrypt_rtcp(&buf);
        }
        // Nothing authenticated, so nothing was learned.
        assert!(ctx.rx_rtp.is_empty() && ctx.rx_rtcp.is_empty());
        for _ in 0..2_000 {
            let len = rng.random_range(0..200);
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf[..]);
            let _ = ctx.protect_rtp(&mut buf.clone());
            let _ = ctx.protect_rtcp(&mut buf);
        }
    }
}

#[test]
fn ssrc_state_is_bounded() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        for ssrc in 0..MAX_SSRCS as u32 {
            let mut p = rtp(1, ssrc, 10, 0, false);
            tx.protect_rtp(&mut p).unwrap();
            rx.unprotect_rtp(&mut p).unwrap();
        }
        let mut p = rtp(1, 5000, 10, 0, false);
        assert_eq!(tx.protect_rtp(&mut p), Err(SrtpError::TooManySsrcs));
        assert_eq!(p, rtp(1, 5000, 10, 0, false));
        let mut other = ours(profile, 1);
        other.protect_rtp(&mut p).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::TooManySsrcs));
        assert_eq!(rx.rx_rtp.len(), MAX_SSRCS);
        // Known SSRCs keep working.
        let mut p = rtp(2, 7, 10, 0, false);
        tx.protect_rtp(&mut p).unwrap();
        rx.unprotect_rtp(&mut p).unwrap();
    }
}

#[test]
fn in_place_protection_reuses_the_buffer() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let mut buf = Vec::with_capacity(1500);
        let ptr = buf.as_ptr();
        for seq in 0..100u16 {
            buf.clear();
            buf.extend_from_slice(&rtp(seq, 1, 1200, 0, false));
            tx.protect_rtp(&mut buf).unwrap();
            rx.unprotect_rtp(&mut buf).unwrap();
            buf.clear();
            buf.extend_from_slice(&rtcp(1, seq as u8));
            tx.protect_rtcp(&mut buf).unwrap();
            rx.unprotect_rtcp(&mut buf).unwrap();
        }
        assert_eq!(buf.as_ptr(), ptr);
        assert_eq!(buf.capacity(), 1500);
    }
}

#[test]
fn keys_and_profiles_are_checked() {
    assert_eq!(
        SrtpContext::new(Profile::AeadAes128Gcm, &[0; 15], &[0; 12]).err(),
        Some(SrtpError::BadKeyLength(15))
    );
    assert_eq!(
        SrtpContext::new(Profile::AeadAes128Gcm, &[0; 16], &[0; 14]).err(),
        Some(SrtpError::BadSaltLength(14))
    );
    assert_eq!(
        SrtpContext::new(Profile::Aes128CmHmacSha1_80, &[0; 16], &[0; 12]).err(),
        Some(SrtpError::BadSaltLength(12))
    );
    assert_eq!(
        Profile::try_from(ProtectionProfile::AeadAes256Gcm),
        Err(SrtpError::UnsupportedProfile)
    );
    for p in PROFILES {
        assert_eq!(Profile::try_from(ProtectionProfile::from(p)), Ok(p));
    }
    let mut ctx = ours(Profile::AeadAes128Gcm, 1);
    let mut short = vec![0x80; 11];
    assert_eq!(ctx.protect_rtp(&mut short), Err(SrtpError::TooShort));
    let mut v1 = rtp(1, 1, 10, 0, false);
    v1[0] = 0x40;
    assert_eq!(ctx.protect_rtp(&mut v1), Err(SrtpError::BadVersion));
}
