//! Who may open a signaling session (sans-IO): the decision taken on the WebSocket upgrade
//! request, before anything is allocated.
//!
//! With a cluster secret every client needs a room token for the room and peer id of its URL
//! ([`crate::auth`]). Without one, the node is a development node: anonymous clients are
//! admitted with every grant, but only from loopback addresses, so that a node started
//! without `--auth-secret-file` on a public address does not serve strangers.

use std::net::IpAddr;

use crate::auth::{self, AuthError, AuthSecret, Grants};
use crate::ids::PeerId;
use crate::signaling::limits::PeerLimits;

/// How the signaling server authenticates clients.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// Tokens signed with this secret are required.
    Tokens(AuthSecret),
    /// No secret: anonymous clients from loopback addresses only.
    LoopbackOnly,
}

/// A peer admitted to a room: its id, what it may do and its limits. Carried to the worker by
/// the session open command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Peer id from the URL (and the token).
    pub peer: PeerId,
    /// What it may do.
    pub grants: Grants,
    /// How much it may allocate.
    pub limits: PeerLimits,
}

impl From<PeerId> for Admission {
    /// Every grant and the default limits (tests and benchmarks that drive the worker).
    fn from(peer: PeerId) -> Self {
        Self {
            peer,
            grants: Grants::ALL,
            limits: PeerLimits::default(),
        }
    }
}

/// Why an upgrade request is refused: the HTTP status, a short metric label and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 401 (no usable token) or 403 (a token or address that may not join this way).
    pub status: u16,
    /// Label for logs and counters (`missing_token`, `expired`, ...).
    pub reason: &'static str,
    /// What the client is told.
    pub message: String,
}

/// Decides whether a client at `remote` may join `room` as `peer` with `token` at `now`
/// (seconds since the Unix epoch).
pub fn admit(
    mode: &AuthMode,
    remote: IpAddr,
    room: &str,
    peer: &str,
    token: Option<&str>,
    now: u64,
) -> Result<Grants, Refusal> {
    let refuse = |status, reason, message: String| Refusal {
        status,
        reason,
        message,
    };
    match mode {
        AuthMode::LoopbackOnly => {
            if is_loopback(remote) {
                Ok(Grants::ALL)
            } else {
                Err(refuse(
                    403,
                    "anonymous_remote",
                    "this node runs without --auth-secret-file: only loopback clients may join"
                        .into(),
                ))
            }
        }
        AuthMode::Tokens(secret) => {
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return Err(refuse(
                    401,
                    "missing_token",
                    "a room token is required (token query parameter)".into(),
                ));
            };
            auth::verify(secret, token, room, peer, now).map_err(|e| {
                let (status, reason) = match &e {
                    AuthError::Malformed(_) => (401, "malformed_token"),
                    AuthError::BadSignature => (401, "bad_signature"),
                    AuthError::Expired => (401, "expired"),
                    AuthError::NotYetValid => (401, "not_yet_valid"),
                    AuthError::WrongRoom => (403, "wrong_room"),
                    AuthError::WrongPeer => (403, "wrong_peer"),
                    _ => (401, "invalid_token"),
                };
                refuse(status, reason, e.to_string())
            })
        }
    }
}

/// Loopback, including IPv4 loopback mapped into IPv6 (`::ffff:127.0.0.1`, seen on dual-stack
/// listeners).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;

    const NOW: u64 = 1_700_000_000;

    fn secret() -> AuthSecret {
        AuthSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn token(room: &str, peer: &str, exp: u64, nbf: Option<u64>) -> String {
        auth::mint(
            &secret(),
            &Claims {
                room: room.into(),
                peer: peer.into(),
                exp,
                nbf,
                iat: Some(NOW),
                can_publish: false,
                can_subscribe: true,
            },
        )
        .unwrap()
    }

    #[test]
    fn without_a_secret_only_loopback_clients_are_admitted() {
        let m = AuthMode::LoopbackOnly;
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                admit(&m, ip.parse().unwrap(), "r", "p", None, NOW),
                Ok(Grants::ALL),
                "{ip}"
            );
        }
        for ip in [
            "10.0.0.1",
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "2001:db8::1",
            "0.0.0.0",
        ] {
            let r = admit(&m, ip.parse().unwrap(), "r", "p", None, NOW).unwrap_err();
            assert_eq!((r.status, r.reason), (403, "anonymous_remote"), "{ip}");
            assert!(r.message.contains("--auth-secret"));
        }
    }

    #[test]
    fn with_a_secret_every_client_needs_a_valid_token() {
        let m = AuthMode::Tokens(secret());
        let lo = "127.0.0.1".parse().unwrap();
        let remote = "192.0.2.7".parse().unwrap();
        let good = token("r", "p", NOW + 60, None);
        let grants = Grants {
            can_publish: false,
            can_subscribe: true,
        };
        assert_eq!(admit(&m, remote, "r", "p", Some(&good), NOW), Ok(grants));
        let reason = |token: Option<&str>, room, peer| {
            let r = admit(&m, lo, room, peer, token, NOW).unwrap_err();
            (r.status, r.reason)
        };
        assert_eq!(reason(None, "r", "p"), (401, "missing_token"));
        assert_eq!(reason(Some(""), "r", "p"), (401, "missing_token"));
        assert_eq!(reason(Some("x.y.z"), "r", "p"), (401, "malformed_token"));
        // The first signature character carries 6 whole bits: changing it changes the MAC.
        let dot = good.rfind('.').unwrap();
        let flipped = if good[dot + 1..].starts_with('A') {
            "B"
        } else {
            "A"
        };
        let forged = format!("{}{flipped}{}", &good[..=dot], &good[dot + 2..]);
        assert_eq!(reason(Some(&forged), "r", "p"), (401, "bad_signature"));
        let old = token("r", "p", NOW - 3600, None);
        assert_eq!(reason(Some(&old), "r", "p"), (401, "expired"));
        let early = token("r", "p", NOW + 7200, Some(NOW + 3600));
        assert_eq!(reason(Some(&early), "r", "p"), (401, "not_yet_valid"));
        assert_eq!(reason(Some(&good), "other", "p"), (403, "wrong_room"));
        assert_eq!(reason(Some(&good), "r", "q"), (403, "wrong_peer"));
    }
}
