//! STUN messages (RFC 8489 / RFC 5389) with the ICE attributes of RFC 8445.
//!
//! This module owns the STUN wire format only: a borrowing parser ([`StunMessage::parse`]),
//! integrity and fingerprint checks, and writers that serialize the few messages an ICE-lite
//! server (and our headless bot) sends into a caller-provided `Vec<u8>`. It holds no state, reads
//! no clock and never allocates on the per-packet path: parsing borrows the datagram, writers
//! clear and refill the caller's buffer. ICE decisions (who may connect, which tuple is selected)
//! live in [`super::ice`].
//!
//! Validation is strict on structure (magic cookie, 4-byte aligned length equal to the bytes
//! given, every attribute and its padding inside the message, FINGERPRINT last, fixed-size
//! attributes of the right size) and lenient where the RFC asks for it (padding content is
//! ignored, unknown comprehension-optional attributes are skipped, attributes after
//! MESSAGE-INTEGRITY other than FINGERPRINT are ignored, only the first of a repeated attribute
//! counts).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

/// The fixed STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header in bytes.
pub const HEADER_LEN: usize = 20;
/// The Binding method, the only one ICE uses.
pub const METHOD_BINDING: u16 = 0x001;
/// Value XORed into the CRC-32 of a FINGERPRINT attribute (RFC 8489 §14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Length of a MESSAGE-INTEGRITY (HMAC-SHA1) value.
const INTEGRITY_LEN: usize = 20;
/// Longest USERNAME / reason phrase we accept or write (RFC 8489 §14.3, §14.8).
pub const MAX_TEXT_LEN: usize = 763;

/// The 96-bit transaction id of a STUN message.
pub type TransactionId = [u8; 12];

/// Attribute types this module understands.
pub mod attr {
    /// MAPPED-ADDRESS (not parsed; known so it is not reported as unknown).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME: "ourUfrag:theirUfrag" in a check sent to us.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY: HMAC-SHA1 of the message.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES, sent in 420 responses.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// REALM (long-term credentials; known, ignored).
    pub const REALM: u16 = 0x0014;
    /// NONCE (long-term credentials; known, ignored).
    pub const NONCE: u16 = 0x0015;
    /// MESSAGE-INTEGRITY-SHA256 (known, not verified: ICE uses SHA-1).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PRIORITY (RFC 8445).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (RFC 8445).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// SOFTWARE (ignored).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// ICE-CONTROLLED (RFC 8445).
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE-CONTROLLING (RFC 8445).
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// NOMINATION (draft-thatcher-ice-renomination, sent by libwebrtc when negotiated).
    pub const NOMINATION: u16 = 0xC001;
}

/// Errors of STUN parsing and writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Fewer bytes than the 20-byte STUN header.
    #[error("shorter than the STUN header")]
    TooShort,
    /// The two most significant bits of the message are not zero: not STUN.
    #[error("leading bits not zero")]
    NotStun,
    /// The magic cookie is wrong (or this is an RFC 3489 message, which we do not speak).
    #[error("bad magic cookie")]
    BadMagicCookie,
    /// The header's message length is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header's message length disagrees with the number of bytes given.
    #[error("header says {declared} body bytes, got {actual}")]
    LengthMismatch {
        /// Body length stated in the header.
        declared: usize,
        /// Body length actually present.
        actual: usize,
    },
    /// An attribute header, value or padding runs past the end of the message.
    #[error("attribute 0x{0:04x} truncated")]
    TruncatedAttribute(u16),
    /// A known attribute has a length its type does not allow.
    #[error("attribute 0x{attr_type:04x} has invalid length {len}")]
    BadAttributeLength {
        /// The attribute type.
        attr_type: u16,
        /// The length found.
        len: usize,
    },
    /// An attribute follows FINGERPRINT, which must be last.
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
    /// USERNAME is not UTF-8.
    #[error("USERNAME is not UTF-8")]
    BadUsername,
    /// ERROR-CODE has a class outside 3..=6, a number above 99 or a non-UTF-8 reason.
    #[error("malformed ERROR-CODE")]
    BadErrorCode,
    /// An address attribute has an unknown address family.
    #[error("unknown address family {0}")]
    BadAddressFamily(u8),
    /// A value given to a writer is longer than STUN allows.
    #[error("value too long to encode")]
    ValueTooLong,
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, expecting a response.
    Request,
    /// An indication, expecting nothing.
    Indication,
    /// A success response.
    SuccessResponse,
    /// An error response.
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }
}

/// A parsed ERROR-CODE attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The numeric code, 300..=699.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// The error responses an ICE-lite server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunErrorCode {
    /// 400: malformed request, or one missing USERNAME / MESSAGE-INTEGRITY.
    BadRequest,
    /// 401: wrong username or failed MESSAGE-INTEGRITY.
    Unauthorized,
    /// 420: a comprehension-required attribute we do not know (its type is echoed back).
    UnknownAttribute(u16),
    /// 487: role conflict (the peer says it is controlled, like us).
    RoleConflict,
}

impl StunErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            StunErrorCode::BadRequest => 400,
            StunErrorCode::Unauthorized => 401,
            StunErrorCode::UnknownAttribute(_) => 420,
            StunErrorCode::RoleConflict => 487,
        }
    }

    /// The reason phrase we send.
    pub fn reason(self) -> &'static str {
        match self {
            StunErrorCode::BadRequest => "Bad Request",
            StunErrorCode::Unauthorized => "Unauthorized",
            StunErrorCode::UnknownAttribute(_) => "Unknown Attribute",
            StunErrorCode::RoleConflict => "Role Conflict",
        }
    }
}

/// A short-term credential key (the ICE password), prepared once for HMAC-SHA1.
///
/// Building the HMAC key hashes the password; holding one per transport keeps that work off
/// the per-packet path.
#[derive(Clone, Debug)]
pub struct IntegrityKey(hmac::Key);

impl IntegrityKey {
    /// A key from a password (ICE passwords are ASCII, so no SASLprep/OpaqueString is needed).
    pub fn new(password: &[u8]) -> Self {
        IntegrityKey(hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            password,
        ))
    }
}

/// A STUN message parsed by borrowing the bytes it came in.
#[derive(Debug, Clone)]
pub struct StunMessage<'a> {
    bytes: &'a [u8],
    class: Class,
    method: u16,
    transaction_id: TransactionId,
    username: Option<&'a str>,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity_at: Option<usize>,
    /// Offset of the FINGERPRINT attribute header and its value.
    fingerprint: Option<(usize, u32)>,
    priority: Option<u32>,
    use_candidate: bool,
    ice_controlling: Option<u64>,
    ice_controlled: Option<u64>,
    xor_mapped_address: Option<SocketAddr>,
    error_code: Option<ErrorCode<'a>>,
    nomination: Option<u32>,
    unknown_required: Option<u16>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]])) // s has exactly 2 bytes
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]])) // s has exactly 4 bytes
}

fn be64(b: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = b.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

fn check_len(attr_type: u16, value: &[u8], want: usize) -> Result<(), StunError> {
    if value.len() == want {
        Ok(())
    } else {
        Err(StunError::BadAttributeLength {
            attr_type,
            len: value.len(),
        })
    }
}

/// Splits a 14-bit message type into class and method.
fn split_type(t: u16) -> (Class, u16) {
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::SuccessResponse,
        _ => Class::ErrorResponse,
    };
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    (class, method)
}

/// Joins class and (12-bit) method into a message type.
fn join_type(class: Class, method: u16) -> u16 {
    let c = class.bits();
    let m = method & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Returns true when `bytes` starts like a STUN message: leading bits zero, magic cookie present,
/// at least a header long. Cheap; no attribute is looked at.
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[0] & 0xC0 == 0 // length checked above
        && be32(bytes, 4) == Some(MAGIC_COOKIE)
}

fn xor_address(value: &[u8], txid: &TransactionId) -> Result<SocketAddr, StunError> {
    let family = *value.get(1).ok_or(StunError::BadAttributeLength {
        attr_type: attr::XOR_MAPPED_ADDRESS,
        len: value.len(),
    })?;
    let bad_len = StunError::BadAttributeLength {
        attr_type: attr::XOR_MAPPED_ADDRESS,
        len: value.len(),
    };
    let port = be16(value, 2).ok_or(bad_len)? ^ (MAGIC_COOKIE >> 16) as u16;
    match family {
        0x01 => {
            if value.len() != 8 {
                return Err(bad_len);
            }
            let ip = be32(value, 4).ok_or(bad_len)? ^ MAGIC_COOKIE;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 => {
            let raw: [u8; 16] = value
                .get(4..)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad_len)?;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(txid);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = raw[i] ^ mask[i];
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        other => Err(StunError::BadAddressFamily(other)),
    }
}

fn parse_error_code(value: &[u8]) -> Result<ErrorCode<'_>, StunError> {
    if value.len() < 4 {
        return Err(StunError::BadErrorCode);
    }
    let class = u16::from(value[2] & 0x07); // len >= 4 checked above
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(StunError::BadErrorCode);
    }
    let reason = value.get(4..).unwrap_or_default();
    if reason.len() > MAX_TEXT_LEN {
        return Err(StunError::BadErrorCode);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| StunError::BadErrorCode)?;
    Ok(ErrorCode {
        code: class * 100 + number,
        reason,
    })
}

impl<'a> StunMessage<'a> {
    /// Parses one complete STUN message (a whole UDP datagram or one RFC 4571 frame).
    ///
    /// Never panics and never allocates, whatever the input.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StunError> {
        if bytes.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        let msg_type = be16(bytes, 0).ok_or(StunError::TooShort)?;
        if msg_type & 0xC000 != 0 {
            return Err(StunError::NotStun);
        }
        let declared = be16(bytes, 2).ok_or(StunError::TooShort)?;
        if be32(bytes, 4) != Some(MAGIC_COOKIE) {
            return Err(StunError::BadMagicCookie);
        }
        if declared % 4 != 0 {
            return Err(StunError::UnalignedLength(declared));
        }
        if usize::from(declared) != bytes.len() - HEADER_LEN {
            return Err(StunError::LengthMismatch {
                declared: usize::from(declared),
                actual: bytes.len() - HEADER_LEN,
            });
        }
        let (class, method) = split_type(msg_type);
        let transaction_id: TransactionId = bytes
            .get(8..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(StunError::TooShort)?;

        let mut msg = StunMessage {
            bytes,
            class,
            method,
            transaction_id,
            username: None,
            integrity_at: None,
            fingerprint: None,
            priority: None,
            use_candidate: false,
            ice_controlling: None,
            ice_controlled: None,
            xor_mapped_address: None,
            error_code: None,
            nomination: None,
            unknown_required: None,
        };

        let mut off = HEADER_LEN;
        while off < bytes.len() {
            if msg.fingerprint.is_some() {
                return Err(StunError::AttributeAfterFingerprint);
            }
            let attr_type = be16(bytes, off).ok_or(StunError::TruncatedAttribute(0))?;
            let len =
                usize::from(be16(bytes, off + 2).ok_or(StunError::TruncatedAttribute(attr_type))?);
            let start = off + 4;
            let end = start + len;
            let padded = start + ((len + 3) & !3);
            if padded > bytes.len() {
                return Err(StunError::TruncatedAttribute(attr_type));
            }
            let value = bytes
                .get(start..end)
                .ok_or(StunError::TruncatedAttribute(attr_type))?;

            if attr_type == attr::FINGERPRINT {
                check_len(attr_type, value, 4)?;
                let crc = be32(value, 0).ok_or(StunError::TruncatedAttribute(attr_type))?;
                msg.fingerprint = Some((off, crc));
            } else if msg.integrity_at.is_some() {
                // RFC 8489 §14.5: everything after MESSAGE-INTEGRITY but FINGERPRINT is ignored.
            } else {
                msg.apply_attribute(attr_type, value, off)?;
            }
            off = padded;
        }
        Ok(msg)
    }

    fn apply_attribute(
        &mut self,
        attr_type: u16,
        value: &'a [u8],
        off: usize,
    ) -> Result<(), StunError> {
        match attr_type {
            attr::MESSAGE_INTEGRITY => {
                check_len(attr_type, value, INTEGRITY_LEN)?;
                self.integrity_at = Some(off);
            }
            attr::USERNAME => {
                if value.len() > MAX_TEXT_LEN {
                    return Err(StunError::BadAttributeLength {
                        attr_type,
                        len: value.len(),
                    });
                }
                let name = std::str::from_utf8(value).map_err(|_| StunError::BadUsername)?;
                self.username.get_or_insert(name);
            }
            attr::PRIORITY => {
                check_len(attr_type, value, 4)?;
                let v = be32(value, 0).ok_or(StunError::TruncatedAttribute(attr_type))?;
                self.priority.get_or_insert(v);
            }
            attr::USE_CANDIDATE => {
                check_len(attr_type, value, 0)?;
                self.use_candidate = true;
            }
            attr::ICE_CONTROLLING | attr::ICE_CONTROLLED => {
                check_len(attr_type, value, 8)?;
                let v = be64(value).ok_or(StunError::TruncatedAttribute(attr_type))?;
                if attr_type == attr::ICE_CONTROLLING {
                    self.ice_controlling.get_or_insert(v);
                } else {
                    self.ice_controlled.get_or_insert(v);
                }
            }
            attr::XOR_MAPPED_ADDRESS => {
                let a = xor_address(value, &self.transaction_id)?;
                self.xor_mapped_address.get_or_insert(a);
            }
            attr::ERROR_CODE => {
                let e = parse_error_code(value)?;
                self.error_code.get_or_insert(e);
            }
            attr::NOMINATION => {
                check_len(attr_type, value, 4)?;
                let v = be32(value, 0).ok_or(StunError::TruncatedAttribute(attr_type))?;
                self.nomination.get_or_insert(v);
            }
            attr::MAPPED_ADDRESS
            | attr::UNKNOWN_ATTRIBUTES
            | attr::REALM
            | attr::NONCE
            | attr::MESSAGE_INTEGRITY_SHA256 => {}
            t if t < 0x8000 => {
                self.unknown_required.get_or_insert(t);
            }
            _ => {} // unknown comprehension-optional: ignored (RFC 8489 §14)
        }
        Ok(())
    }

    /// The raw bytes of the whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The 12-bit method.
    pub fn method(&self) -> u16 {
        self.method
    }

    /// True for a Binding request.
    pub fn is_binding_request(&self) -> bool {
        self.class == Class::Request && self.method == METHOD_BINDING
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.transaction_id
    }

    /// USERNAME, if present.
    pub fn username(&self) -> Option<&'a str> {
        self.username
    }

    /// True when MESSAGE-INTEGRITY is present (not yet verified).
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// True when FINGERPRINT is present (not yet verified).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// PRIORITY, if present.
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// True when USE-CANDIDATE is present.
    pub fn use_candidate(&self) -> bool {
        self.use_candidate
    }

    /// The ICE-CONTROLLING tie-breaker, if present.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.ice_controlling
    }

    /// The ICE-CONTROLLED tie-breaker, if present.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.ice_controlled
    }

    /// XOR-MAPPED-ADDRESS, decoded, if present.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.xor_mapped_address
    }

    /// ERROR-CODE, if present.
    pub fn error_code(&self) -> Option<ErrorCode<'a>> {
        self.error_code
    }

    /// NOMINATION, if present.
    pub fn nomination(&self) -> Option<u32> {
        self.nomination
    }

    /// The first unknown comprehension-required attribute type (0x0000..=0x7FFF), if any. A
    /// server answers such a request with 420.
    pub fn unknown_comprehension_required(&self) -> Option<u16> {
        self.unknown_required
    }

    /// Verifies MESSAGE-INTEGRITY with a short-term credential (the password). False when the
    /// attribute is missing or does not match.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        self.verify_integrity_with(&IntegrityKey::new(key))
    }

    /// Like [`Self::verify_integrity`] with a prepared key (cheaper per packet).
    pub fn verify_integrity_with(&self, key: &IntegrityKey) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(received) = self.bytes.get(at + 4..at + 4 + INTEGRITY_LEN) else {
            return false;
        };
        let Some(tag) = integrity_tag(key, self.bytes, at) else {
            return false;
        };
        constant_time_eq(tag.as_ref(), received)
    }

    /// Verifies FINGERPRINT (CRC-32 of the message before it, XOR 0x5354554e). False when
    /// missing or wrong.
    pub fn verify_fingerprint(&self) -> bool {
        let Some((at, value)) = self.fingerprint else {
            return false;
        };
        // FINGERPRINT is the last attribute (enforced by parse), so the header length already
        // covers it as RFC 8489 §14.7 requires.
        match self.bytes.get(..at) {
            Some(covered) => crc32fast::hash(covered) ^ FINGERPRINT_XOR == value,
            None => false,
        }
    }
}

/// HMAC-SHA1 over `bytes[..integrity_at]` with the header length rewritten to end just after a
/// MESSAGE-INTEGRITY attribute at `integrity_at` (RFC 8489 §14.5).
fn integrity_tag(key: &IntegrityKey, bytes: &[u8], integrity_at: usize) -> Option<hmac::Tag> {
    let adjusted = u16::try_from(integrity_at + 4 + INTEGRITY_LEN - HEADER_LEN).ok()?;
    let mut ctx = hmac::Context::with_key(&key.0);
    ctx.update(bytes.get(..2)?);
    ctx.update(&adjusted.to_be_bytes());
    ctx.update(bytes.get(4..integrity_at)?);
    Some(ctx.sign())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The local ufrag a Binding request is addressed to: the part of USERNAME before ':'.
///
/// The demux glue uses it to route a check arriving on the shared port to its transport. Only
/// structure is checked here, not integrity.
pub fn local_ufrag_of_request(bytes: &[u8]) -> Option<&str> {
    let msg = StunMessage::parse(bytes).ok()?;
    if !msg.is_binding_request() {
        return None;
    }
    let name = msg.username()?;
    let local = name.split_once(':').map_or(name, |(l, _)| l);
    (!local.is_empty()).then_some(local)
}

// ---------------------------------------------------------------------------------------------
// Writers

fn begin(out: &mut Vec<u8>, class: Class, method: u16, txid: &TransactionId) {
    out.clear();
    out.extend_from_slice(&join_type(class, method).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
}

fn put_attr(out: &mut Vec<u8>, attr_type: u16, value: &[u8]) {
    // Callers keep values under MAX_TEXT_LEN or fixed small sizes, so the cast is lossless.
    out.extend_from_slice(&attr_type.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    let pad = (4 - value.len() % 4) % 4;
    out.extend_from_slice(&[0u8; 3][..pad]);
}

fn set_length(out: &mut [u8], body_len: usize) {
    // Messages we write are far below 64 KiB (bounded text fields).
    let len = (body_len as u16).to_be_bytes();
    if let Some(s) = out.get_mut(2..4) {
        s.copy_from_slice(&len);
    }
}

fn put_integrity(out: &mut Vec<u8>, key: &IntegrityKey) {
    let at = out.len();
    set_length(out, at + 4 + INTEGRITY_LEN - HEADER_LEN);
    let mut ctx = hmac::Context::with_key(&key.0);
    ctx.update(out);
    let tag = ctx.sign();
    put_attr(out, attr::MESSAGE_INTEGRITY, tag.as_ref());
}

fn put_fingerprint(out: &mut Vec<u8>) {
    let total = out.len() + 8;
    set_length(out, total - HEADER_LEN);
    let crc = crc32fast::hash(out) ^ FINGERPRINT_XOR;
    put_attr(out, attr::FINGERPRINT, &crc.to_be_bytes());
}

fn xor_address_value(addr: SocketAddr, txid: &TransactionId, buf: &mut [u8; 20]) -> usize {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    buf[2..4].copy_from_slice(&port.to_be_bytes());
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the peer knows itself as IPv4.
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(ip) => {
            buf[1] = 0x01;
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            buf[4..8].copy_from_slice(&x.to_be_bytes());
            8
        }
        IpAddr::V6(ip) => {
            buf[1] = 0x02;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(txid);
            for (i, b) in ip.octets().iter().enumerate() {
                buf[4 + i] = b ^ mask[i];
            }
            20
        }
    }
}

/// Writes a Binding success response: XOR-MAPPED-ADDRESS (`mapped`, the request's source),
/// MESSAGE-INTEGRITY keyed with our local password, FINGERPRINT. `out` is cleared first.
pub fn write_binding_success(
    out: &mut Vec<u8>,
    transaction_id: &TransactionId,
    mapped: SocketAddr,
    key: &IntegrityKey,
) {
    begin(out, Class::SuccessResponse, METHOD_BINDING, transaction_id);
    let mut value = [0u8; 20];
    let n = xor_address_value(mapped, transaction_id, &mut value);
    put_attr(out, attr::XOR_MAPPED_ADDRESS, &value[..n]);
    put_integrity(out, key);
    put_fingerprint(out);
}

/// Writes a Binding error response with ERROR-CODE (and UNKNOWN-ATTRIBUTES for 420),
/// MESSAGE-INTEGRITY when `key` is given (only when the request authenticated), FINGERPRINT.
/// `out` is cleared first.
pub fn write_binding_error(
    out: &mut Vec<u8>,
    transaction_id: &TransactionId,
    error: StunErrorCode,
    key: Option<&IntegrityKey>,
) {
    begin(out, Class::ErrorResponse, METHOD_BINDING, transaction_id);
    let code = error.code();
    let reason = error.reason().as_bytes();
    let mut value = [0u8; 4 + 32];
    value[2] = (code / 100) as u8; // code is 400..=487
    value[3] = (code % 100) as u8;
    let n = 4 + reason.len().min(32);
    value[4..n].copy_from_slice(&reason[..n - 4]);
    put_attr(out, attr::ERROR_CODE, &value[..n]);
    if let StunErrorCode::UnknownAttribute(t) = error {
        put_attr(out, attr::UNKNOWN_ATTRIBUTES, &t.to_be_bytes());
    }
    if let Some(key) = key {
        put_integrity(out, key);
    }
    put_fingerprint(out);
}

/// The parameters of a connectivity check sent by the controlling side (our bot).
#[derive(Debug, Clone, Copy)]
pub struct BindingRequest<'a> {
    /// A fresh random transaction id.
    pub transaction_id: TransactionId,
    /// "remoteUfrag:localUfrag".
    pub username: &'a str,
    /// The PRIORITY of the peer-reflexive candidate this check would create.
    pub priority: u32,
    /// Our ICE-CONTROLLING tie-breaker.
    pub tie_breaker: u64,
    /// Nominate this pair.
    pub use_candidate: bool,
}

/// Writes a Binding request: USERNAME, PRIORITY, ICE-CONTROLLING, optional USE-CANDIDATE,
/// MESSAGE-INTEGRITY keyed with the remote password, FINGERPRINT. `out` is cleared first.
pub fn write_binding_request(
    out: &mut Vec<u8>,
    req: &BindingRequest<'_>,
    key: &IntegrityKey,
) -> Result<(), StunError> {
    if req.username.len() > MAX_TEXT_LEN {
        return Err(StunError::ValueTooLong);
    }
    begin(out, Class::Request, METHOD_BINDING, &req.transaction_id);
    put_attr(out, attr::USERNAME, req.username.as_bytes());
    put_attr(out, attr::PRIORITY, &req.priority.to_be_bytes());
    put_attr(out, attr::ICE_CONTROLLING, &req.tie_breaker.to_be_bytes());
    if req.use_candidate {
        put_attr(out, attr::USE_CANDIDATE, &[]);
    }
    put_integrity(out, key);
    put_fingerprint(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    // RFC 5769 §2.1 (note the padding of USERNAME is spaces, not zeros).
    fn rfc5769_request() -> Vec<u8> {
        hex("000100582112a442b7e7a701bc34d686fa87dfae
             802200105354554e20746573742063 6c69656e74
             002400046e0001ff
             80290008932ff9b151263b36
             000600096576746a3a6836765920 2020
             000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
             80280004e57a3bcf")
    }

    // RFC 5769 §2.2.
    fn rfc5769_response_v4() -> Vec<u8> {
        hex("0101003c2112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000080001a147e112a643
             000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
             80280004c07d4c96")
    }

    // RFC 5769 §2.3.
    fn rfc5769_response_v6() -> Vec<u8> {
        hex("010100482112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9
             00080014a382954e4be67bf11784c97c8292c275bfe3ed41
             80280004c8fb0b4c")
    }

    const PWD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    #[test]
    fn parses_rfc5769_request() {
        let b = rfc5769_request();
        let m = StunMessage::parse(&b).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.username(), Some("evtj:h6vY"));
        assert_eq!(m.priority(), Some(0x6e0001ff));
        assert_eq!(m.ice_controlled(), Some(0x932ff9b151263b36));
        assert_eq!(m.ice_controlling(), None);
        assert!(!m.use_candidate());
        assert_eq!(m.unknown_comprehension_required(), None);
        assert_eq!(m.transaction_id()[0], 0xb7);
        assert!(m.verify_integrity(PWD));
        assert!(!m.verify_integrity(b"wrong"));
        assert!(m.verify_fingerprint());
    }

    #[test]
    fn parses_rfc5769_responses() {
        for (b, want) in [
            (rfc5769_response_v4(), "192.0.2.1:32853"),
            (
                rfc5769_response_v6(),
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            ),
        ] {
            let m = StunMessage::parse(&b).unwrap();
            assert_eq!(m.class(), Class::SuccessResponse);
            assert_eq!(m.method(), METHOD_BINDING);
            assert_eq!(m.xor_mapped_address(), Some(want.parse().unwrap()));
            assert!(m.verify_integrity(PWD));
            assert!(m.verify_fingerprint());
        }
    }

    #[test]
    fn flipped_bit_fails_integrity_and_fingerprint() {
        let mut b = rfc5769_request();
        b[40] ^= 1; // inside PRIORITY
        let m = StunMessage::parse(&b).unwrap();
        assert!(!m.verify_integrity(PWD));
        assert!(!m.verify_fingerprint());
    }

    #[test]
    fn type_encoding_roundtrips() {
        for class in [
            Class::Request,
            Class::Indication,
            Class::SuccessResponse,
            Class::ErrorResponse,
        ] {
            for method in [0x001, 0x00F, 0x010, 0x0FF, 0xABC, 0xFFF] {
                assert_eq!(split_type(join_type(class, method)), (class, method));
            }
        }
        assert_eq!(join_type(Class::SuccessResponse, 1), 0x0101);
        assert_eq!(join_type(Class::ErrorResponse, 1), 0x0111);
    }

    #[test]
    fn success_response_roundtrip_v4_v6() {
        let key = IntegrityKey::new(b"localpassword");
        let txid = [7u8; 12];
        let mut out = Vec::with_capacity(128);
        for addr in ["10.1.2.3:5000", "[fe80::1:2]:65535"] {
            let addr: SocketAddr = addr.parse().unwrap();
            write_binding_success(&mut out, &txid, addr, &key);
            let m = StunMessage::parse(&out).unwrap();
            assert_eq!(m.class(), Class::SuccessResponse);
            assert_eq!(m.transaction_id(), &txid);
            assert_eq!(m.xor_mapped_address(), Some(addr));
            assert!(m.verify_integrity(b"localpassword"));
            assert!(!m.verify_integrity(b"other"));
            assert!(m.verify_fingerprint());
        }
    }

    #[test]
    fn ipv4_mapped_peer_is_answered_as_ipv4() {
        let key = IntegrityKey::new(b"p");
        let mut out = Vec::new();
        let mapped: SocketAddr = "[::ffff:203.0.113.9]:4000".parse().unwrap();
        write_binding_success(&mut out, &[2; 12], mapped, &key);
        let m = StunMessage::parse(&out).unwrap();
        assert_eq!(
            m.xor_mapped_address(),
            Some("203.0.113.9:4000".parse().unwrap())
        );
    }

    #[test]
    fn writer_reuses_buffer() {
        let key = IntegrityKey::new(b"p");
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[0xAA; 200]);
        let cap = out.capacity();
        write_binding_success(&mut out, &[1; 12], "1.2.3.4:5".parse().unwrap(), &key);
        assert_eq!(out.capacity(), cap);
        assert!(StunMessage::parse(&out).is_ok());
    }

    #[test]
    fn error_responses() {
        let key = IntegrityKey::new(b"pw");
        let mut out = Vec::new();
        for e in [
            StunErrorCode::BadRequest,
            StunErrorCode::Unauthorized,
            StunErrorCode::RoleConflict,
            StunErrorCode::UnknownAttribute(0x0042),
        ] {
            for k in [None, Some(&key)] {
                write_binding_error(&mut out, &[3; 12], e, k);
                let m = StunMessage::parse(&out).unwrap();
                assert_eq!(m.class(), Class::ErrorResponse);
                let ec = m.error_code().unwrap();
                assert_eq!(ec.code, e.code());
                assert_eq!(ec.reason, e.reason());
                assert_eq!(m.has_integrity(), k.is_some());
                assert_eq!(m.verify_integrity(b"pw"), k.is_some());
                assert!(m.verify_fingerprint());
            }
        }
    }

    #[test]
    fn request_roundtrip_and_ufrag() {
        let key = IntegrityKey::new(b"remotepwd");
        let mut out = Vec::new();
        for use_candidate in [false, true] {
            let req = BindingRequest {
                transaction_id: [9; 12],
                username: "serverUfrag:botUfrag",
                priority: 0x7e00_00ff,
                tie_breaker: 0x0102_0304_0506_0708,
                use_candidate,
            };
            write_binding_request(&mut out, &req, &key).unwrap();
            let m = StunMessage::parse(&out).unwrap();
            assert!(m.is_binding_request());
            assert_eq!(m.username(), Some("serverUfrag:botUfrag"));
            assert_eq!(m.priority(), Some(0x7e00_00ff));
            assert_eq!(m.ice_controlling(), Some(0x0102_0304_0506_0708));
            assert_eq!(m.use_candidate(), use_candidate);
            assert!(m.verify_integrity(b"remotepwd"));
            assert!(m.verify_fingerprint());
            assert_eq!(local_ufrag_of_request(&out), Some("serverUfrag"));
        }
        let long = "x".repeat(MAX_TEXT_LEN + 1);
        let req = BindingRequest {
            transaction_id: [0; 12],
            username: &long,
            priority: 1,
            tie_breaker: 1,
            use_candidate: false,
        };
        assert_eq!(
            write_binding_request(&mut out, &req, &key),
            Err(StunError::ValueTooLong)
        );
    }

    #[test]
    fn local_ufrag_only_for_binding_requests() {
        assert_eq!(local_ufrag_of_request(&rfc5769_request()), Some("evtj"));
        assert_eq!(local_ufrag_of_request(&rfc5769_response_v4()), None);
        assert_eq!(local_ufrag_of_request(b"garbage"), None);
        // USERNAME without ':' gives the whole name; an empty local part gives None.
        let key = IntegrityKey::new(b"k");
        let mut out = Vec::new();
        for (name, want) in [("abc", Some("abc")), (":abc", None)] {
            let req = BindingRequest {
                transaction_id: [0; 12],
                username: name,
                priority: 1,
                tie_breaker: 1,
                use_candidate: false,
            };
            write_binding_request(&mut out, &req, &key).unwrap();
            assert_eq!(local_ufrag_of_request(&out), want);
        }
    }

    #[test]
    fn header_validation() {
        let good = rfc5769_request();
        assert_eq!(
            StunMessage::parse(&good[..19]).unwrap_err(),
            StunError::TooShort
        );
        let mut b = good.clone();
        b[0] |= 0x80;
        assert_eq!(StunMessage::parse(&b).unwrap_err(), StunError::NotStun);
        let mut b = good.clone();
        b[5] ^= 1;
        assert_eq!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::BadMagicCookie
        );
        let mut b = good.clone();
        b[3] = 0x57;
        assert_eq!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::UnalignedLength(0x57)
        );
        let mut b = good.clone();
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::LengthMismatch { .. }
        ));
        // Truncated datagram: header still claims the full length.
        assert!(matches!(
            StunMessage::parse(&good[..good.len() - 4]).unwrap_err(),
            StunError::LengthMismatch { .. }
        ));
        assert!(!looks_like_stun(&good[..19]));
        assert!(looks_like_stun(&good));
    }

    /// Builds a message from raw attributes (type, value) with correct header length.
    fn build(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        begin(&mut out, Class::Request, METHOD_BINDING, &[5; 12]);
        for (t, v) in attrs {
            put_attr(&mut out, *t, v);
        }
        let n = out.len() - HEADER_LEN;
        set_length(&mut out, n);
        out
    }

    #[test]
    fn attribute_validation() {
        // Attribute length pointing past the end.
        let mut b = build(&[(attr::PRIORITY, &[0, 0, 0, 1])]);
        b[22..24].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::TruncatedAttribute(attr::PRIORITY)
        );
        // Value fits but its padding does not.
        let mut b = build(&[(attr::SOFTWARE, &[1, 2, 3, 4])]);
        b[22..24].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::TruncatedAttribute(attr::SOFTWARE)
        );
        for (t, v) in [
            (attr::PRIORITY, &[1u8, 2, 3][..]),
            (attr::ICE_CONTROLLING, &[1, 2, 3, 4][..]),
            (attr::USE_CANDIDATE, &[1][..]),
            (attr::MESSAGE_INTEGRITY, &[0; 19][..]),
            (attr::FINGERPRINT, &[0; 8][..]),
            (attr::XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 0, 0, 0][..]),
            (attr::NOMINATION, &[0; 2][..]),
        ] {
            assert!(
                matches!(
                    StunMessage::parse(&build(&[(t, v)])).unwrap_err(),
                    StunError::BadAttributeLength { .. }
                ),
                "attribute {t:04x}"
            );
        }
        assert_eq!(
            StunMessage::parse(&build(&[(attr::USERNAME, &[0xff, 0xfe])])).unwrap_err(),
            StunError::BadUsername
        );
        assert_eq!(
            StunMessage::parse(&build(&[(
                attr::XOR_MAPPED_ADDRESS,
                &[0, 3, 0, 0, 0, 0, 0, 0]
            )]))
            .unwrap_err(),
            StunError::BadAddressFamily(3)
        );
        for bad in [&[0u8, 0, 7, 1][..], &[0, 0, 4, 100][..], &[0, 0, 4][..]] {
            assert_eq!(
                StunMessage::parse(&build(&[(attr::ERROR_CODE, bad)])).unwrap_err(),
                StunError::BadErrorCode
            );
        }
    }

    #[test]
    fn fingerprint_must_be_last_and_integrity_before_it() {
        let b = build(&[(attr::FINGERPRINT, &[0; 4]), (attr::PRIORITY, &[0; 4])]);
        assert_eq!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::AttributeAfterFingerprint
        );
        // MESSAGE-INTEGRITY after FINGERPRINT is rejected the same way.
        let b = build(&[
            (attr::FINGERPRINT, &[0; 4]),
            (attr::MESSAGE_INTEGRITY, &[0; 20]),
        ]);
        assert_eq!(
            StunMessage::parse(&b).unwrap_err(),
            StunError::AttributeAfterFingerprint
        );
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let b = build(&[
            (attr::USERNAME, b"a:b"),
            (attr::MESSAGE_INTEGRITY, &[0; 20]),
            (attr::USE_CANDIDATE, &[]),
            (attr::PRIORITY, &[0, 0, 0, 9]),
            (0x0033, &[1]),
        ]);
        let m = StunMessage::parse(&b).unwrap();
        assert!(!m.use_candidate());
        assert_eq!(m.priority(), None);
        assert_eq!(m.unknown_comprehension_required(), None);
    }

    #[test]
    fn unknown_attributes_and_duplicates() {
        let b = build(&[
            (0xC057, &[0, 1, 0, 10]), // GOOG-NETWORK-INFO: optional, ignored
            (attr::USERNAME, b"first:x"),
            (attr::USERNAME, b"second:y"),
            (0x0042, &[1, 2]),
            (0x0043, &[]),
        ]);
        let m = StunMessage::parse(&b).unwrap();
        assert_eq!(m.username(), Some("first:x"));
        assert_eq!(m.unknown_comprehension_required(), Some(0x0042));
        assert!(!m.has_integrity());
        assert!(!m.verify_integrity(b"x"));
        assert!(!m.verify_fingerprint());
    }

    #[test]
    fn nomination_parsed() {
        let m_bytes = build(&[(attr::NOMINATION, &[0, 0, 0, 3])]);
        assert_eq!(StunMessage::parse(&m_bytes).unwrap().nomination(), Some(3));
    }

    #[test]
    fn pseudo_random_garbage_never_panics() {
        // A tiny xorshift keeps this deterministic without an RNG dependency in the test.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let base = rfc5769_request();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = base.clone();
            let n = (x as usize % 6) + 1;
            for k in 0..n {
                let pos = (x >> (k * 8)) as usize % b.len();
                b[pos] ^= (x >> 40) as u8 | 1;
            }
            if i % 3 == 0 {
                b.truncate((x >> 20) as usize % b.len());
            }
            if let Ok(m) = StunMessage::parse(&b) {
                let _ = m.verify_integrity(PWD);
                let _ = m.verify_fingerprint();
            }
            let _ = local_ufrag_of_request(&b);
        }
    }
}
