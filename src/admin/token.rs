//! The admin API's bearer token: `Authorization: Bearer <token>` on every route but the
//! orchestrator probes, when the node has one (`--admin-token-file`, or the token itself in
//! `PIPEMESH_ADMIN_TOKEN`).
//!
//! The presented token is compared in constant time: both sides go through HMAC-SHA256 under
//! a key drawn at start, and the tags are compared by `ring` (constant time, and of a fixed
//! length whatever the length of what was presented).

use std::fmt;
use std::sync::Arc;

use ring::hmac;
use ring::rand::SystemRandom;

/// Why a token was refused when loading it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Empty (or whitespace only).
    #[error("the admin token is empty")]
    Empty,
    /// Not printable ASCII (it must fit an HTTP header as is).
    #[error("the admin token must be printable ASCII without spaces")]
    NotPrintable,
    /// No randomness for the comparison key.
    #[error("no system randomness for the admin token check")]
    Random,
}

/// The admin API's bearer token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct AdminToken {
    key: Arc<hmac::Key>,
    tag: hmac::Tag,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token `text`, surrounding whitespace ignored; refused when empty or not a single
    /// word of printable ASCII.
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| TokenError::Random)?;
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(Self {
            key: Arc::new(key),
            tag,
        })
    }

    /// The token in a token file: its first line (trimmed).
    pub fn from_file_text(text: &str) -> Result<Self, TokenError> {
        Self::new(text.lines().next().unwrap_or(""))
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }

    /// Whether an `Authorization` header value carries the token as `Bearer <token>`.
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> bool {
        authorization
            .and_then(bearer)
            .is_some_and(|t| self.matches(t))
    }
}

/// A token as given (`PIPEMESH_ADMIN_TOKEN`), not yet checked: [`AdminToken::new`] checks it
/// when the node starts, so that a refused value is never echoed by the argument parser. Its
/// `Debug` does not show it.
#[derive(Clone)]
pub struct AdminTokenText(Arc<str>);

impl AdminTokenText {
    /// The text as given.
    pub fn new(text: &str) -> Self {
        Self(Arc::from(text))
    }

    /// The checked token.
    pub fn token(&self) -> Result<AdminToken, TokenError> {
        AdminToken::new(&self.0)
    }
}

impl fmt::Debug for AdminTokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminTokenText(<redacted>)")
    }
}

/// Clones are equal; texts given separately are not (never compared by value).
impl PartialEq for AdminTokenText {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The credentials of an `Authorization: Bearer <token>` value (scheme case-insensitive, as
/// RFC 9110 says; one or more spaces after it); `None` for another scheme or a malformed
/// value.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ').trim_end();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_itself_only() {
        let t = AdminToken::new("s3cret-Token_1").unwrap();
        assert!(t.matches("s3cret-Token_1"));
        for other in [
            "",
            "s3cret-Token_",
            "s3cret-Token_12",
            "S3CRET-TOKEN_1",
            " s3cret-Token_1",
        ] {
            assert!(!t.matches(other), "{other:?}");
        }
        // The same text loaded twice (different keys) matches the same things.
        let again = AdminToken::new("  s3cret-Token_1\n").unwrap();
        assert!(again.matches("s3cret-Token_1"));
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn empty_or_unprintable_tokens_are_refused() {
        assert_eq!(AdminToken::new("").unwrap_err(), TokenError::Empty);
        assert_eq!(AdminToken::new(" \t\n").unwrap_err(), TokenError::Empty);
        assert_eq!(
            AdminToken::new("two words").unwrap_err(),
            TokenError::NotPrintable
        );
        assert_eq!(
            AdminToken::new("caf\u{e9}").unwrap_err(),
            TokenError::NotPrintable
        );
        assert_eq!(
            AdminToken::from_file_text("\nsecond-line").unwrap_err(),
            TokenError::Empty
        );
    }

    #[test]
    fn a_token_file_gives_its_first_line_trimmed() {
        let t = AdminToken::from_file_text("  abc123  \r\nignored\n").unwrap();
        assert!(t.matches("abc123"));
        assert!(!t.matches("ignored"));
    }

    #[test]
    fn bearer_credentials_are_read_from_the_header_value() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer abc"), Some("abc"));
        assert_eq!(bearer(b"BEARER   abc "), Some("abc"));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            b"Bearerabc",
            b"Token abc",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(bearer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn authorization_needs_the_bearer_scheme_and_the_exact_token() {
        let t = AdminToken::new("tok").unwrap();
        assert!(t.authorizes(Some(b"Bearer tok")));
        assert!(t.authorizes(Some(b"bearer tok")));
        assert!(!t.authorizes(None));
        assert!(!t.authorizes(Some(b"Bearer tok2")));
        assert!(!t.authorizes(Some(b"Bearer to")));
        assert!(!t.authorizes(Some(b"Basic tok")));
        assert!(!t.authorizes(Some(b"tok")));
    }
}
