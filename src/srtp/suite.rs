//! The two cipher suites, keyed once per session: RFC 3711 §4.3 key derivation, the AES-CM
//! keystream with HMAC-SHA1-80 (RFC 3711 §4.1.1, §4.2), and AES-128-GCM (RFC 7714 §8, §9).
//!
//! Nothing here allocates per packet: the AES round keys, the GCM key and the HMAC
//! inner/outer states are computed in [`Suite::new`] and only copied on the stack afterwards.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::Aes128;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};
use sha1::Sha1;

use super::{Profile, SrtpError};

/// RFC 3711 §4.3.1 key derivation labels.
pub(crate) const LABEL_RTP_ENCRYPTION: u8 = 0x00;
pub(crate) const LABEL_RTP_AUTH: u8 = 0x01;
pub(crate) const LABEL_RTP_SALT: u8 = 0x02;
pub(crate) const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
pub(crate) const LABEL_RTCP_AUTH: u8 = 0x04;
pub(crate) const LABEL_RTCP_SALT: u8 = 0x05;

/// Master (and session) key length of both profiles.
pub(crate) const KEY_LEN: usize = 16;
/// HMAC-SHA1 session key length (RFC 3711 §5.2: n_a = 160).
pub(crate) const AUTH_KEY_LEN: usize = 20;
/// Truncated HMAC-SHA1 tag of AES_CM_128_HMAC_SHA1_80.
pub(crate) const CM_TAG_LEN: usize = 10;
/// AES-GCM tag.
pub(crate) const GCM_TAG_LEN: usize = 16;

/// The RFC 3711 §4.3.3 AES-CM PRF with key_derivation_rate 0: `out` is the keystream of
/// `master_key` at IV `(master_salt XOR label << 48) << 16`. A 12-byte (GCM) salt is padded
/// with zeros on the right, as libsrtp and RFC 7714 §11 do.
pub(crate) fn derive(master_key: &[u8; KEY_LEN], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let aes = Aes128::new(GenericArray::from_slice(master_key));
    let mut x = [0u8; 16];
    let n = master_salt.len().min(14);
    x[..n].copy_from_slice(&master_salt[..n]);
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let mut b = GenericArray::from(block);
        aes.encrypt_block(&mut b);
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn derived<const N: usize>(master_key: &[u8; KEY_LEN], master_salt: &[u8], label: u8) -> [u8; N] {
    let mut out = [0u8; N];
    derive(master_key, master_salt, label, &mut out);
    out
}

/// One direction-independent set of session keys (SRTP and SRTCP halves).
pub(crate) enum Suite {
    /// AEAD_AES_128_GCM. Boxed, as the other: the key schedules are large.
    Gcm(Box<GcmKeys>),
    /// AES_CM_128_HMAC_SHA1_80.
    Cm(Box<CmKeys>),
}

/// Session keys of AEAD_AES_128_GCM.
pub(crate) struct GcmKeys {
    pub(crate) rtp: LessSafeKey,
    pub(crate) rtcp: LessSafeKey,
    pub(crate) rtp_salt: [u8; 12],
    pub(crate) rtcp_salt: [u8; 12],
}

/// Session keys of AES_CM_128_HMAC_SHA1_80.
pub(crate) struct CmKeys {
    rtp_aes: Aes128,
    rtcp_aes: Aes128,
    rtp_auth: HmacSha1,
    rtcp_auth: HmacSha1,
    rtp_salt: [u8; 14],
    rtcp_salt: [u8; 14],
}

type Ctr = ctr::Ctr128BE<Aes128>;
/// RustCrypto's SHA-1 uses the SHA extensions when the CPU has them (ring's does not).
type HmacSha1 = Hmac<Sha1>;
type CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr128BE>;

impl Suite {
    /// Derives the session keys of `profile` from a checked master key and salt.
    pub(crate) fn new(profile: Profile, master_key: &[u8; KEY_LEN], master_salt: &[u8]) -> Self {
        match profile {
            Profile::AeadAes128Gcm => Self::gcm(
                &derived::<KEY_LEN>(master_key, master_salt, LABEL_RTP_ENCRYPTION),
                derived::<12>(master_key, master_salt, LABEL_RTP_SALT),
                &derived::<KEY_LEN>(master_key, master_salt, LABEL_RTCP_ENCRYPTION),
                derived::<12>(master_key, master_salt, LABEL_RTCP_SALT),
            ),
            Profile::Aes128CmHmacSha1_80 => Self::cm(
                &derived::<KEY_LEN>(master_key, master_salt, LABEL_RTP_ENCRYPTION),
                &derived::<AUTH_KEY_LEN>(master_key, master_salt, LABEL_RTP_AUTH),
                derived::<14>(master_key, master_salt, LABEL_RTP_SALT),
                &derived::<KEY_LEN>(master_key, master_salt, LABEL_RTCP_ENCRYPTION),
                &derived::<AUTH_KEY_LEN>(master_key, master_salt, LABEL_RTCP_AUTH),
                derived::<14>(master_key, master_salt, LABEL_RTCP_SALT),
            ),
        }
    }

    /// GCM from session keys (RFC 7714's vectors start here).
    pub(crate) fn gcm(
        rtp_key: &[u8; KEY_LEN],
        rtp_salt: [u8; 12],
        rtcp_key: &[u8; KEY_LEN],
        rtcp_salt: [u8; 12],
    ) -> Self {
        let key = |k: &[u8; KEY_LEN]| {
            // A 16-byte key is always valid for AES_128_GCM.
            LessSafeKey::new(UnboundKey::new(&AES_128_GCM, k).expect("16-byte AES-128 key"))
        };
        Suite::Gcm(Box::new(GcmKeys {
            rtp: key(rtp_key),
            rtcp: key(rtcp_key),
            rtp_salt,
            rtcp_salt,
        }))
    }

    /// AES-CM/HMAC-SHA1 from session keys.
    pub(crate) fn cm(
        rtp_key: &[u8; KEY_LEN],
        rtp_auth: &[u8; AUTH_KEY_LEN],
        rtp_salt: [u8; 14],
        rtcp_key: &[u8; KEY_LEN],
        rtcp_auth: &[u8; AUTH_KEY_LEN],
        rtcp_salt: [u8; 14],
    ) -> Self {
        Suite::Cm(Box::new(CmKeys {
            rtp_aes: Aes128::new(GenericArray::from_slice(rtp_key)),
            rtcp_aes: Aes128::new(GenericArray::from_slice(rtcp_key)),
            rtp_auth: hmac_key(rtp_auth),
            rtcp_auth: hmac_key(rtcp_auth),
            rtp_salt,
            rtcp_salt,
        }))
    }
}

fn hmac_key(key: &[u8; AUTH_KEY_LEN]) -> HmacSha1 {
    // HMAC takes keys of any length.
    <HmacSha1 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), `i` the 48-bit
/// packet index (SRTP) or the 31-bit SRTCP index.
pub(crate) fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}

/// XORs the AES-CM keystream at `iv` into `data`.
pub(crate) fn cm_apply(aes: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let core = CtrCore::inner_iv_init(aes.clone(), &GenericArray::from(iv));
    let mut ctr = Ctr::from_core(core);
    ctr.apply_keystream(data);
}

/// RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt.
pub(crate) fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, roc: u32, seq: u16) -> [u8; 12] {
    let mut iv = *salt;
    for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[6..10].iter_mut().zip(roc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[10..12].iter_mut().zip(seq.to_be_bytes()) {
        *d ^= s;
    }
    iv
}

/// RFC 7714 §9.1: IV = (0x0000 || SSRC || 0x0000 || 0 || SRTCP index) XOR salt.
pub(crate) fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = *salt;
    for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..12]
        .iter_mut()
        .zip((index & 0x7FFF_FFFF).to_be_bytes())
    {
        *d ^= s;
    }
    iv
}

/// Constant-time equality of two tags of the same length.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl CmKeys {
    /// HMAC-SHA1(auth, parts...) truncated to 10 bytes.
    /// The keyed inner/outer states are copied, not recomputed.
    fn tag(key: &HmacSha1, data: &[u8], extra: &[u8]) -> [u8; CM_TAG_LEN] {
        let mut mac = key.clone();
        mac.update(data);
        mac.update(extra);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; CM_TAG_LEN];
        out.copy_from_slice(&full[..CM_TAG_LEN]);
        out
    }

    /// Encrypts `pkt[hl..]` and appends the RTP tag over `pkt || ROC`.
    pub(crate) fn protect_rtp(&self, pkt: &mut Vec<u8>, hl: usize, ssrc: u32, index: u64) {
        cm_apply(
            &self.rtp_aes,
            cm_iv(&self.rtp_salt, ssrc, index),
            &mut pkt[hl..],
        );
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = Self::tag(&self.rtp_auth, pkt, &roc);
        pkt.extend_from_slice(&tag);
    }

    /// Checks the RTP tag (last 10 bytes), then decrypts and drops the tag. Nothing is
    /// modified when the tag is wrong.
    pub(crate) fn unprotect_rtp(
        &self,
        pkt: &mut Vec<u8>,
        hl: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), SrtpError> {
        let body = pkt.len() - CM_TAG_LEN;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = Self::tag(&self.rtp_auth, &pkt[..body], &roc);
        if !tags_equal(&tag, &pkt[body..]) {
            return Err(SrtpError::AuthFailed);
        }
        cm_apply(
            &self.rtp_aes,
            cm_iv(&self.rtp_salt, ssrc, index),
            &mut pkt[hl..body],
        );
        pkt.truncate(body);
        Ok(())
    }

    /// Encrypts `pkt[8..]`, appends `E || index` and the tag over everything before it.
    pub(crate) fn protect_rtcp(&self, pkt: &mut Vec<u8>, ssrc: u32, index: u32) {
        cm_apply(
            &self.rtcp_aes,
            cm_iv(&self.rtcp_salt, ssrc, u64::from(index)),
            &mut pkt[8..],
        );
        pkt.extend_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let tag = Self::tag(&self.rtcp_auth, pkt, &[]);
        pkt.extend_from_slice(&tag);
    }

    /// Checks the SRTCP tag, then decrypts (when E is set) and drops the trailer.
    pub(crate) fn unprotect_rtcp(
        &self,
        pkt: &mut Vec<u8>,
        ssrc: u32,
        e_index: u32,
    ) -> Result<(), SrtpError> {
        let auth_end = pkt.len() - CM_TAG_LEN;
        let tag = Self::tag(&self.rtcp_auth, &pkt[..auth_end], &[]);
        if !tags_equal(&tag, &pkt[auth_end..]) {
            return Err(SrtpError::AuthFailed);
        }
        let body = auth_end - 4;
        if e_index & 0x8000_0000 != 0 {
            let index = e_index & 0x7FFF_FFFF;
            cm_apply(
                &self.rtcp_aes,
                cm_iv(&self.rtcp_salt, ssrc, u64::from(index)),
                &mut pkt[8..body],
            );
        }
        pkt.truncate(body);
        Ok(())
    }
}

/// Seals `pkt[hl..]` in place with `pkt[..hl]` as AAD and appends the tag.
pub(crate) fn gcm_protect_rtp(
    key: &LessSafeKey,
    salt: &[u8; 12],
    pkt: &mut Vec<u8>,
    hl: usize,
    ssrc: u32,
    index: u64,
) -> Result<(), SrtpError> {
    let iv = gcm_rtp_iv(salt, ssrc, (index >> 16) as u32, index as u16);
    let (hdr, payload) = pkt.split_at_mut(hl);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&*hdr), payload)
        .map_err(|_| SrtpError::TooLong)?;
    pkt.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Opens `pkt[hl..len-16]` in place and drops the tag. On failure the context state is not
/// touched, but the packet's bytes are unspecified.
pub(crate) fn gcm_unprotect_rtp(
    key: &LessSafeKey,
    salt: &[u8; 12],
    pkt: &mut Vec<u8>,
    hl: usize,
    ssrc: u32,
    index: u64,
) -> Result<(), SrtpError> {
    let iv = gcm_rtp_iv(salt, ssrc, (index >> 16) as u32, index as u16);
    let body = pkt.len() - GCM_TAG_LEN;
    let (head, tag) = pkt.split_at_mut(body);
    let mut t = [0u8; GCM_TAG_LEN];
    t.copy_from_slice(tag);
    let (hdr, ct) = head.split_at_mut(hl);
    key.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(iv),
        Aad::from(&*hdr),
        Tag::from(t),
        ct,
        0..,
    )
    .map_err(|_| SrtpError::AuthFailed)?;
    pkt.truncate(body);
    Ok(())
}

/// RFC 7714 §9: E=1, AAD = first 8 bytes || ESRTCP word; the output is
/// `header || ciphertext || tag || E|index`.
pub(crate) fn gcm_protect_rtcp(
    key: &LessSafeKey,
    salt: &[u8; 12],
    pkt: &mut Vec<u8>,
    ssrc: u32,
    index: u32,
) -> Result<(), SrtpError> {
    let iv = gcm_rtcp_iv(salt, ssrc, index);
    let word = (index | 0x8000_0000).to_be_bytes();
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&pkt[..8]);
    aad[8..].copy_from_slice(&word);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(aad),
            &mut pkt[8..],
        )
        .map_err(|_| SrtpError::TooLong)?;
    pkt.extend_from_slice(tag.as_ref());
    pkt.extend_from_slice(&word);
    Ok(())
}

/// Verifies (and, when E is set, decrypts) an SRTCP packet whose last 4 bytes are the
/// ESRTCP word, preceded by the 16-byte tag. E=0 (RFC 7714 §9.3): the whole RTCP packet
/// and the word are AAD, the plaintext is empty.
pub(crate) fn gcm_unprotect_rtcp(
    key: &LessSafeKey,
    salt: &[u8; 12],
    pkt: &mut Vec<u8>,
    ssrc: u32,
    e_index: u32,
) -> Result<(), SrtpError> {
    let iv = gcm_rtcp_iv(salt, ssrc, e_index);
    let word = e_index.to_be_bytes();
    let tag_start = pkt.len() - 4 - GCM_TAG_LEN;
    let mut t = [0u8; GCM_TAG_LEN];
    t.copy_from_slice(&pkt[tag_start..tag_start + GCM_TAG_LEN]);
    let nonce = Nonce::assume_unique_for_key(iv);
    if e_index & 0x8000_0000 != 0 {
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&pkt[..8]);
        aad[8..].copy_from_slice(&word);
        key.open_in_place_separate_tag(
            nonce,
            Aad::from(aad),
            Tag::from(t),
            &mut pkt[8..tag_start],
            0..,
        )
        .map_err(|_| SrtpError::AuthFailed)?;
    } else {
        // The AAD is the RTCP packet followed by the word: with the tag copied out, move
        // the word right behind the packet and authenticate that prefix.
        pkt[tag_start..tag_start + 4].copy_from_slice(&word);
        key.open_in_place_separate_tag(
            nonce,
            Aad::from(&pkt[..tag_start + 4]),
            Tag::from(t),
            &mut [],
            0..,
        )
        .map_err(|_| SrtpError::AuthFailed)?;
    }
    pkt.truncate(tag_start);
    Ok(())
}
