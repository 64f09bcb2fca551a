//! Room access tokens: JWTs signed with HS256 and the cluster secret (sans-IO).
//!
//! A token names one room and one peer id and says what the peer may do there:
//!
//! | claim | type | meaning |
//! |---|---|---|
//! | `room` | string | the only room (`roomId`) the token opens |
//! | `peer` | string | the only peer id (`peerId`) it may join as |
//! | `exp` | seconds since 1970 | required; refused from `exp + LEEWAY` on |
//! | `nbf` | seconds since 1970 | optional; refused before `nbf - LEEWAY` |
//! | `iat` | seconds since 1970 | informative (when it was minted) |
//! | `canPublish` | bool | may produce; **false when absent** |
//! | `canSubscribe` | bool | may consume; **false when absent** |
//!
//! Grants default to false so that a token minted by another tool grants nothing it does not
//! say. `pipemesh token` writes both explicitly.
//!
//! Only HS256 is accepted (a token naming `none`, `RS256` or another algorithm is refused as
//! malformed before any key is used). Claims are deserialised into typed fields: an `exp` or
//! `nbf` of the wrong JSON type is malformed, never "absent". The verifier takes `now`; it
//! never reads the clock.
//!
//! HMAC runs on `ring` (already used by the TLS stack) through a small `jsonwebtoken` crypto
//! provider that knows HS256 only.

pub mod cli;

use std::fmt;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Clock skew tolerated between the minting host and this node, in seconds, on `exp` and
/// `nbf`. Small enough that an expired token is useless within half a minute.
pub const LEEWAY_SECS: u64 = 30;

/// Shortest accepted secret, in bytes (HS256's key is 256 bits; shorter keys are guessable).
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest token read from a URL. A real one is ~250 bytes; anything far larger is refused
/// before base64 or JSON decoding.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The cluster's token secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSecret(Vec<u8>);

impl AuthSecret {
    /// Accepts a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(AuthError::WeakSecret(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// Reads a secret from a file's text: surrounding whitespace (the trailing newline of
    /// `openssl rand -base64 48 > FILE`) is not part of it.
    pub fn from_file_text(text: &str) -> Result<Self, AuthError> {
        Self::new(text.trim().as_bytes().to_vec())
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthSecret({} bytes)", self.0.len())
    }
}

/// What a peer may do in its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grants {
    /// May create producing transports and produce.
    pub can_publish: bool,
    /// May create consuming transports and be offered consumers.
    pub can_subscribe: bool,
}

impl Grants {
    /// Everything: anonymous loopback peers (no secret configured) and tests.
    pub const ALL: Grants = Grants {
        can_publish: true,
        can_subscribe: true,
    };
}

/// The claims of a room token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Room id.
    pub room: String,
    /// Peer id.
    pub peer: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// May publish.
    #[serde(default)]
    pub can_publish: bool,
    /// May subscribe.
    #[serde(default)]
    pub can_subscribe: bool,
}

/// Why a token (or a secret) is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a JWT we can read: wrong shape, bad base64 or JSON, an algorithm other than HS256,
    /// a missing or mistyped claim, or longer than [`MAX_TOKEN_BYTES`].
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not match the cluster secret.
    #[error("token signature does not match")]
    BadSignature,
    /// `exp` (plus the leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus the leeway) is still ahead.
    #[error("token not valid yet")]
    NotYetValid,
    /// The token is for another room.
    #[error("token is for another room")]
    WrongRoom,
    /// The token is for another peer id.
    #[error("token is for another peer")]
    WrongPeer,
    /// A secret shorter than [`MIN_SECRET_BYTES`] (its length is given).
    #[error("secret of {0} bytes is too short: at least {MIN_SECRET_BYTES} bytes are needed")]
    WeakSecret(usize),
    /// Signing failed (a bug in the crypto provider; never on input).
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Signs `claims` with the secret (HS256).
pub fn mint(secret: &AuthSecret, claims: &Claims) -> Result<String, AuthError> {
    install_provider();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(&secret.0),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

/// Checks a token for joining `room` as `peer` at `now` (seconds since the Unix epoch) and
/// returns its grants. The signature is checked before any claim is looked at.
pub fn verify(
    secret: &AuthSecret,
    token: &str,
    room: &str,
    peer: &str,
    now: u64,
) -> Result<Grants, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed(format!(
            "longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    install_provider();
    let mut validation = Validation::new(Algorithm::HS256);
    // Time and identity are checked below against `now` and typed claims.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&secret.0), &validation)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    AuthError::Malformed("algorithm is not HS256".into())
                }
                other => AuthError::Malformed(describe(&other)),
            })?;
    let c = data.claims;
    if now >= c.exp.saturating_add(LEEWAY_SECS) {
        return Err(AuthError::Expired);
    }
    if c.nbf
        .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
    {
        return Err(AuthError::NotYetValid);
    }
    if c.room != room {
        return Err(AuthError::WrongRoom);
    }
    if c.peer != peer {
        return Err(AuthError::WrongPeer);
    }
    Ok(Grants {
        can_publish: c.can_publish,
        can_subscribe: c.can_subscribe,
    })
}

/// A short reason for a decoding failure (the token itself is never echoed).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "not three base64url parts".into(),
        ErrorKind::Base64(_) => "invalid base64url".into(),
        ErrorKind::Utf8(_) => "invalid UTF-8".into(),
        ErrorKind::Json(e) => format!("invalid JSON: {e}"),
        other => format!("{other:?}"),
    }
}

/// HS256 on `ring`; every other algorithm is refused.
static RING_HS256: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key| match alg {
        Algorithm::HS256 => Ok(Box::new(Hs256(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            key.as_bytes(),
        )))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    },
    verifier_factory: |alg, key| match alg {
        Algorithm::HS256 => Ok(Box::new(Hs256(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            key.try_get_as_bytes()?,
        )))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    },
    // JWKs are never used here.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`RING_HS256`] the process's `jsonwebtoken` provider. Another provider installed
/// first by someone else in the process would also do HS256; either way signing works.
fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = RING_HS256.install_default();
    });
}

struct Hs256(ring::hmac::Key);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(ring::hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // Constant-time comparison inside ring.
        ring::hmac::verify(&self.0, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn secret() -> AuthSecret {
        AuthSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            room: "r1".into(),
            peer: "alice".into(),
            exp: NOW + 3600,
            nbf: None,
            iat: Some(NOW),
            can_publish: true,
            can_subscribe: false,
        }
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    /// A token with any header and payload JSON, correctly signed with HS256.
    fn signed_raw(header: &str, payload: &str) -> String {
        let msg = format!("{}.{}", b64(header), b64(payload));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret().0);
        let sig = ring::hmac::sign(&key, msg.as_bytes());
        use base64::Engine;
        format!(
            "{msg}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
        )
    }

    #[test]
    fn a_minted_token_verifies_with_its_grants() {
        let t = mint(&secret(), &claims()).unwrap();
        assert_eq!(
            verify(&secret(), &t, "r1", "alice", NOW),
            Ok(Grants {
                can_publish: true,
                can_subscribe: false
            })
        );
    }

    #[test]
    fn grants_default_to_false() {
        let t = signed_raw(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(r#"{{"room":"r1","peer":"alice","exp":{}}}"#, NOW + 60),
        );
        assert_eq!(
            verify(&secret(), &t, "r1", "alice", NOW),
            Ok(Grants {
                can_publish: false,
                can_subscribe: false
            })
        );
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let other = AuthSecret::new(b"another-secret-another-secret-xx".to_vec()).unwrap();
        let t = mint(&other, &claims()).unwrap();
        assert_eq!(
            verify(&secret(), &t, "r1", "alice", NOW),
            Err(AuthError::BadSignature)
        );
        // A tampered payload with the original signature.
        let good = mint(&secret(), &claims()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let forged_payload = b64(&format!(
            r#"{{"room":"r1","peer":"alice","exp":{},"canPublish":true,"canSubscribe":true}}"#,
            NOW + 3600
        ));
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            verify(&secret(), &forged, "r1", "alice", NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expiry_has_a_leeway() {
        let t = mint(
            &secret(),
            &Claims {
                exp: NOW,
                ..claims()
            },
        )
        .unwrap();
        assert!(verify(&secret(), &t, "r1", "alice", NOW + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verify(&secret(), &t, "r1", "alice", NOW + LEEWAY_SECS),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn not_before_has_a_leeway() {
        let t = mint(
            &secret(),
            &Claims {
                nbf: Some(NOW + 100),
                ..claims()
            },
        )
        .unwrap();
        assert_eq!(
            verify(&secret(), &t, "r1", "alice", NOW),
            Err(AuthError::NotYetValid)
        );
        assert!(verify(&secret(), &t, "r1", "alice", NOW + 100 - LEEWAY_SECS).is_ok());
    }

    #[test]
    fn room_and_peer_must_match() {
        let t = mint(&secret(), &claims()).unwrap();
        assert_eq!(
            verify(&secret(), &t, "r2", "alice", NOW),
            Err(AuthError::WrongRoom)
        );
        assert_eq!(
            verify(&secret(), &t, "r1", "bob", NOW),
            Err(AuthError::WrongPeer)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let s = secret();
        for t in ["", "abc", "a.b", "a.b.c", "...", "eyJ.eyJ.x"] {
            assert!(
                matches!(
                    verify(&s, t, "r1", "alice", NOW),
                    Err(AuthError::Malformed(_))
                ),
                "{t:?}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify(&s, &long, "r1", "alice", NOW),
            Err(AuthError::Malformed(_))
        ));
        // Correctly signed, but claims of the wrong type or missing: malformed, never "absent".
        let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
        for payload in [
            r#"{"room":"r1","peer":"alice"}"#,
            r#"{"room":"r1","peer":"alice","exp":"never"}"#,
            &format!(
                r#"{{"room":"r1","peer":"alice","exp":{},"nbf":"later"}}"#,
                NOW + 60
            ),
            &format!(r#"{{"room":1,"peer":"alice","exp":{}}}"#, NOW + 60),
            &format!(
                r#"{{"room":"r1","peer":"alice","exp":{},"canPublish":"yes"}}"#,
                NOW + 60
            ),
            "[]",
        ] {
            assert!(
                matches!(
                    verify(&s, &signed_raw(hs, payload), "r1", "alice", NOW),
                    Err(AuthError::Malformed(_))
                ),
                "{payload}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused() {
        let payload = format!(r#"{{"room":"r1","peer":"alice","exp":{}}}"#, NOW + 60);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&payload));
        assert!(matches!(
            verify(&secret(), &none, "r1", "alice", NOW),
            Err(AuthError::Malformed(_))
        ));
        for alg in ["HS512", "RS256", "ES256"] {
            let t = signed_raw(&format!(r#"{{"alg":"{alg}"}}"#), &payload);
            assert_eq!(
                verify(&secret(), &t, "r1", "alice", NOW),
                Err(AuthError::Malformed("algorithm is not HS256".into())),
                "{alg}"
            );
        }
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(
            AuthSecret::new(b"short".to_vec()),
            Err(AuthError::WeakSecret(5))
        );
        let s = AuthSecret::from_file_text("  0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(s, secret());
        assert_eq!(format!("{s:?}"), "AuthSecret(32 bytes)");
    }
}
