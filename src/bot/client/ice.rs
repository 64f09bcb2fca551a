//! The controlling side of ICE towards one ICE-lite node ([`IceController`], sans-IO): the
//! node's credentials in, nominating Binding requests and consent-freshness checks out.

use std::collections::VecDeque;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::edge::stun::{
    write_binding_request, BindingRequest, Class, IntegrityKey, StunMessage, TransactionId,
    METHOD_BINDING,
};
use crate::timing::{BOT_ICE_CHECK_INTERVAL, BOT_ICE_CONSENT_INTERVAL};

/// Outstanding connectivity checks remembered (older responses are ignored).
pub const ICE_MAX_PENDING: usize = 16;
/// PRIORITY of our checks (a peer-reflexive host candidate, RFC 8445 §5.1.2).
const CHECK_PRIORITY: u32 = 0x6E00_01FF;

/// `iceParameters` of a WebRtcTransport.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    /// The node's ufrag.
    pub username_fragment: String,
    /// The node's password.
    pub password: String,
    /// Whether the node is ICE-lite (pipemesh always is).
    #[serde(default)]
    pub ice_lite: bool,
}

/// Connectivity state of an [`IceController`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceState {
    /// No check has succeeded with the current credentials.
    Checking,
    /// A nominating check succeeded; consent is being refreshed.
    Connected,
}

/// What an incoming STUN message did to the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceInput {
    /// A success response to a pending check; `true` if it moved us to [`IceState::Connected`].
    Success(bool),
    /// An error response to a pending check, with its code.
    Error(u16),
    /// Not a response to one of our pending checks, or it failed integrity: ignored.
    Ignored,
}

/// The controlling side of ICE towards one ICE-lite candidate. Sends a nominating Binding
/// request every [`BOT_ICE_CHECK_INTERVAL`] until one succeeds, then one every
/// [`BOT_ICE_CONSENT_INTERVAL`] as consent freshness.
///
/// Drive rule: call [`Self::poll_transmit`] when [`Self::poll_timeout`] is due, and feed every
/// STUN message from the node to [`Self::handle_stun`].
#[derive(Debug)]
pub struct IceController {
    local_ufrag: String,
    username: String,
    key: IntegrityKey,
    tie_breaker: u64,
    rng: StdRng,
    pending: VecDeque<TransactionId>,
    state: IceState,
    next_check: Instant,
    last_success: Option<Instant>,
    checks_sent: u64,
}

impl IceController {
    /// A controller with a random local ufrag drawn from `seed`, checking from `now`.
    pub fn new(now: Instant, remote: &IceParameters, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let local_ufrag: String = (0..8)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let tie_breaker = rng.random();
        Self {
            username: format!("{}:{local_ufrag}", remote.username_fragment),
            key: IntegrityKey::new(remote.password.as_bytes()),
            local_ufrag,
            tie_breaker,
            rng,
            pending: VecDeque::new(),
            state: IceState::Checking,
            next_check: now,
            last_success: None,
            checks_sent: 0,
        }
    }

    /// Our ufrag.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// Current state.
    pub fn state(&self) -> IceState {
        self.state
    }

    /// When the last check succeeded.
    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// Checks sent so far.
    pub fn checks_sent(&self) -> u64 {
        self.checks_sent
    }

    /// Switches to new remote credentials (after `restartIce`): checks restart at once.
    pub fn restart(&mut self, now: Instant, remote: &IceParameters) {
        self.username = format!("{}:{}", remote.username_fragment, self.local_ufrag);
        self.key = IntegrityKey::new(remote.password.as_bytes());
        self.pending.clear();
        self.state = IceState::Checking;
        self.next_check = now;
    }

    /// When the next check is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_check
    }

    /// Writes the next check into `out` if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if now < self.next_check {
            return false;
        }
        let transaction_id: TransactionId = self.rng.random();
        let req = BindingRequest {
            transaction_id,
            username: &self.username,
            priority: CHECK_PRIORITY,
            tie_breaker: self.tie_breaker,
            use_candidate: true,
        };
        if write_binding_request(out, &req, &self.key).is_err() {
            // Only an over-long username fails, which the node's ufrag cannot make: stop trying.
            self.next_check = now + BOT_ICE_CONSENT_INTERVAL;
            return false;
        }
        if self.pending.len() >= ICE_MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(transaction_id);
        self.checks_sent += 1;
        self.next_check = now
            + match self.state {
                IceState::Checking => BOT_ICE_CHECK_INTERVAL,
                IceState::Connected => BOT_ICE_CONSENT_INTERVAL,
            };
        true
    }

    /// Handles a STUN message from the node.
    pub fn handle_stun(&mut self, now: Instant, msg: &StunMessage<'_>) -> IceInput {
        if msg.method() != METHOD_BINDING {
            return IceInput::Ignored;
        }
        let Some(pos) = self.pending.iter().position(|t| t == msg.transaction_id()) else {
            return IceInput::Ignored;
        };
        match msg.class() {
            Class::SuccessResponse => {
                if !msg.verify_integrity_with(&self.key) {
                    return IceInput::Ignored;
                }
                self.pending.remove(pos);
                self.last_success = Some(now);
                let became = self.state == IceState::Checking;
                if became {
                    self.state = IceState::Connected;
                    self.next_check = now + BOT_ICE_CONSENT_INTERVAL;
                }
                IceInput::Success(became)
            }
            Class::ErrorResponse => {
                self.pending.remove(pos);
                IceInput::Error(msg.error_code().map_or(0, |e| e.code))
            }
            Class::Request | Class::Indication => IceInput::Ignored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::stun::write_binding_success;
    use std::time::Duration;

    fn params(ufrag: &str, pwd: &str) -> IceParameters {
        IceParameters {
            username_fragment: ufrag.into(),
            password: pwd.into(),
            ice_lite: true,
        }
    }

    /// Answers a check as the node would, with `pwd`.
    fn answer(req: &[u8], pwd: &str) -> Vec<u8> {
        let m = StunMessage::parse(req).unwrap();
        let mut out = Vec::new();
        write_binding_success(
            &mut out,
            m.transaction_id(),
            "127.0.0.1:5000".parse().unwrap(),
            &IntegrityKey::new(pwd.as_bytes()),
        );
        out
    }

    #[test]
    fn ice_checks_until_success_then_refreshes_consent() {
        let t0 = Instant::now();
        let mut ice = IceController::new(t0, &params("srv", "serverpassword1234567890"), 1);
        assert_eq!(ice.state(), IceState::Checking);
        let mut out = Vec::new();
        assert!(ice.poll_transmit(t0, &mut out));
        let m = StunMessage::parse(&out).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(
            m.username(),
            Some(format!("srv:{}", ice.local_ufrag()).as_str())
        );
        assert!(m.use_candidate());
        assert!(m.ice_controlling().is_some());
        assert!(m.verify_integrity(b"serverpassword1234567890"));
        assert!(m.verify_fingerprint());
        // Not due again before the check interval.
        let mut again = Vec::new();
        assert!(!ice.poll_transmit(t0 + BOT_ICE_CHECK_INTERVAL / 2, &mut again));
        assert_eq!(ice.poll_timeout(), t0 + BOT_ICE_CHECK_INTERVAL);

        // A response signed with the wrong password is ignored.
        let forged = answer(&out, "wrongwrongwrongwrongwrong");
        let r = ice.handle_stun(t0, &StunMessage::parse(&forged).unwrap());
        assert_eq!(r, IceInput::Ignored);
        assert_eq!(ice.state(), IceState::Checking);

        let t1 = t0 + Duration::from_millis(10);
        let good = answer(&out, "serverpassword1234567890");
        assert_eq!(
            ice.handle_stun(t1, &StunMessage::parse(&good).unwrap()),
            IceInput::Success(true)
        );
        assert_eq!(ice.state(), IceState::Connected);
        assert_eq!(ice.last_success(), Some(t1));
        // A duplicate of the same response is no longer pending.
        assert_eq!(
            ice.handle_stun(t1, &StunMessage::parse(&good).unwrap()),
            IceInput::Ignored
        );
        assert_eq!(ice.poll_timeout(), t1 + BOT_ICE_CONSENT_INTERVAL);
        assert!(ice.poll_transmit(t1 + BOT_ICE_CONSENT_INTERVAL, &mut out));
        let ok = answer(&out, "serverpassword1234567890");
        assert_eq!(
            ice.handle_stun(t1, &StunMessage::parse(&ok).unwrap()),
            IceInput::Success(false)
        );
    }

    #[test]
    fn ice_restart_switches_credentials_and_ignores_old_answers() {
        let t0 = Instant::now();
        let mut ice = IceController::new(t0, &params("old", "oldpassword0123456789012"), 2);
        let mut first = Vec::new();
        assert!(ice.poll_transmit(t0, &mut first));
        ice.restart(t0, &params("new", "newpassword0123456789012"));
        assert_eq!(ice.state(), IceState::Checking);
        // The answer to the pre-restart check no longer counts.
        let stale = answer(&first, "oldpassword0123456789012");
        assert_eq!(
            ice.handle_stun(t0, &StunMessage::parse(&stale).unwrap()),
            IceInput::Ignored
        );
        let mut out = Vec::new();
        assert!(ice.poll_transmit(t0, &mut out));
        let m = StunMessage::parse(&out).unwrap();
        assert!(m.username().unwrap().starts_with("new:"));
        assert!(m.verify_integrity(b"newpassword0123456789012"));
        let ok = answer(&out, "newpassword0123456789012");
        assert_eq!(
            ice.handle_stun(t0, &StunMessage::parse(&ok).unwrap()),
            IceInput::Success(true)
        );
    }

    #[test]
    fn ice_bounds_pending_checks() {
        let mut t = Instant::now();
        let mut ice = IceController::new(t, &params("s", "p0123456789012345678901"), 3);
        let mut first = Vec::new();
        assert!(ice.poll_transmit(t, &mut first));
        for _ in 0..ICE_MAX_PENDING {
            t += BOT_ICE_CHECK_INTERVAL;
            let mut o = Vec::new();
            assert!(ice.poll_transmit(t, &mut o));
        }
        assert_eq!(ice.checks_sent(), ICE_MAX_PENDING as u64 + 1);
        // The oldest check was forgotten.
        let late = answer(&first, "p0123456789012345678901");
        assert_eq!(
            ice.handle_stun(t, &StunMessage::parse(&late).unwrap()),
            IceInput::Ignored
        );
        // A request from the node is not a response.
        assert_eq!(
            ice.handle_stun(t, &StunMessage::parse(&first).unwrap()),
            IceInput::Ignored
        );
    }
}
